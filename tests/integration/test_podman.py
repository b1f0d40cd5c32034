"""The image of containers/Dockerfile, built on a local Debian 12 base, runs the demo workflow in
Podman.

Real Podman, real image, real Snakemake inside it, no network in the container. What cannot run
here: GPU binding (no GPU on these machines; the image's CUDA build of torch runs on the CPU), and
Apptainer (not installable), whose definition is checked against the Dockerfile in
tests/test_containers.py instead.
"""

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest
import yaml

from helpers import REPO, SERVER_IDLE_SECONDS, make_video, tiny_config
from integration.services import project_copy

pytestmark = pytest.mark.integration

CONTAINER_HOSTNAME = "dreamflow-podman-test"
DREAMER = re.compile(
    r"^dreamflow: dreamed (?:by the model server|in-process): pid \d+, python (\S+), host (\S+)$",
    re.MULTILINE,
)


def image_virtualenv(podman, image):
    env = json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Env}}", image, check=True).stdout
    )
    return dict(item.split("=", 1) for item in env)["VIRTUAL_ENV"]


@pytest.fixture(scope="module")
def demo_run(podman, dreamflow_image, tmp_path_factory):
    """The shipped demo (config.yaml: 30 frames, 320x180) run by `snakemake --cores all` in the
    image."""
    project = project_copy(tmp_path_factory.mktemp("project"))
    result = podman(
        "run",
        "--rm",
        "--network=none",
        f"--hostname={CONTAINER_HOSTNAME}",
        f"--volume={project}:/work",
        dreamflow_image,
        "snakemake",
        "--cores",
        "all",
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return project


def test_demo_video_and_frames_are_made_in_the_container(demo_run):
    frames = sorted((demo_run / "work/demo/frames").glob("*.png"))
    dreamed = sorted((demo_run / "work/demo/dreamed").glob("*.png"))
    assert len(frames) == 30
    assert [path.name for path in dreamed] == [path.name for path in frames]
    video = demo_run / "results/demo/demo.mp4"
    counted = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(video),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert counted == "30"


def test_every_frame_was_dreamed_by_the_images_python_in_the_container(
    demo_run, podman, dreamflow_image
):
    venv = image_virtualenv(podman, dreamflow_image)
    logs = sorted((demo_run / "work/demo/logs/dream").glob("*.log"))
    assert len(logs) == 30
    for log in logs:
        dreamers = DREAMER.findall(log.read_text())
        assert len(dreamers) == 1, (
            f"{log.name}: no single 'dreamflow: dreamed ...' line:\n{log.read_text()}"
        )
        python, host = dreamers[0]
        assert python.startswith(f"{venv}/bin/python"), f"{log.name}: dreamed by {python}"
        assert python != sys.executable
        assert host == CONTAINER_HOSTNAME != socket.gethostname()


def test_a_folder_with_only_a_config_runs_the_images_workflow(podman, dreamflow_image, tmp_path):
    """No Snakefile in /work: the entry point runs the image's copy of the workflow (a dry run
    here)."""
    shutil.copy(REPO / "workflow/resources/demo/demo.mp4", tmp_path / "clip.mp4")
    (tmp_path / "config.yaml").write_text("inputs:\n  clip:\n    path: clip.mp4\n")
    result = podman(
        "run",
        "--rm",
        "--network=none",
        f"--volume={tmp_path}:/work",
        dreamflow_image,
        "snakemake",
        "--dry-run",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/opt/dreamflow/src/profiles/default" in result.stdout + result.stderr
    assert re.search(r"^extract_frames\s+1$", result.stdout, re.MULTILINE), result.stdout


def test_a_missing_input_fails_with_a_message_naming_it(podman, dreamflow_image, tmp_path):
    (tmp_path / "config.yaml").write_text("inputs:\n  clip:\n    path: videos/missing.mp4\n")
    # no command: the image's default, snakemake --cores all
    result = podman(
        "run", "--rm", "--network=none", f"--volume={tmp_path}:/work", dreamflow_image, timeout=300
    )
    assert result.returncode != 0
    assert (
        "config key inputs.clip.path: input not found: videos/missing.mp4"
        in result.stderr.splitlines()
    )
    assert not (tmp_path / "work").exists()


USER = "1234:1234"
# Run in the container as the command the entry point starts: it waits for snakemake by its pid
# alone (so, as PID 1, it would reap nothing else), then for every other process to end, as the
# model server does DREAMFLOW_SERVER_IDLE seconds after the last job, and lists what is left.
AS_USER = r"""
import json, os, subprocess, sys, time
run = subprocess.run(["dreamflow-entrypoint", "snakemake", "--cores", "2"])

def others():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        if int(pid) not in (1, os.getpid()):
            name, state = text[text.index("(") + 1 : text.rindex(")")], text.split(") ")[1][0]
            found.append([int(pid), name, state])
    return found

deadline = time.monotonic() + 60
while any(state != "Z" for *_, state in others()) and time.monotonic() < deadline:
    time.sleep(0.2)
with open("/proc/1/comm") as comm:
    init = comm.read().strip()
print(json.dumps({"init": init, "home": os.environ["HOME"], "left": others()}))
sys.exit(run.returncode)
"""


@pytest.fixture(scope="module")
def user_run(podman, dreamflow_image, tmp_path_factory):
    """A tiny project run by a uid the image has no account for, as `docker run --user` does:
    --passwd=false keeps Podman from adding one, which leaves HOME=/ as Docker does."""
    project = tmp_path_factory.mktemp("user-project")
    make_video(project / "clip.mp4")
    (project / "config.yaml").write_text(yaml.safe_dump(tiny_config("clip.mp4")))
    uid, gid = map(int, USER.split(":"))
    for path in [project, *project.rglob("*")]:
        os.chown(path, uid, gid)
    result = podman(
        "run",
        "--rm",
        "--network=none",
        "--passwd=false",
        f"--user={USER}",
        f"--env=DREAMFLOW_SERVER_IDLE={SERVER_IDLE_SECONDS}",
        f"--volume={project}:/work",
        dreamflow_image,
        "python3",
        "-c",
        AS_USER,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return project, json.loads(result.stdout.splitlines()[-1])


def test_a_user_without_an_account_in_the_image_runs_the_workflow_and_owns_its_outputs(user_run):
    project, seen = user_run
    assert seen["home"] == "/tmp/dreamflow-home-1234"
    assert list((project / "results/tiny").glob("*.mp4"))
    made = [path for folder in ("results", "work") for path in (project / folder).rglob("*")]
    assert len(made) > 10
    owners = {(path.lstat().st_uid, path.lstat().st_gid) for path in made}
    assert owners == {(1234, 1234)}, f"results/ and work/ owned by {owners}"


def test_the_init_reaps_the_model_servers_that_jobs_leave_behind(user_run):
    project, seen = user_run
    logs = (project / "work/tiny/logs/dream").glob("*.log")
    assert any("dreamed by the model server" in log.read_text() for log in logs)
    assert seen["left"] == [], f"processes left: {seen['left']} ([pid, name, state]; Z: zombie)"
    assert seen["init"] == "tini"


LOCAL_LABEL = "localindex"


class TorchIndex(http.server.ThreadingHTTPServer):
    """A wheel index like PyTorch's: torch and torchvision served from `folder`, every other
    project redirected to PyPI. `requests` lists the paths asked for."""

    def __init__(self, folder):
        self.folder = folder
        self.requests = []
        super().__init__(("127.0.0.1", 0), TorchIndexHandler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/simple"


class TorchIndexHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = urllib.parse.unquote(self.path)
        self.server.requests.append(path)
        wheels = sorted(self.server.folder.glob("*.whl"))
        parts = path.strip("/").split("/")
        if parts[:1] == ["files"] and (self.server.folder / parts[-1]).is_file():
            self.send_file(self.server.folder / parts[-1], "application/octet-stream")
        elif parts[:1] == ["simple"] and len(parts) == 2 and parts[1] in ("torch", "torchvision"):
            links = "".join(
                f'<a href="/files/{urllib.parse.quote(w.name)}">{w.name}</a>\n'
                for w in wheels
                if w.name.startswith(f"{parts[1]}-")
            )
            self.send_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        elif parts[:1] == ["simple"] and len(parts) == 2:
            self.send_response(302)
            self.send_header("Location", f"https://pypi.org/simple/{parts[1]}/")
            self.end_headers()
        else:
            self.send_error(404)

    def send_text(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_file(self, path, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as source:
            shutil.copyfileobj(source, self.wfile)

    def log_message(self, *args):
        pass


def relabel_torch(wheel, label):
    """`wheel` (torch X) rewritten as torch X+label, as PyTorch's indexes label their builds
    (2.14.1+cu126): the version in its name, its metadata and torch.__version__. Only those two
    members are replaced (`zip` copies the rest), so this takes seconds."""
    name, version, rest = wheel.name.split("-", 2)
    staging = wheel.parent / "relabel"
    for member, pattern, new in (
        (f"{name}-{version}.dist-info/METADATA", r"^Version: .*$", f"Version: {version}+{label}"),
        ("torch/version.py", r"^__version__ = .*$", f"__version__ = '{version}+{label}'"),
    ):
        text = subprocess.run(
            ["unzip", "-p", str(wheel), member], capture_output=True, text=True, check=True
        ).stdout
        text, count = re.subn(pattern, new, text, count=1, flags=re.MULTILINE)
        assert count == 1, f"{wheel.name}: {member} has no line {pattern}"
        (staging / member).parent.mkdir(parents=True, exist_ok=True)
        (staging / member).write_text(text)
    relabeled = wheel.with_name(f"{name}-{version}+{label}-{rest}")
    wheel.rename(relabeled)
    members = [str(path.relative_to(staging)) for path in staging.rglob("*") if path.is_file()]
    subprocess.run(["zip", "-q", str(relabeled), *members], cwd=staging, check=True)
    shutil.rmtree(staging)
    return relabeled


@pytest.fixture(scope="module")
def torch_index(request, tmp_path_factory):
    """The index serving this machine's torch 2.14.1 (relabeled 2.14.1+localindex) and
    torchvision 0.29.1 wheels on 127.0.0.1, for the life of the module."""
    if "image_builds" not in (request.config.option.markexpr or ""):
        pytest.skip("a second image build of several minutes runs with `-m image_builds`")
    if shutil.which("zip") is None or shutil.which("unzip") is None:
        pytest.skip("zip and unzip are needed to relabel the torch wheel")
    folder = tmp_path_factory.mktemp("torch-index")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version=3.11",
            "--platform=manylinux_2_28_x86_64",
            f"--dest={folder}",
            "torch==2.14.1",
            "torchvision==0.29.1",
        ],
        check=True,
    )
    relabel_torch(next(folder.glob("torch-2.14.1-*.whl")), LOCAL_LABEL)
    server = TorchIndex(folder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def torch_index_image(build_image, podman, torch_index):
    """The image built with --build-arg TORCH_INDEX_URL naming the local index (the build on the
    host's network, where 127.0.0.1 is the index), removed afterwards."""
    tag = f"localhost/dreamflow-test-torch-index:{os.getpid()}"
    try:
        yield build_image(tag, "--network=host", f"--build-arg=TORCH_INDEX_URL={torch_index.url}")
    finally:
        podman("rmi", "--force", tag)


def test_the_torch_index_build_argument_reaches_pip(build_image, dreamflow_image, podman, tmp_path):
    """An index without torch 2.14.1: the build asks it, and only it, for torch and stops there
    (without the local wheel folders, which pip would search beside any index). After the default
    image its apt layer is cached, so this takes seconds, not a torch install."""
    index = TorchIndex(tmp_path)  # no wheels: its torch page lists none
    thread = threading.Thread(target=index.serve_forever, daemon=True)
    thread.start()
    tag = f"localhost/dreamflow-test-no-torch:{os.getpid()}"
    try:
        _, log = build_image(
            tag,
            "--network=host",
            f"--build-arg=TORCH_INDEX_URL={index.url}",
            must_succeed=False,
            local_wheels=False,
        )
    finally:
        index.shutdown()
        index.server_close()
        podman("rmi", "--force", tag)
    assert f"Looking in indexes: {index.url}" in log, log[-3000:]
    assert "/simple/torch/" in index.requests
    assert "No matching distribution found for torch==2.14.1" in log, log[-3000:]


def test_the_image_reports_the_cuda_its_torch_was_built_for(dreamflow_image, podman):
    doctor = podman("run", "--rm", "--network=none", dreamflow_image, "dreamflow", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "torch 2.14.1+cu130, built for CUDA 13.0; needs NVIDIA driver >= 580" in doctor.stdout


@pytest.mark.image_builds
def test_an_image_built_from_another_torch_index_installs_its_torch_and_doctor_reports_it(
    request, torch_index, torch_index_image, podman
):
    """A whole second image (several minutes): with `-m image_builds`."""
    image, log = torch_index_image
    assert f"Looking in indexes: {torch_index.url}" in log
    assert f"/files/torch-2.14.1+{LOCAL_LABEL}-cp311-cp311-manylinux_2_28_x86_64.whl" in (
        torch_index.requests
    )
    doctor = podman("run", "--rm", "--network=none", image, "dreamflow", "doctor", timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert (
        f"torch 2.14.1+{LOCAL_LABEL}, built for CUDA 13.0; needs NVIDIA driver >= 580"
        in doctor.stdout
    ), doctor.stdout
