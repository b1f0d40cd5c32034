"""The binds and environment of profiles/slurm-apptainer under --cleanenv, through the test-only
Apptainer stand-in (tests/adapters/apptainer, on Podman; see test_apptainer_adapter.py for what it
emulates).

Snakemake runs each job with `apptainer exec --home <workflow directory>`: inside, ~ is the
workflow directory, so a torch cache found through ~ is not the one the host (a cluster's login
node) filled, and --cleanenv drops TORCH_HOME and DREAMFLOW_SERVER_DIR. The profile binds both and
passes them with --env, with defaults when nothing is exported; a job that reads another cache than
the workflow's fails in one line. --contain too, so that only the profile's binds bring in the
cache (under /var/tmp, outside the default binds) and /tmp.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from dreamflow.serving import client
from helpers import REPO, assert_dreamed
from integration.services import (
    ADAPTERS,
    CAT_DREAM,
    podman_env,
    profile_apptainer_args,
    project_copy,
    write_random_googlenet,
)

pytestmark = pytest.mark.integration

# what the host's environment must not lend the jobs: the tests set each themselves
UNSET = ("TORCH_HOME", "XDG_CACHE_HOME", "DREAMFLOW_SERVER_DIR", "XDG_RUNTIME_DIR")


@pytest.fixture
def host(tmp_path):
    """A user with nothing exported: a home of its own (outside /tmp, so only a bind brings its
    cache into a container under --contain) whose torch cache holds GoogLeNet, and a user name of
    its own, so that the default server directory is new."""
    home = Path(tempfile.mkdtemp(prefix="dreamflow-test-home-", dir="/var/tmp"))
    user = f"dreamflow-test-{uuid.uuid4().hex[:8]}"
    try:
        write_random_googlenet(home / ".cache" / "torch")
        env = {key: value for key, value in os.environ.items() if key not in UNSET}
        env.update(HOME=str(home), USER=str(user))
        env["PATH"] = f"{ADAPTERS}{os.pathsep}{env['PATH']}"
        yield {
            "env": podman_env(env),
            "home": home,
            "torch_home": home / ".cache" / "torch",
            "server_dir": Path(f"/tmp/dreamflow-{user}"),
        }
    finally:
        shutil.rmtree(home)
        shutil.rmtree(f"/tmp/dreamflow-{user}", ignore_errors=True)


def cat_project(root):
    """A copy of the checkout whose config.yaml has one input, the demo photo, dreamed small with
    GoogLeNet (its inputs replaced: a --configfile would add to the demo video's)."""
    project = project_copy(root / "project")
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["inputs"] = {
        "cat": {
            "path": "workflow/resources/demo/chelsea.jpg",
            "frames": {"width": 64},
            "dream": CAT_DREAM,
        }
    }
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    return project


def run_in_containers(project, image, apptainer_args, env):
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "1",
        "--sdm",
        "apptainer",
        "--apptainer-args",
        apptainer_args,
        "--config",
        f"container=docker://{image}",
    ]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=900
    )


def dream_log(project):
    (log,) = project.glob("work/cat/logs/dream/*.log")
    return log.read_text()


def test_with_nothing_exported_a_cleanenv_job_sees_the_cache_and_the_server_directory(
    host, dreamflow_image
):
    """What a job's container holds: printenv in a container started as Snakemake starts a job
    (`exec --home <workflow directory>`, the profile's arguments expanded by the job's shell)."""
    args = "--cleanenv --contain " + profile_apptainer_args()
    command = (
        f"apptainer --quiet --silent exec --home {REPO} {args} docker://{dreamflow_image} "
        "printenv TORCH_HOME DREAMFLOW_SERVER_DIR HOME"
    )
    shown = subprocess.run(
        ["bash", "-c", command], env=host["env"], capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        str(host["torch_home"]),
        str(host["server_dir"]),
        str(REPO),
    ]


def test_with_nothing_exported_a_cleanenv_run_dreams_from_the_hosts_cache(
    host, dreamflow_image, tmp_path
):
    """TORCH_HOME kept: GoogLeNet's weights came from the host's ~/.cache/torch (the check that
    the job reads the workflow's cache passed, and nothing else holds them); DREAMFLOW_SERVER_DIR
    kept: the job looked for a model server in /tmp/dreamflow-$USER (made by the job itself), not
    in the package's default, and, in a container of its own, dreamed in-process."""
    project = cat_project(tmp_path)
    args = "--cleanenv --contain " + profile_apptainer_args()
    result = run_in_containers(project, dreamflow_image, args, host["env"])
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert_dreamed(
        project / "work/cat/frames/000001.png", project / "results/cat/cat.png", CAT_DREAM
    )
    log = dream_log(project)
    assert client.PER_RULE_NOTE in log and "dreamflow: dreamed in-process" in log, log
    assert host["server_dir"].is_dir() and oct(host["server_dir"].stat().st_mode & 0o777) == "0o700"
    assert not (project / ".cache").exists()  # the job's own ~ held no cache


def test_a_job_whose_cache_is_not_the_workflows_fails_in_one_line_naming_both(
    host, dreamflow_image, tmp_path
):
    """The cache bound, but TORCH_HOME not passed with --env: under --cleanenv the job reads the
    cache of its home, the workflow directory."""
    project = cat_project(tmp_path)
    env = {**host["env"], "TORCH_HOME": str(host["torch_home"])}
    args = "--cleanenv --contain --nv --bind /tmp --bind $TORCH_HOME"
    result = run_in_containers(project, dreamflow_image, args, env)
    assert result.returncode != 0
    assert dream_log(project) == (
        f"dreamflow: error: googlenet weights: this job reads the torch cache "
        f"{project}/.cache/torch (TORCH_HOME is unset here), not {host['torch_home']}, the one "
        "the workflow fetched them into: give the jobs that cache (apptainer-args: --env "
        f"TORCH_HOME={host['torch_home']} --bind {host['torch_home']}, as "
        "profiles/slurm-apptainer does)\n"
    )
    assert not (project / "results/cat/cat.png").exists()
