"""The torch cache a workflow job reads is the one the workflow fetched the weights into.

A job in a container may read another cache than the host that runs Snakemake (the login node on
a cluster): Snakemake makes the container's home the workflow directory, --cleanenv drops
TORCH_HOME, an unbound cache is not there. The workflow exports its cache into every job's
command (plan.job_shell_prefix) and the job compares (models.check_workflow_cache), failing in
one line that names both caches and the fix. Without a container both are the same; the
containers themselves are in tests/integration/test_apptainer_binds.py.
"""

import os
import subprocess

import pytest

from dreamflow.errors import DreamflowError
from dreamflow.models import (
    FLOW_WEIGHTS,
    TORCHVISION_WEIGHTS,
    WORKFLOW_TORCH_HOME,
    check_workflow_cache,
)
from dreamflow.plan import job_shell_prefix
from helpers import Workflow, job_settings, make_video, run_dreamflow, solid_image, tiny_config


def cache_file(torch_home, name):
    path = torch_home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """The workflow's cache, holding GoogLeNet's and RAFT small's files, and the job's TORCH_HOME
    pointing at it; a test moves the job elsewhere."""
    workflow = tmp_path / "login-torch"
    for name in (TORCHVISION_WEIGHTS["googlenet"][1], FLOW_WEIGHTS["raft_small"][1]):
        cache_file(workflow, name)
    monkeypatch.setenv(WORKFLOW_TORCH_HOME, str(workflow))
    monkeypatch.setenv("TORCH_HOME", str(workflow))
    return workflow


def test_a_job_reading_the_workflows_cache_passes(caches):
    check_workflow_cache("googlenet")
    check_workflow_cache("raft_small")


def test_the_same_cache_by_another_path_passes(caches, tmp_path, monkeypatch):
    (tmp_path / "link").symlink_to(caches)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "link"))
    check_workflow_cache("googlenet")


def test_a_job_reading_another_cache_fails_naming_both_and_the_fix(caches, tmp_path, monkeypatch):
    """Even when the other cache has the file: it may hold other weights."""
    elsewhere = tmp_path / "job-torch"
    cache_file(elsewhere, TORCHVISION_WEIGHTS["googlenet"][1])
    monkeypatch.setenv("TORCH_HOME", str(elsewhere))
    with pytest.raises(DreamflowError) as raised:
        check_workflow_cache("googlenet")
    assert str(raised.value) == (
        f"googlenet weights: this job reads the torch cache {elsewhere} (TORCH_HOME={elsewhere} "
        f"here), not {caches}, the one the workflow fetched them into: give the jobs that cache "
        f"(apptainer-args: --env TORCH_HOME={caches} --bind {caches}, as "
        "profiles/slurm-apptainer does)"
    )


def test_a_job_without_torch_home_names_the_cache_its_home_gives(caches, tmp_path, monkeypatch):
    """As in a container under --cleanenv: HOME is the workflow directory."""
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "workflow"))
    with pytest.raises(DreamflowError, match=r"^raft_small weights: this job reads the torch "):
        check_workflow_cache("raft_small")
    with pytest.raises(DreamflowError) as raised:
        check_workflow_cache("googlenet")
    assert f"cache {tmp_path}/workflow/.cache/torch (TORCH_HOME is unset here), not {caches}," in (
        str(raised.value)
    )


def test_a_job_that_cannot_see_the_weights_in_the_same_cache_is_told_to_bind_it(
    caches, monkeypatch
):
    """TORCH_HOME names the cache, but it is not bound into the container."""
    (caches / "hub" / "checkpoints" / TORCHVISION_WEIGHTS["googlenet"][1]).unlink()
    with pytest.raises(DreamflowError) as raised:
        check_workflow_cache("googlenet")
    path = caches / "hub" / "checkpoints" / TORCHVISION_WEIGHTS["googlenet"][1]
    assert str(raised.value) == (
        f"googlenet weights: this job cannot see {path}, which the workflow fetched into its "
        f"torch cache {caches}: bind that cache into the jobs' containers (apptainer-args: "
        f"--bind {caches}, as profiles/slurm-apptainer does)"
    )


def test_embedded_weights_and_jobs_outside_a_workflow_are_not_checked(
    caches, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    check_workflow_cache("efficientnet_lite0")  # its weights come with its package
    check_workflow_cache("farneback")  # a flow without weights
    monkeypatch.delenv(WORKFLOW_TORCH_HOME)
    check_workflow_cache("googlenet")  # `dreamflow dream-frame` run by hand: its own cache


def test_the_job_shell_prefix_exports_the_workflows_cache(tmp_path):
    torch_home = tmp_path / "torch {cache}'s"
    prefix = job_shell_prefix("/nowhere/python", True, torch_home=str(torch_home))
    command = prefix.format() + f"printenv {WORKFLOW_TORCH_HOME}"  # Snakemake formats the prefix
    shown = subprocess.run(
        ["bash", "-c", command], env={}, capture_output=True, text=True, check=True
    )
    assert shown.stdout == f"{torch_home}\n"


def test_a_dream_job_with_another_cache_fails_in_one_line_before_dreaming(caches, tmp_path):
    frame = tmp_path / "frame.png"
    solid_image(frame, (90, 120, 200))
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "job-torch"), "DREAMFLOW_SERVER": "off"}
    for settings in (job_settings(model="googlenet", layers=["inception3b"]), None):
        result = run_dreamflow(
            "dream-frame",
            "--frame",
            frame,
            "--number",
            "1",
            "--settings",
            settings or job_settings(),
            "--threads",
            "1",
            "-o",
            tmp_path / "out.png",
            env=env,
        )
        if settings:  # GoogLeNet reads the torch cache
            assert result.returncode == 1
            assert result.stderr.startswith(
                f"dreamflow: error: googlenet weights: this job reads the torch cache "
                f"{tmp_path}/job-torch (TORCH_HOME="
            )
            assert result.stderr.count("\n") == 1
            assert not (tmp_path / "out.png").exists()
        else:  # the embedded EfficientNet-Lite0 reads none
            assert result.returncode == 0, result.stderr
            assert (tmp_path / "out.png").is_file()


def test_a_flow_job_with_another_cache_fails_in_one_line(caches, tmp_path):
    for number in (1, 2):
        solid_image(tmp_path / f"{number}.png", (10 * number, 50, 90))
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "job-torch"), "DREAMFLOW_SERVER": "off"}
    result = run_dreamflow(
        "flow",
        "--previous-frame",
        tmp_path / "1.png",
        "--frame",
        tmp_path / "2.png",
        "--method",
        "raft_small",
        "--device",
        "cpu",
        "-o",
        tmp_path / "flow.npz",
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("dreamflow: error: raft_small weights: this job reads the ")
    assert result.stderr.count("\n") == 1


@pytest.mark.workflow
def test_a_moved_torch_cache_reruns_no_job_that_reads_no_weights_from_it(tmp_path):
    """The cache goes into every job's command, but not into what Snakemake compares for reruns
    (its params, the rule's command): EfficientNet-Lite0's dreams stay."""
    flow = Workflow(tmp_path)
    make_video(tmp_path / "clip.mp4", frames=2)
    flow.write_config(tiny_config("clip.mp4"))
    first = flow.run(env={"TORCH_HOME": str(tmp_path / "torch-a")})
    assert first.returncode == 0, first.output
    again = flow.run("--dry-run", env={"TORCH_HOME": str(tmp_path / "torch-b")})
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output, again.output
