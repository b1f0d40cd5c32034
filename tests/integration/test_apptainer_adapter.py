"""Apptainer: every job in its own container (`snakemake --sdm apptainer`), and the whole workflow
in one container (`apptainer exec IMAGE snakemake`).

Apptainer cannot be installed here, so `apptainer` is tests/adapters/apptainer, a TEST-ONLY adapter
that carries out the command lines Snakemake builds through real Podman, with Apptainer's defaults
(see its docstring). Like Apptainer, it takes the image away from whatever a command leaves running
when the command exits (it kills it). What this cannot show: the Apptainer binary itself (its SIF
images, its own mount and namespace code) and GPU binding (`--nv`; no GPU here). What it shows for
real: with per-rule containers each job runs in the image named by the config key `container`,
dreams in-process with the image's Python and says why in its log (a model server started in a
job's container would lose the image with the job), reads model weights from a bind-mounted torch
cache, and leaves no server behind; with the workflow in one container, the frames are dreamed by
one model server that the first job started in that container, and nothing outlives `exec`.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from dreamflow.serving import client
from helpers import assert_dreamed, ffprobe_streams, has_exited
from integration.services import (
    ADAPTERS,
    CAT_DREAM,
    SUMMARY,
    podman_env,
    profile_apptainer_args,
    project_copy,
    write_random_googlenet,
)

pytestmark = pytest.mark.integration

LABEL = "apptainer-test-adapter=1"
GROUP_VARIABLE = "DREAMFLOW_TEST_ADAPTER_GROUP"  # the stand-in labels its containers with it
GROUP_LABEL = "apptainer-test-adapter.group"
DREAMER = re.compile(
    r"^dreamflow: dreamed (by the model server|in-process): pid (\d+), python (\S+), host (\S+)$",
    re.MULTILINE,
)
DEMO_DREAM = {"iterations": 5}
FRAMES = 6  # of the demo's 30, at half its width: a blend chain of several jobs, cheap on 2 cores


def image_virtualenv(podman, image):
    lines = podman(
        "image",
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        image,
        check=True,
    ).stdout.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)["VIRTUAL_ENV"]


def adapter_containers(podman, group, running=False):
    """The stand-in's containers of the commands run with run_env's `group`; with `running`, only
    those whose processes still run (a container whose processes have all ended is listed a little
    longer, while Podman removes it)."""
    state = ["--filter", "status=running"] if running else ["--all"]
    return podman(
        "ps", "--quiet", *state, "--filter", f"label={LABEL}", "--filter", f"label={group}"
    ).stdout.split()


def dreamer_pids_alive(project):
    """The processes that dreamed a frame of `project` (model servers, in-process jobs) that have
    not exited."""
    pids = set()
    for log in project.glob("work/*/logs/dream/*.log"):
        pids.update(int(match[1]) for match in DREAMER.findall(log.read_text()))
    return [pid for pid in sorted(pids) if not has_exited(pid)]


def stop_servers(server_dir, podman, group, timeout=60):
    """Ask every model server in `server_dir` to leave, then wait until the containers of `group`
    have ended."""
    for sock in Path(server_dir).glob("*.sock"):
        client.stop(str(sock))
    deadline = time.monotonic() + timeout
    while adapter_containers(podman, group) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = adapter_containers(podman, group)
    if left:
        podman("rm", "--force", *left)
    return left


def demo_config(project, with_cat):
    inputs = {
        "demo": {
            "path": "workflow/resources/demo/demo.mp4",
            "frames": {"end": FRAMES, "width": 160},
            "dream": DEMO_DREAM,
        }
    }
    if with_cat:
        inputs["cat"] = {
            "path": "workflow/resources/demo/chelsea.jpg",
            "frames": {"width": 96},
            "dream": CAT_DREAM,
        }
    (project / "test-config.yaml").write_text(yaml.safe_dump({"inputs": inputs}))


def run_env(server_dir, **extra):
    # a long idle time: a server the jobs started would still be there when the run ends, unless
    # its container took it away
    return podman_env(
        {
            **{name: value for name, value in os.environ.items() if name != "TORCH_HOME"},
            "PATH": f"{ADAPTERS}{os.pathsep}{os.environ['PATH']}",
            "DREAMFLOW_SERVER_DIR": str(server_dir),
            "DREAMFLOW_SERVER_IDLE": "60",
            GROUP_VARIABLE: uuid.uuid4().hex,  # this run's containers: adapter_containers
            **extra,
        }
    )


def finished_run(command, project, env, server_dir, podman, what):
    """Run `command`; what it left: its output, the server directory's files and the adapter's
    containers still there when it returned (then removed)."""
    group = f"{GROUP_LABEL}={env[GROUP_VARIABLE]}"
    start = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, timeout=900
        )
        seconds = time.monotonic() - start
        server_files = sorted(path.name for path in server_dir.iterdir())
        left = adapter_containers(podman, group, running=True)
        alive = dreamer_pids_alive(project)
    finally:
        stop_servers(server_dir, podman, group)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    SUMMARY.append(f"{what}: {seconds:.0f} s")
    return {
        "project": project,
        "output": result.stdout + result.stderr,
        "server_dir": server_dir,
        "server_files": server_files,
        "left": left,
        "alive": alive,
        "group": group,
    }


@pytest.fixture(scope="module")
def container_run(podman, dreamflow_image, tmp_path_factory):
    """The demo (its first FRAMES frames, smaller and with fewer steps, blending on) and a GoogLeNet
    dream of the demo photo, every job in the image through `snakemake --sdm apptainer`, with the
    apptainer-args of profiles/slurm-apptainer (--nv, and the binds of /tmp, which holds the socket
    directory, and of the torch cache) plus --contain: Apptainer's default binds of /tmp, /var/tmp
    and $HOME are then gone, and only the profile's binds bring in the socket directory and the
    cache."""
    root = tmp_path_factory.mktemp("apptainer")
    project = project_copy(root / "project")
    server_dir = root / "server"  # under /tmp, as the profile requires
    server_dir.mkdir(mode=0o700)
    # outside /tmp and the project, so that only the profile's --bind $TORCH_HOME brings it in
    torch_home = Path(tempfile.mkdtemp(prefix="dreamflow-test-torch-", dir="/var/tmp"))
    try:
        write_random_googlenet(torch_home)
        demo_config(project, with_cat=True)
        env = run_env(server_dir, TORCH_HOME=str(torch_home))
        apptainer_args = "--contain " + profile_apptainer_args()
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "--sdm",
            "apptainer",
            "--apptainer-args",
            apptainer_args,
            "--configfile",
            "test-config.yaml",
            "--config",
            f"container=docker://{dreamflow_image}",
        ]
        run = finished_run(
            command,
            project,
            env,
            server_dir,
            podman,
            "per-rule containers (snakemake --sdm apptainer, test adapter)",
        )
        yield {**run, "apptainer_args": apptainer_args}
    finally:
        shutil.rmtree(torch_home)


@pytest.fixture(scope="module")
def one_container_run(podman, dreamflow_image, tmp_path_factory):
    """The demo (FRAMES frames) with Snakemake itself in the image, as on a GPU node:
    `apptainer exec IMAGE snakemake --cores 2`, no --sdm; the model in the image."""
    root = tmp_path_factory.mktemp("one-container")
    project = project_copy(root / "project")
    server_dir = root / "server"
    server_dir.mkdir(mode=0o700)
    demo_config(project, with_cat=False)
    command = [
        "apptainer",
        "exec",
        f"docker://{dreamflow_image}",
        "snakemake",
        "--cores",
        "2",
        "--configfile",
        "test-config.yaml",
    ]
    return finished_run(
        command,
        project,
        run_env(server_dir),
        server_dir,
        podman,
        "whole workflow in one container (apptainer exec IMAGE snakemake, test adapter)",
    )


def dreamers(project):
    """{log file: (how, pid, python, host)} of every dream job, how: 'by the model server' or
    'in-process'."""
    found = {}
    for log in sorted(project.glob("work/*/logs/dream/*.log")):
        lines = DREAMER.findall(log.read_text())
        assert len(lines) == 1, f"{log}: no single 'dreamed ...' line:\n{log.read_text()}"
        found[log] = (lines[0][0], int(lines[0][1]), lines[0][2], lines[0][3])
    return found


def test_every_job_ran_in_the_image_and_made_the_results(container_run):
    project, output = container_run["project"], container_run["output"]
    jobs = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output)
    assert {"probe", "extract_frames", "dream_frame", "encode", "publish_image"} <= set(jobs)
    # every job but `all` (which runs nothing) ran its command in the image
    assert output.count("Activating singularity image") == len(jobs) - jobs.count("all")
    dreamed = sorted((project / "work/demo/dreamed").glob("*.png"))
    assert len(dreamed) == FRAMES
    for frame in dreamed:
        assert_dreamed(project / "work/demo/frames" / frame.name, frame, DEMO_DREAM)
    (video,) = [
        s for s in ffprobe_streams(project / "results/demo/demo.mp4") if s["codec_type"] == "video"
    ]
    assert int(video["nb_read_frames"]) == FRAMES
    assert_dreamed(
        project / "work/cat/frames/000001.png", project / "results/cat/cat.png", CAT_DREAM
    )
    assert (
        project / ".snakemake/singularity"
    ).is_dir()  # Snakemake pulled the docker:// image (a marker)


def test_per_rule_jobs_dreamed_in_process_with_the_images_python_and_said_why(
    container_run, podman, dreamflow_image
):
    venv = image_virtualenv(podman, dreamflow_image)
    found = dreamers(container_run["project"])
    assert len(found) == FRAMES + 1  # the demo's frames and the photo
    for log, (how, _pid, python, host) in found.items():
        assert how == "in-process", f"{log}: dreamed {how}"
        assert client.PER_RULE_NOTE in log.read_text().splitlines(), log.read_text()
        assert python.startswith(f"{venv}/bin/python"), (
            f"{log}: dreamed by {python}, not the image's Python"
        )
        assert python != sys.executable
        assert host == socket.gethostname()  # Apptainer shares the host's name


def test_per_rule_jobs_started_no_server_and_left_nothing_running(container_run):
    files = container_run["server_files"]
    assert not [name for name in files if name.endswith((".sock", ".pid", ".log"))], files
    assert container_run["alive"] == [], "a dreaming process outlived the run"
    assert container_run["left"] == [], "containers still running after the run"


def test_googlenet_weights_came_from_the_bind_mounted_cache(container_run):
    # the image has no GoogLeNet weights and no model hub is reachable: the cat's dream could only
    # load them through the bind
    project = container_run["project"]
    (log,) = project.glob("work/cat/logs/dream/*.log")
    assert "dreamflow: dreamed in-process: " in log.read_text()
    assert_dreamed(
        project / "work/cat/frames/000001.png", project / "results/cat/cat.png", CAT_DREAM
    )


def test_the_profiles_gpu_flag_is_reported_as_not_emulated(container_run):
    assert "--nv" in container_run["apptainer_args"].split()
    assert "--nv: GPU binding is not emulated (no GPU here)" in container_run["output"]


def test_in_one_container_one_model_server_dreamed_the_frames(
    one_container_run, podman, dreamflow_image
):
    project = one_container_run["project"]
    venv = image_virtualenv(podman, dreamflow_image)
    found = dreamers(project)
    assert len(found) == FRAMES
    for log, (how, _pid, python, _host) in found.items():
        assert how == "by the model server", f"{log}: dreamed {how}:\n{log.read_text()}"
        assert client.PER_RULE_NOTE not in log.read_text()
        assert python.startswith(f"{venv}/bin/python"), python
    pids = {pid for _, pid, _, _ in found.values()}
    assert len(pids) == 1, f"the frames were not all dreamed by one server: {pids}"
    logs = "".join(path.read_text() for path in one_container_run["server_dir"].glob("*.log"))
    assert f"[{pids.pop()}] serving {project}" in logs  # a host pid, files on the host
    assert len(sorted((project / "work/demo/dreamed").glob("*.png"))) == FRAMES
    assert (project / "results/demo/demo.mp4").is_file()


def test_nothing_outlives_the_one_container(one_container_run):
    # the server's idle time (60 s) had not run out: the container's end took it
    assert one_container_run["alive"] == [], "a model server outlived exec"
    assert one_container_run["left"] == [], "containers still running after exec returned"
