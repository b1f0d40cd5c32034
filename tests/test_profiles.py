"""The Snakemake profiles under profiles/: real Snakemake options, the keys the README promises of
the workstation profile (profiles/default, which Snakemake loads beside the Snakefile by itself),
and the two SLURM profiles in sync.

No cluster: each profile is read by Snakemake's own argument parser, which rejects a key that is
not one of its options (or of an installed plugin's, such as the SLURM executor) and a value of the
wrong type; and a dry run through profiles/slurm (real Snakemake and ffmpeg, marked `workflow`)
shows the group the rules give each chain. tests/integration/test_slurm.py runs both SLURM
profiles on a real SLURM cluster.
"""

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_argument_parser

from helpers import Workflow, make_video, tiny_config

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
# what profiles/slurm-apptainer adds to profiles/slurm; everything else must be the same
APPTAINER_KEYS = {"software-deployment-method", "apptainer-args"}


def profile(name):
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["default", "slurm", "slurm-apptainer"])
def test_every_key_is_a_snakemake_option(name):
    parser = get_argument_parser(profiles=[str(PROFILES / name)])
    try:  # resources, groups and the like are parsed here too
        parser.parse_args([])
    except SystemExit:  # argparse has printed which key or value it refused
        pytest.fail(f"profiles/{name}/config.yaml is not valid for this Snakemake (see above)")


def test_the_default_profile_sets_what_the_readme_promises():
    # the behaviour behind each key is tested end to end (test_faults.py, test_workflow.py);
    # this holds the keys themselves in place
    default = profile("default")
    assert default["scheduler"] == "greedy"
    assert default["show-failed-logs"] is True  # a failed job's log is printed
    assert default["keep-going"] is True  # one failed input does not stop the others
    assert default["rerun-incomplete"] is True  # a killed run continues without --unlock
    assert default["cores"] == "all"


def test_slurm_apptainer_is_slurm_plus_the_apptainer_keys():
    slurm, apptainer = profile("slurm"), profile("slurm-apptainer")
    assert {key: value for key, value in apptainer.items() if key not in APPTAINER_KEYS} == slurm
    assert set(apptainer) - set(slurm) == APPTAINER_KEYS
    assert apptainer["software-deployment-method"] == "apptainer"
    assert "--nv" in apptainer["apptainer-args"].split()


def apptainer_arguments(env):
    """The arguments `apptainer exec` gets from profiles/slurm-apptainer in a job whose environment
    is `env`: the profile read by Snakemake's own parser (on the login node), then expanded by the
    shell that runs the job's command (on the node)."""
    parsed = get_argument_parser(profiles=[str(PROFILES / "slurm-apptainer")]).parse_args([])
    shown = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {parsed.apptainer_args}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.splitlines()


def test_slurm_apptainer_binds_and_passes_the_torch_cache_and_the_server_directory():
    """--env keeps TORCH_HOME and DREAMFLOW_SERVER_DIR under --cleanenv; with nothing exported
    they are torch's default cache of the user's home (inside, ~ is the workflow directory) and a
    directory of the user's own under the bound /tmp. CUDA_VISIBLE_DEVICES, which SLURM sets for
    a GPU job, is kept too, and left alone where it is not set."""
    assert apptainer_arguments({"HOME": "/home/ann", "USER": "ann"}) == [
        "--nv",
        "--bind",
        "/tmp",
        "--bind",
        "/home/ann/.cache/torch",
        "--env",
        "TORCH_HOME=/home/ann/.cache/torch",
        "--env",
        "DREAMFLOW_SERVER_DIR=/tmp/dreamflow-ann",
    ]
    assert apptainer_arguments({"HOME": "/home/ann", "XDG_CACHE_HOME": "/cache"})[3:7] == [
        "--bind",
        "/cache/torch",
        "--env",
        "TORCH_HOME=/cache/torch",
    ]
    exported = {
        "TORCH_HOME": "/shared/torch cache",
        "DREAMFLOW_SERVER_DIR": "/tmp/servers",
        "CUDA_VISIBLE_DEVICES": "2",
    }
    assert apptainer_arguments(exported)[3:] == [
        "--bind",
        "/shared/torch cache",
        "--env",
        "TORCH_HOME=/shared/torch cache",
        "--env",
        "DREAMFLOW_SERVER_DIR=/tmp/servers",
        "--env",
        "CUDA_VISIBLE_DEVICES=2",
    ]


