"""The demo through profiles/slurm on a real one-node SLURM cluster (munge, mariadb, slurmdbd,
slurmctld and slurmd on this machine, see slurm_cluster.sh), submitted by the real
snakemake-executor-plugin-slurm.

The run uses profiles/slurm itself, with test overrides written into a copy of it (slurm_profile):
the cluster's partition and account instead of the placeholders, status checks every second, no
retries, and no GPU request: this machine has no GPU, so the dream rules' `gpu: 1` becomes 0 and
the GPU request itself (sbatch --gpus) is not exercised here. The demo runs with blending off: its
frames are independent, so the profile's `groups`/`group-components` alone make them one SLURM job
(with blending on, the chain would be one job anyway). The failing run is a resumed one (the frames
are extracted already), the case in which Snakemake 9 used to submit split frame groups twice.
"""

import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from helpers import TINY_DREAM

from .conftest import REPO, SUMMARY, project_copy

pytestmark = pytest.mark.integration

FRAMES = (
    6  # of the demo's 30: each SLURM job costs 6-8 s of Snakemake start-up on this 2-core machine
)
# over the shipped config.yaml; a tiny dream, as what is tested here is the cluster, not the dream
DEMO = {"blend": {"mode": "none"}, "frames": {"end": FRAMES}, "dream": TINY_DREAM}
RUN_TIMEOUT = 600


