"""The demo through the SLURM profiles on a real one-node SLURM cluster (munge, mariadb, slurmdbd,
slurmctld and slurmd on this machine, see slurm_cluster.sh), submitted by the real
snakemake-executor-plugin-slurm.

The runs use profiles/slurm and profiles/slurm-apptainer themselves, with test overrides written
into a copy (slurm_profile): the cluster's partition and account instead of the placeholders,
status checks every second and no retries. Their GPU requests stay as shipped: the node has two
stand-in GPUs (slurm_cluster.sh), so `sbatch --gpus=1` is scheduled, allocated and recorded in
sacct, and the dreams run on the CPU. profiles/slurm-apptainer runs
with `container: null`, its jobs on the host (no Apptainer here): what it shares with
profiles/slurm, the requests, is what it is run for. Every run passes --cores 1: one CPU per job
and per chain's group, so that two of them fit side by side on the node's two CPUs.

The demo runs twice over: with blending off its frames are independent and go out as one SLURM
job array; blended, with a scene cut, each of its two chains is one group, one SLURM job, and the
two run at the same time. The failing run and the chain runs after the first are resumed ones
(the frames are extracted and the scenes known), the case in which Snakemake 9 submits frames of
groups split by group-components twice over (snakemake/snakemake#1628).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import REPO, TINY_DREAM, assert_dreamed, ffprobe_streams, video_frames
from integration.services import SUMMARY, project_copy

pytestmark = pytest.mark.integration

FRAMES = (
    4  # of the demo's 30: each SLURM job costs 6-8 s of Snakemake start-up on this 2-core machine
)
# over the shipped config.yaml; a tiny dream, as what is tested here is the cluster, not the dream
DEMO = {"blend": {"mode": "none"}, "frames": {"end": FRAMES}, "dream": TINY_DREAM}
CUT = 3  # the blended demo's second scene starts here: two chains, frames 1-2 and 3-4
CHAINED = {**DEMO, "blend": {"mode": "constant"}, "scenes": {"cuts": [CUT]}}
CHAIN_GROUPS = {"chain-demo-000001", f"chain-demo-{CUT:06d}"}
VIDEO = "results/demo/demo.mp4"
DEMO_SIZE = (320, 180)  # the demo clip's, frames.width unset
KINDS = ("frames", "dreamed")  # the raw and the dreamed frame's folder
# a blended input's coherence job asks for the scenes checkpoint as well as the extraction
COHERENCE = "results/demo/coherence.json"
# every frame step of a run in one group, one submission for the whole video (command-line
# overrides of the rules' groups)
ONE_GROUP = [
    "--groups",
    *(f"{rule}=dream" for rule in ("dream_frame", "blend", "flow", "crossfade")),
    "--group-components",
    "dream=1000000",
]
RUN_TIMEOUT = 600


def slurm_profile(directory, name):
    """profiles/<name> with the test overrides (see the module docstring), as a profile
    directory."""
    profile = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="debug", slurm_account="dreamflow-test")
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


def run_on_slurm(project, profile, env, config, args=()):
    """`snakemake --profile <profile> --cores 1 <args>` in `project`, the shipped config.yaml
    updated by `config`; `args` holds targets and options. Returns the result with .output and
    .seconds."""
    overrides = project / "test-overrides.yaml"
    overrides.write_text(yaml.safe_dump(config))
    # the jobs run `dreamflow` and Snakemake from this virtualenv (sbatch --export=ALL passes PATH
    # on); the model server outlives the few seconds between two frames of a chain, each its own
    # job step
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
        "--cores",
        "1",
        *args,
        "--configfile",  # last: it takes every argument after it
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


SACCT_FIELDS = ["JobID", "State", "Start", "End", "AllocCPUS", "ReqTRES", "AllocTRES", "Comment"]


def slurm_jobs(result, env):
    """The SLURM jobs of one Snakemake run, from the accounting database: one dict of SACCT_FIELDS
    per allocation (each task of a job array is one, its JobID <array>_<task>).

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
            f"--format={','.join(SACCT_FIELDS)}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        dict(zip(SACCT_FIELDS, line.split("|", len(SACCT_FIELDS) - 1), strict=True))
        for line in sacct.stdout.splitlines()
    ]


def gpus(tres):
    """The GPUs in one of sacct's TRES lists (billing=1,cpu=1,gres/gpu=1,mem=8001M,node=1)."""
    match = re.search(r"(?:^|,)gres/gpu=(\d+)", tres)
    return int(match.group(1)) if match else 0