def test_slurm_profiles_request_a_gpu_for_the_dream_rules_only():
    for name in ("slurm", "slurm-apptainer"):
        resources = profile(name)["set-resources"]
        assert {rule for rule, values in resources.items() if values.get("gpu")} == {
            "dream_frame",
            "sweep_layer",
        }
        assert "gpu" not in profile(name)["default-resources"]


def test_slurm_profiles_leave_the_frame_groups_to_the_rules_and_send_the_rest_as_arrays():
    """The rules give each chain its group (chain_group in workflow/rules/common.smk); a profile's
    `groups` would override it with one group per rule. Frame jobs in no chain go out as job
    arrays, which plugin 2.8.0 submits only when nothing caps the jobs that are ready
    (snakemake-executor-plugin-slurm#473), and only through sbatch --wrap (as a script, every task
    runs the first task's job)."""
    for name in ("slurm", "slurm-apptainer"):
        settings = profile(name)
        assert not {"groups", "group-components"} & set(settings)
        assert set(settings["slurm-array-jobs"].split(",")) == {"dream_frame", "flow", "crossfade"}
        assert settings["jobs"] == "unlimited"
        count, _, timespan = settings["max-jobs-per-timespan"].partition("/")
        assert int(count) >= 100_000 and timespan == "1s"
        assert not settings.get("slurm-pass-command-as-script")
        assert 2 <= settings["slurm-array-limit"] <= 50  # a task's command is some 2 KB


def dry_run_jobs(output):
    """{group: [job messages]} of a dry run's output; jobs in no group under None."""
    jobs, group = {}, None
    for line in output.splitlines():
        started = re.match(r"\S.* Group job (\S+) ", line)
        if started:
            group = started.group(1)
            continue
        job = re.match(r"(\s*)Job \d+: (.*)", line)
        if job:
            jobs.setdefault(group if job.group(1) else None, []).append(job.group(2))
        elif line and not line[0].isspace():
            group = None
    return jobs


@pytest.mark.workflow
def test_a_slurm_dry_run_groups_each_chain_and_nothing_else(tmp_path):
    """Eight frames blended in two segments (1-5, and 4-8 whose first two frames overlap the
    first): a group per segment with its flows, blends and dreams; the flow of frame 5, which both
    segments' blends read, and the two crossfades go out on their own. A dry run without a
    cluster profile builds no groups (its time to build them grows steeply with a chain)."""
    flow = Workflow(tmp_path)
    make_video(tmp_path / "clip.mp4", frames=8)
    blend = {"mode": "constant", "max_chain": 5, "overlap": 2}
    flow.write_config(tiny_config("clip.mp4", blend=blend, scenes={"cuts": "none"}))
    extracted = flow.run("work/tiny/scenes.json")  # the checkpoints: then the frame jobs are known
    assert extracted.returncode == 0, extracted.output

    result = flow.run("--dry-run", "--profile", str(PROFILES / "slurm"))
    assert result.returncode == 0, result.output
    jobs = {group: sorted(messages) for group, messages in dry_run_jobs(result.output).items()}

    def steps(verb, *nodes):
        return [f"{verb} frame {node} of tiny" for node in nodes]

    assert jobs["chain-tiny-000001"] == sorted(
        steps("Blending", "000002", "000003", "000004", "000005")
        + steps("Dreaming", "000001", "000002", "000003", "000004", "000005")
        + steps("Optical flow of", "000002", "000003", "000004")
    )
    assert jobs["chain-tiny-000004"] == sorted(
        steps("Blending", "000005-lead", "000006", "000007", "000008")
        + steps("Dreaming", "000004-lead", "000005-lead", "000006", "000007", "000008")
        + steps("Optical flow of", "000006", "000007", "000008")
    )
    alone = [message for message in jobs[None] if "frame" in message]
    assert sorted(alone) == steps("Crossfading", "000004", "000005") + steps(
        "Optical flow of", "000005"
    )

    local = flow.run("--dry-run")
    assert local.returncode == 0, local.output
    assert "Group job" not in local.output and "Crossfading frame 000004" in local.output