def slurm_profile(directory):
    """profiles/slurm with the test overrides (see the module docstring), as a profile directory."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="debug", slurm_account="dreamflow-test")
    for rule in ("dream_frame", "sweep_layer"):
        profile["set-resources"][rule]["gpu"] = 0
    profile.update(
        {
            "slurm-init-seconds-before-status-checks": 1,
            "seconds-between-status-checks": 1,
            "retries": 0,
        }
    )
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    return directory


def cancel_all_jobs(env):
    """The test cluster is ours alone: nothing of a failed or timed-out run may stay queued."""
    jobs = subprocess.run(
        ["squeue", "--noheader", "--format=%A"], env=env, capture_output=True, text=True
    )
    if jobs.stdout.split():
        subprocess.run(["scancel", *jobs.stdout.split()], env=env)


def run_on_slurm(project, profile, env, config):
    """`snakemake --profile <profile>` in `project`, the shipped config.yaml updated by `config`;
    returns the result with .output and .seconds."""
    overrides = project / "test-overrides.yaml"
    overrides.write_text(yaml.safe_dump(config))
    # the jobs run `dreamflow` and Snakemake from this virtualenv (sbatch --export=ALL passes PATH
    # on); the model server outlives the few seconds between two frames of a group, each its own job
    # step
    env = {
        **env,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}",
        "DREAMFLOW_SERVER_IDLE": "30",
    }
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(profile),
        "--configfile",
        str(overrides),
    ]
    start = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    finally:
        cancel_all_jobs(env)
    result.output = result.stdout + result.stderr
    result.seconds = time.monotonic() - start
    return result


def slurm_jobs(result, env):
    """The SLURM jobs of one Snakemake run, from the accounting database: [(state, comment)].

    The executor names every job of a run by the run's ID and writes the rule, or the group, into
    the job's comment."""
    run_id = re.search(r"SLURM run ID: (\S+)", result.output)
    assert run_id, f"no SLURM run ID in Snakemake's output:\n{result.output[-3000:]}"
    sacct = subprocess.run(
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            "--starttime=now-1days",
            f"--name={run_id.group(1)}",
            "--format=State,Comment",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [tuple(line.split("|", 1)) for line in sacct.stdout.splitlines()]


@pytest.fixture(scope="module")
def demo_on_slurm(slurm_env, tmp_path_factory):
    """The demo, blending off and cut to FRAMES frames, run through the slurm profile."""
    project = project_copy(tmp_path_factory.mktemp("slurm-project"))
    profile = slurm_profile(tmp_path_factory.mktemp("profiles") / "slurm-test")
    result = run_on_slurm(project, profile, slurm_env, DEMO)
    SUMMARY.append(f"SLURM demo run ({FRAMES} frames): {result.seconds:.0f} s")
    return project, profile, result


def test_demo_runs_through_the_slurm_profile(demo_on_slurm):
    project, _, result = demo_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    dreamed = sorted(path.name for path in (project / "work/demo/dreamed").iterdir())
    assert dreamed == [f"{n:06d}.png" for n in range(1, FRAMES + 1)]
    assert (project / "results/demo/demo.mp4").stat().st_size > 0


def test_grouped_frames_go_out_as_fewer_slurm_jobs_than_frames(demo_on_slurm, slurm_env):
    _, _, result = demo_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    jobs = slurm_jobs(result, slurm_env)
    dream_jobs = [state for state, comment in jobs if "dream_frame" in comment]
    assert dream_jobs == ["COMPLETED"], jobs  # all FRAMES frames in one job
    assert len(jobs) == 5, jobs  # and probe, extract_frames, encode and coherence: one job each


def test_one_model_server_dreams_every_frame_of_the_group(demo_on_slurm):
    project, _, result = demo_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    logs = [log.read_text() for log in sorted((project / "work/demo/logs/dream").glob("*.log"))]
    servers = {
        match
        for log in logs
        for match in re.findall(r"dreamed by the model server: pid (\d+)", log)
    }
    assert len(logs) == FRAMES and len(servers) == 1, logs  # one torch import and model load


def test_a_failing_job_fails_the_run_and_is_named(demo_on_slurm, slurm_env, tmp_path):
    """A weights file that is not a state dict: only the dream jobs see it, and they fail at
    once."""
    project, profile, _ = demo_on_slurm
    broken = tmp_path / "broken.pt"
    broken.write_text("not a state dict")
    result = run_on_slurm(
        project, profile, slurm_env, {**DEMO, "dream": {**TINY_DREAM, "weights": str(broken)}}
    )
    SUMMARY.append(f"SLURM failing run: {result.seconds:.0f} s")
    assert result.returncode != 0, result.output[-8000:]
    assert re.search(r"Error in group \S*dream", result.output), result.output[-8000:]
    assert "rule dream_frame" in result.output
    assert f"weights file {broken} could not be loaded as a state dict" in result.output
    states = [state for state, comment in slurm_jobs(result, slurm_env) if "dream_frame" in comment]
    assert states == ["FAILED"]  # one group job, not frames submitted twice over


def test_a_blended_video_runs_whole_inside_one_allocation(slurm_env, tmp_path):
    """What the README recommends for long blend or zoom chains: the workflow itself is one batch
    job (sbatch runs snakemake on the node, the frames run there as local jobs through one model
    server), so no per-frame submission and no frame groups are needed."""
    project = project_copy(tmp_path / "project")
    (project / "test-overrides.yaml").write_text(
        yaml.safe_dump({**DEMO, "blend": {"mode": "constant", "factor": 0.5}})
    )
    script = tmp_path / "dreamflow-job.sh"
    script.write_text(
        '#!/bin/bash\nexec "$DREAMFLOW_PYTHON" -m snakemake --cores "$SLURM_CPUS_PER_TASK" '
        "--configfile test-overrides.yaml\n"
    )
    env = {**slurm_env, "DREAMFLOW_PYTHON": sys.executable}
    start = time.monotonic()
    try:
        submitted = subprocess.run(
            [
                "sbatch",
                "--wait",
                "--parsable",
                "--partition=debug",
                "--account=dreamflow-test",
                "--cpus-per-task=2",
                "--job-name=dreamflow-whole",
                f"--chdir={project}",
                f"--output={tmp_path / 'job.log'}",
                str(script),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    finally:
        cancel_all_jobs(env)
    SUMMARY.append(f"SLURM one-allocation blended run: {time.monotonic() - start:.0f} s")
    log = (tmp_path / "job.log").read_text() if (tmp_path / "job.log").exists() else ""
    assert submitted.returncode == 0, submitted.stderr + log[-8000:]
    assert (project / "results/demo/demo.mp4").stat().st_size > 0
    assert len(list((project / "work/demo/dreamed").iterdir())) == FRAMES
    sacct = subprocess.run(
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            f"--jobs={submitted.stdout.strip().split(';')[0]}",
            "--format=JobName,State",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sacct.stdout.split() == ["dreamflow-whole|COMPLETED"]