def gpu_option(job_id, env):
    """How the job asked for GPUs, from slurmctld (which remembers a finished job for MinJobAge
    seconds): TresPerJob is what sbatch --gpus sets, TresPerNode what --gres sets."""
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        key: value
        for key, value in re.findall(r"\b(TresPerJob|TresPerNode|TresPerTask)=(\S+)", shown)
        if "gpu" in value
    }


def assert_gpu_requests(jobs, env):
    """Every dream job (a frame's, a chain's group, a video's group) asked for one GPU with
    sbatch --gpus=1 and got it; every other job (probe, extraction, scenes, encode, coherence)
    asked for none. The executor writes the rule or group into each job's comment."""
    dreams = [job for job in jobs if job["Comment"].startswith(("rule_dream_", "rule_chain-"))]
    others = [job for job in jobs if job not in dreams]
    assert dreams and others, jobs
    for job in dreams:
        assert (gpus(job["ReqTRES"]), gpus(job["AllocTRES"])) == (1, 1), job
        assert gpu_option(job["JobID"], env) == {"TresPerJob": "gres:gpu:1"}, job
    for job in others:
        assert (gpus(job["ReqTRES"]), gpus(job["AllocTRES"])) == (0, 0), job
        assert gpu_option(job["JobID"], env) == {}, job


def difference(first, second):
    """first - second, two RGB images, as floats in 0-255 units."""
    return np.asarray(first, np.float32) - np.asarray(second, np.float32)


def correlation(first, second):
    return float(np.corrcoef(first.ravel(), second.ravel())[0, 1])


def dreamed_beyond_noise(project, video=VIDEO):
    """Asserts that the demo's video holds its FRAMES dreamed frames at DEMO_SIZE, and that each
    dreamed frame is a dream of its raw frame (helpers.assert_dreamed). Returns the mean changes,
    for the summary."""
    (stream,) = [s for s in ffprobe_streams(project / video) if s["codec_type"] == "video"]
    assert (int(stream["nb_read_frames"]), int(stream["width"]), int(stream["height"])) == (
        FRAMES,
        *DEMO_SIZE,
    ), stream
    amounts = []
    for n, encoded in enumerate(video_frames(project / video), start=1):
        raw_path, dreamed_path = (project / f"work/demo/{kind}/{n:06d}.png" for kind in KINDS)
        amounts.append(assert_dreamed(raw_path, dreamed_path, TINY_DREAM))
        raw = Image.open(raw_path).convert("RGB")
        dream = difference(Image.open(dreamed_path).convert("RGB"), raw)
        # The video is made of the dreams: what encoding changed in a frame follows the dream's
        # change (correlation 0.44-0.60 measured; 0.00 for the raw frames encoded alike). Not a
        # closeness test: H.264 at crf 18 moves pixels about as much as a tiny dream.
        assert correlation(difference(encoded, raw), dream) > 0.25, n
    return amounts


def submissions(jobs):
    """How many sbatch submissions the jobs took: the tasks of an array are one."""
    return len({job["JobID"].split("_")[0] for job in jobs})


def ran_at_once(first, second):
    """Whether two jobs ran at the same time (sacct's start and end, to the second)."""
    return first["Start"] < second["End"] and second["Start"] < first["End"]


def span(jobs):
    """Seconds from the first start to the last end of `jobs` (sacct's times, to the second)."""
    starts = [datetime.fromisoformat(job["Start"]) for job in jobs]
    ends = [datetime.fromisoformat(job["End"]) for job in jobs]
    return (max(ends) - min(starts)).total_seconds()


def chain_jobs(jobs):
    """{group: job} of the jobs that ran a chain's group (comment rule_<group>_<rules>)."""
    chains = {}
    for job in jobs:
        match = re.match(r"rule_(chain-\S+?-\d{6})_", job["Comment"])
        if match:
            assert match.group(1) not in chains, jobs  # each chain's group is submitted once
            chains[match.group(1)] = job
    return chains


def frame_step_jobs(jobs):
    """The jobs of the frame steps submitted on their own, outside any group."""
    rules = ("dream_frame", "blend", "flow", "crossfade")
    return [job for job in jobs if job["Comment"].startswith(tuple(f"rule_{r}_" for r in rules))]


