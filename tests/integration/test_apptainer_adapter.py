"""Per-rule containers: `snakemake --sdm apptainer` runs every job of the workflow in the image.

Apptainer cannot be installed here, so `apptainer` is tests/adapters/apptainer, a TEST-ONLY adapter
that carries out the command lines Snakemake builds through real Podman, with Apptainer's defaults
(see its docstring). What this cannot show: the Apptainer binary itself (its SIF images, its own
mount and namespace code) and GPU binding (`--nv`; no GPU here). What it shows for real: each job
runs in the image named by the config key `container`, the model server is started inside a
container and outlives the job that started it, its socket, pid and log files sit in a bind-mounted
node-local directory on the host, and model weights come from a bind-mounted torch cache.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from dreamflow.serving import client
from helpers import REPO, TINY_DREAM, assert_dreamed, ffprobe_streams
from integration.services import (
    SUMMARY,
    podman_env,
    profile_apptainer_args,
    project_copy,
    write_random_googlenet,
)

pytestmark = pytest.mark.integration

ADAPTERS = REPO / "tests" / "adapters"
LABEL = "apptainer-test-adapter=1"
DREAMER = re.compile(
    r"^dreamflow: dreamed by the model server: pid (\d+), python (\S+), host (\S+)$", re.MULTILINE
)
DEMO_DREAM = {"iterations": 5}
CAT_DREAM = {**TINY_DREAM, "model": "googlenet", "layers": ["inception3b"]}
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


def adapter_containers(podman):
    return podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}").stdout.split()


def stop_servers(server_dir, podman, timeout=60):
    """Ask every model server in `server_dir` to leave, then wait until their containers have
    ended."""
    for sock in Path(server_dir).glob("*.sock"):
        client.stop(str(sock))
    deadline = time.monotonic() + timeout
    while adapter_containers(podman) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = adapter_containers(podman)
    if left:
        podman("rm", "--force", *left)
    return left


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
        (project / "test-config.yaml").write_text(
            yaml.safe_dump(
                {
                    "inputs": {
                        "demo": {
                            "path": "workflow/resources/demo/demo.mp4",
                            "frames": {"end": FRAMES, "width": 160},
                            "dream": DEMO_DREAM,
                        },
                        "cat": {
                            "path": "workflow/resources/demo/chelsea.jpg",
                            "frames": {"width": 96},
                            "dream": CAT_DREAM,
                        },
                    }
                }
            )
        )
        # a long idle time: the servers stay until the test has listed their files, then
        # stop_servers stops them
        env = podman_env(
            {
                **os.environ,
                "PATH": f"{ADAPTERS}{os.pathsep}{os.environ['PATH']}",
                "DREAMFLOW_SERVER_DIR": str(server_dir),
                "TORCH_HOME": str(torch_home),
                "DREAMFLOW_SERVER_IDLE": "60",
            }
        )
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
        start = time.monotonic()
        try:
            result = subprocess.run(
                command, cwd=project, env=env, capture_output=True, text=True, timeout=900
            )
            seconds = time.monotonic() - start
            server_files = sorted(
                path.name for path in server_dir.iterdir()
            )  # before the servers leave
        finally:
            left = stop_servers(server_dir, podman)
        assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
        SUMMARY.append(
            f"per-rule containers (snakemake --sdm apptainer, test adapter): {seconds:.0f} s"
        )
        yield {
            "project": project,
            "output": result.stdout + result.stderr,
            "server_dir": server_dir,
            "server_files": server_files,
            "left": left,
            "apptainer_args": apptainer_args,
        }
    finally:
        shutil.rmtree(torch_home)


def dreamers(project):
    """{log file: (pid, python, host)} of every dream job."""
    found = {}
    for log in sorted(project.glob("work/*/logs/dream/*.log")):
        lines = DREAMER.findall(log.read_text())
        assert len(lines) == 1, (
            f"{log}: no single 'dreamed by the model server' line:\n{log.read_text()}"
        )
        found[log] = (int(lines[0][0]), lines[0][1], lines[0][2])
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


def test_frames_were_dreamed_by_a_server_running_the_images_python(
    container_run, podman, dreamflow_image
):
    venv = image_virtualenv(podman, dreamflow_image)
    found = dreamers(container_run["project"])
    assert len(found) == FRAMES + 1  # the demo's frames and the photo
    for log, (_pid, python, host) in found.items():
        assert python.startswith(f"{venv}/bin/python"), (
            f"{log}: dreamed by {python}, not the image's Python"
        )
        assert python != sys.executable
        assert host == socket.gethostname()  # Apptainer shares the host's name
    pids = [pid for pid, _, _ in found.values()]
    # the server outlived the job (and container) that started it and served the following jobs
    assert len(set(pids)) < len(pids), f"every frame started its own server: {pids}"


def test_the_servers_files_are_in_the_bind_mounted_directory_on_the_host(container_run):
    server_dir, files = container_run["server_dir"], container_run["server_files"]
    assert any(name.endswith(".sock") for name in files), files
    assert any(name.endswith(".pid") for name in files), files
    logs = "".join(path.read_text() for path in server_dir.glob("*.log"))
    for pid, _, _ in dreamers(container_run["project"]).values():
        assert f"[{pid}] serving {container_run['project']}" in logs  # the pids are host pids


def test_googlenet_weights_came_from_the_bind_mounted_cache(container_run):
    logs = "".join(path.read_text() for path in container_run["server_dir"].glob("*.log"))
    # the image has no GoogLeNet weights: the server could only load them through the bind
    assert re.search(r"loaded googlenet in [\d.]+ s", logs), logs[-3000:]
    project = container_run["project"]
    assert_dreamed(
        project / "work/cat/frames/000001.png", project / "results/cat/cat.png", CAT_DREAM
    )


def test_the_profiles_gpu_flag_is_reported_as_not_emulated(container_run):
    assert "--nv" in container_run["apptainer_args"].split()
    assert "--nv: GPU binding is not emulated (no GPU here)" in container_run["output"]


def test_no_container_is_left_behind(container_run, podman):
    assert container_run["left"] == [], (
        "containers still running after the servers were asked to stop"
    )
    assert adapter_containers(podman) == []
