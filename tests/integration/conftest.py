"""The fixtures of the integration tier: real Podman and a real SLURM cluster, brought up for the
session. What its tests share besides fixtures is in integration/services.py.
"""

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO
from integration.services import SUMMARY, run_podman, unavailable

BASE_IMAGE = (
    "localhost/dreamflow-base:bookworm"  # made by setup-podman.sh: no registry is reachable
)
# DREAMFLOW_TEST_IMAGE: another tag, so that sessions on one machine do not replace each other's
IMAGE = os.environ.get("DREAMFLOW_TEST_IMAGE", "localhost/dreamflow:test")
# The build's pip reaches the index only with the host's CA bundle (TLS is intercepted here) and
# finds torch in the local wheel folders that the host's pip configuration names; each is mounted
# read-only into the build when it exists, so containers/Dockerfile itself stays a plain public
# build.
BUILD_MOUNTS = [
    (path, path)
    for path in (
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pip.conf",
        "/etc/xdg/pip",
        "/opt/wheels",
        "/opt/pypi",
        "/opt/pypi-more",
    )
]
BUILD_MOUNTS.append((str(Path.home() / ".config" / "pip"), "/root/.config/pip"))


@pytest.fixture(scope="session")
def podman():
    """`run_podman`, once podman and the local base image are there."""
    setup = "run `bash tests/integration/setup-podman.sh` (as root) to install it"
    if shutil.which("podman") is None:
        unavailable(f"podman is not installed: {setup}")
    if run_podman("image", "exists", BASE_IMAGE).returncode != 0:
        unavailable(f"the base image {BASE_IMAGE} is missing: {setup}")
    return run_podman


@pytest.fixture(scope="session")
def build_image(podman):
    """build_image(tag, *options, timeout=3600, must_succeed=True, local_wheels=True):
    containers/Dockerfile built on the local Debian 12 base with `podman build options...`, as a
    reference (tag); the build's output is returned too. Its wall time and the image's size go
    into the session's summary; a failed build fails the test unless must_succeed is false. With
    local_wheels false the build gets the CA bundle only, not the pip configuration that names the
    local wheel folders."""

    def build(tag, *options, timeout=3600, must_succeed=True, local_wheels=True):
        mounts = [
            f"--volume={host}:{inside}:ro"
            for host, inside in BUILD_MOUNTS[: None if local_wheels else 1]
            if os.path.exists(host)
        ]
        # by digest, as the Dockerfile's default names its base
        digest = podman("image", "inspect", "--format", "{{.Digest}}", BASE_IMAGE, check=True)
        base = f"{BASE_IMAGE.rsplit(':', 1)[0]}@{digest.stdout.strip()}"
        start = time.monotonic()
        result = podman(
            "build",
            f"--build-arg=BASE_IMAGE={base}",
            *mounts,
            *options,
            "--file",
            REPO / "containers" / "Dockerfile",
            "--tag",
            tag,
            REPO,
            timeout=timeout,
        )
        seconds = time.monotonic() - start
        if not must_succeed:
            return tag, result.stdout + result.stderr
        assert result.returncode == 0, (
            f"podman build failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
        )
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag, check=True).stdout)
        SUMMARY.append(f"{tag}: podman build {seconds:.0f} s, image size {size / 1e9:.2f} GB")
        return tag, result.stdout + result.stderr

    return build


@pytest.fixture(scope="session")
def dreamflow_image(build_image):
    """The image of containers/Dockerfile built on the local Debian 12 base, as a reference (tag).

    Built every session, as CI does from nothing: Podman's layer cache makes a rebuild after
    source-only changes take seconds, and the tests never run an image older than the checkout.
    """
    return build_image(IMAGE)[0]


def pytest_terminal_summary(terminalreporter):
    for line in SUMMARY:
        terminalreporter.write_line(line)


SLURM_CLUSTER = Path(__file__).with_name("slurm_cluster.sh")
SLURM_TOOLS = [
    "munged",
    "mariadbd",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
]


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    """A real one-node SLURM cluster for the session (tests/integration/slurm_cluster.sh): munge,
    mariadb, slurmdbd, slurmctld and slurmd on this machine, partition `debug`, account
    `dreamflow-test`. Yields the environment that reaches it (SLURM_CONF set); torn down afterwards,
    even when a test failed, leaving no job and no daemon behind."""
    setup = "run `bash tests/integration/setup-slurm.sh` (as root) to install it"
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable(f"SLURM is not installed (no {', '.join(missing)}): {setup}")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        unavailable(f"snakemake-executor-plugin-slurm is not installed: {setup}")
    if os.geteuid() != 0:
        unavailable("the test SLURM cluster runs its daemons as root")
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "DREAMFLOW_SLURM_DIR": str(state),
        "SLURM_CONF": str(state / "etc" / "slurm.conf"),
    }
    start = time.monotonic()
    try:
        up = subprocess.run(
            ["bash", SLURM_CLUSTER, "up"], env=env, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, f"the SLURM cluster did not come up:\n{up.stdout}\n{up.stderr}"
        SUMMARY.append(f"SLURM cluster up in {time.monotonic() - start:.0f} s")
        yield env
    finally:
        subprocess.run(["bash", SLURM_CLUSTER, "down"], env=env, timeout=300)