def delete_frame_steps(project):
    """The dreams, start images and flows of the demo, and its video: all to be made again by a
    resumed run (the frames are extracted and the scenes known)."""
    for step in ("dreamed", "blended", "flow"):
        shutil.rmtree(project / "work/demo" / step, ignore_errors=True)
    (project / VIDEO).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def demo_on_slurm(slurm_env, tmp_path_factory):
    """The demo, blending off and cut to FRAMES frames, run through the slurm profile."""
    project = project_copy(tmp_path_factory.mktemp("slurm-project"))
    profile = slurm_profile(tmp_path_factory.mktemp("profiles") / "slurm-test", "slurm")
    result = run_on_slurm(project, profile, slurm_env, DEMO)
    SUMMARY.append(f"SLURM demo run ({FRAMES} frames): {result.seconds:.0f} s")
    return project, profile, result


def test_demo_runs_through_the_slurm_profile(demo_on_slurm):
    project, _, result = demo_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    dreamed = sorted(path.name for path in (project / "work/demo/dreamed").iterdir())
    assert dreamed == [f"{n:06d}.png" for n in range(1, FRAMES + 1)]
    amounts = dreamed_beyond_noise(project)
    SUMMARY.append(f"SLURM demo run, dreamed - raw: {', '.join(f'{a:.2f}' for a in amounts)}")


def test_profiles_slurm_asks_for_a_gpu_for_each_dream_job_only(demo_on_slurm, slurm_env):
    """profiles/slurm: each frame of the dream array asks for one GPU (sbatch --gpus=1); probe,
    extraction, encode and coherence ask for none."""
    _, _, result = demo_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    assert_gpu_requests(slurm_jobs(result, slurm_env), slurm_env)


def test_independent_frames_go_out_as_one_job_array(demo_on_slurm, slurm_env):
    """Blending off: every frame is a job of its own, and the frames ready together (all of them,
    once extracted) are one submission, whose tasks run side by side."""
    _, _, result = demo_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    jobs = slurm_jobs(result, slurm_env)
    dreams = [job for job in jobs if job["Comment"].startswith("rule_dream_frame_")]
    assert [job["State"] for job in dreams] == ["COMPLETED"] * FRAMES, jobs
    array = dreams[0]["JobID"].split("_")[0]
    assert sorted(job["JobID"] for job in dreams) == [f"{array}_{n}" for n in range(1, FRAMES + 1)]
    assert any(ran_at_once(a, b) for a in dreams for b in dreams if a is not b), dreams
    # and probe, extract_frames, encode and coherence: one job each
    assert submissions(jobs) == 5 and not chain_jobs(jobs), jobs


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
    assert "Error in rule dream_frame" in result.output, result.output[-8000:]
    assert f"weights file {broken} could not be loaded as a state dict" in result.output
    dreams = [job for job in slurm_jobs(result, slurm_env) if "dream_frame" in job["Comment"]]
    assert "FAILED" in {job["State"] for job in dreams}, dreams
    assert submissions(dreams) == 1, dreams  # one array, not frames submitted twice over


@pytest.fixture(scope="module")
def chains_on_slurm(slurm_env, tmp_path_factory):
    """The demo blended, with a scene cut at frame CUT (two chains), run through the
    slurm-apptainer profile (`container: null`: its jobs on the host)."""
    project = project_copy(tmp_path_factory.mktemp("slurm-chains"))
    profile = slurm_profile(tmp_path_factory.mktemp("profiles") / "slurm-test", "slurm-apptainer")
    result = run_on_slurm(project, profile, slurm_env, CHAINED, [VIDEO, COHERENCE])
    SUMMARY.append(f"SLURM blended run, two chains ({FRAMES} frames): {result.seconds:.0f} s")
    return project, profile, result


def test_each_chain_of_a_blended_video_is_one_slurm_job(chains_on_slurm, slurm_env):
    """A chain's flow, blend and dream jobs travel as one group; nothing of a chain goes out on
    its own."""
    project, _, result = chains_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    amounts = dreamed_beyond_noise(project)
    SUMMARY.append(f"SLURM chains run, dreamed - raw: {', '.join(f'{a:.2f}' for a in amounts)}")
    assert json.loads((project / COHERENCE).read_text())["frames"] == FRAMES
    jobs = slurm_jobs(result, slurm_env)
    chains = chain_jobs(jobs)
    assert set(chains) == CHAIN_GROUPS, jobs
    assert {job["State"] for job in chains.values()} == {"COMPLETED"}, jobs
    assert not frame_step_jobs(jobs), jobs
    # probe, extract_frames, scenes, two chains, encode, coherence
    assert submissions(jobs) == 7, jobs


