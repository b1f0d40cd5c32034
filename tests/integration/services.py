"""What the integration tier's tests share besides fixtures: the skip-or-fail of a missing tool,
Podman with the tests' settings, a copy of the checkout, the figures of the end-of-run summary.

Every test here carries the `integration` marker. A test whose tool is not installed is skipped with
the command that installs it, unless DREAMFLOW_REQUIRE_INTEGRATION=1 (CI sets it): then a missing
tool fails the test, so CI cannot go green by skipping.

Imported as `integration.services` (pyproject.toml puts tests/ on pytest's pythonpath); the fixtures
are in integration/conftest.py.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import REPO, TINY_DREAM

# the test-only `apptainer` command (tests/adapters/apptainer), put first on PATH by its tests
ADAPTERS = REPO / "tests" / "adapters"
# a small dream of a torchvision model, whose weights the tests put in a torch cache to bind
CAT_DREAM = {**TINY_DREAM, "model": "googlenet", "layers": ["inception3b"]}

REQUIRED = os.environ.get("DREAMFLOW_REQUIRE_INTEGRATION") == "1"

# Podman reads its settings from here (runc, ulimits this VM allows), never from the machine's
# config
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")

# figures for the end-of-run summary (build wall time, image size)
SUMMARY = []


def unavailable(reason):
    """Skip, or fail when CI requires the integration tier to run."""
    if REQUIRED:
        pytest.fail(f"{reason} (DREAMFLOW_REQUIRE_INTEGRATION=1)", pytrace=False)
    pytest.skip(reason)


def podman_env(env=None):
    """`env` (default: this process's environment) with CONTAINERS_CONF set to the tests'
    settings."""
    return {**(os.environ if env is None else env), "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run_podman(*args, timeout=600, check=False):
    """Run `podman args...` with the tests' settings; output captured as text."""
    return subprocess.run(
        ["podman", *map(str, args)],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def project_copy(destination):
    """The checkout's files (tracked, plus new ones not ignored), without .venv, work/ or
    results/."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def profile_apptainer_args():
    """The apptainer-args of profiles/slurm-apptainer as Snakemake reads them: Snakemake leaves
    their ${...} to the shell that runs each job's command, which expands them in the job's
    environment (tests/test_profiles.py checks both)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm-apptainer" / "config.yaml").read_text())
    return profile["apptainer-args"]


def write_random_googlenet(torch_home):
    """The torch cache file of GoogLeNet, from random weights: hubs are unreachable here, and a
    plumbing test needs a file that loads, not a good dream."""
    import torch
    import torchvision

    from dreamflow.models import weights_cache_file

    target = Path(torch_home) / "hub" / "checkpoints" / Path(weights_cache_file("googlenet")).name
    target.parent.mkdir(parents=True)
    state = torchvision.models.googlenet(
        weights=None, aux_logits=True, init_weights=False
    ).state_dict()
    torch.save(state, target)
    return target
