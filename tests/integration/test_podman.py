"""The image of containers/Dockerfile, built on a local Debian 12 base, runs the demo workflow in
Podman.

Real Podman, real image, real Snakemake inside it, no network in the container. What cannot run
here: GPU binding (no GPU on these machines; the image's CUDA build of torch runs on the CPU), and
Apptainer (not installable), whose definition is checked against the Dockerfile in
tests/test_containers.py instead.
"""

import json
import re
import shutil
import socket
import subprocess
import sys

import pytest

from helpers import REPO
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