def test_profiles_slurm_apptainer_asks_for_a_gpu_for_each_chain_only(chains_on_slurm, slurm_env):
    """profiles/slurm-apptainer: each chain's group asks for one GPU (sbatch --gpus=1), not one
    per frame; probe, extraction, scenes, encode and coherence ask for none."""
    _, _, result = chains_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    assert_gpu_requests(slurm_jobs(result, slurm_env), slurm_env)


def test_the_chains_of_one_video_run_at_the_same_time(chains_on_slurm, slurm_env):
    """sacct's start and end times: the two chains' jobs overlap. One node with several CPUs
    with two GPUs stands in for several GPU nodes here: this shows that the chains are submitted
    and run independently, each with a GPU of its own, not how they spread over several
    nodes."""
    _, _, result = chains_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    first, second = chain_jobs(slurm_jobs(result, slurm_env)).values()
    assert ran_at_once(first, second), (first, second)
    assert first["AllocCPUS"] == second["AllocCPUS"] == "1"  # --cores 1: two fit on the node


def test_each_chain_loads_the_model_once(chains_on_slurm):
    """All the frames of a chain are dreamed by one model server: one torch import and model load
    per chain."""
    project, _, result = chains_on_slurm
    assert result.returncode == 0, result.output[-8000:]
    for frames in (range(1, CUT), range(CUT, FRAMES + 1)):
        logs = [(project / f"work/demo/logs/dream/{n:06d}.png.log").read_text() for n in frames]
        servers = {
            match
            for log in logs
            for match in re.findall(r"dreamed by the model server: pid (\d+)", log)
        }
        assert len(servers) == 1, logs


def test_a_resumed_run_submits_each_chain_once(chains_on_slurm, slurm_env):
    """Every frame step made again after the checkpoints (extraction, scenes) have run: the case
    in which Snakemake 9 submitted frames of split groups twice over (snakemake/snakemake#1628,
    snakemake-executor-plugin-slurm#253)."""
    project, profile, _ = chains_on_slurm
    delete_frame_steps(project)
    result = run_on_slurm(project, profile, slurm_env, CHAINED, [VIDEO])
    assert result.returncode == 0, result.output[-8000:]
    jobs = slurm_jobs(result, slurm_env)
    chains = chain_jobs(jobs)
    SUMMARY.append(
        f"SLURM resumed blended run, a group per chain: {result.seconds:.0f} s,"
        f" chains from first start to last end {span(chains.values()):.0f} s"
    )
    assert set(chains) == CHAIN_GROUPS and not frame_step_jobs(jobs), jobs
    assert submissions(jobs) == 3, jobs  # the two chains and the encode
    assert_gpu_requests(jobs, slurm_env)
    first, second = chains.values()
    assert ran_at_once(first, second), (first, second)


def test_one_group_for_the_whole_video_runs_its_chains_in_one_job(chains_on_slurm, slurm_env):
    """The same resumed run with every frame step of the video in one group: one job dreams both
    chains, one after the other. Its wall time goes to the summary beside the run with a group per
    chain; timings are printed, not asserted."""
    project, profile, _ = chains_on_slurm
    delete_frame_steps(project)
    result = run_on_slurm(project, profile, slurm_env, CHAINED, [VIDEO, *ONE_GROUP])
    assert result.returncode == 0, result.output[-8000:]
    jobs = slurm_jobs(result, slurm_env)
    groups = [job for job in jobs if job["Comment"].startswith("rule_dream_")]
    SUMMARY.append(
        f"SLURM resumed blended run, one group: {result.seconds:.0f} s,"
        f" the group from start to end {span(groups):.0f} s"
    )
    assert [job["State"] for job in groups] == ["COMPLETED"], jobs
    assert not chain_jobs(jobs) and not frame_step_jobs(jobs), jobs
    assert submissions(jobs) == 2, jobs  # the group and the encode
    assert_gpu_requests(jobs, slurm_env)  # one GPU for the whole video's group


def test_a_blended_video_runs_whole_inside_one_allocation(slurm_env, tmp_path):
    """What the README recommends for long blend or zoom chains: the workflow itself is one batch
    job with one GPU (sbatch --gpus=1 runs snakemake on the node, the frames run there as local
    jobs through one model server), so no per-frame submission and no frame groups are needed."""
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
                "--gpus=1",
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
    dreamed_beyond_noise(project)
    sacct = subprocess.run(
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            f"--jobs={submitted.stdout.strip().split(';')[0]}",
            "--format=JobName,State,AllocTRES",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    ((name, state, tres),) = [line.split("|") for line in sacct.stdout.splitlines()]
    assert (name, state, gpus(tres)) == ("dreamflow-whole", "COMPLETED", 1), sacct.stdout
