"""The Snakemake profiles under profiles/: real Snakemake options, and the two SLURM profiles in
sync.

Fast, no cluster: each profile is read by Snakemake's own argument parser, which rejects a key that
is not one of its options (or of an installed plugin's, such as the SLURM executor) and a value of
the wrong type. tests/integration/test_slurm.py runs profiles/slurm on a real SLURM cluster.
"""

from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_argument_parser

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


def test_slurm_apptainer_is_slurm_plus_the_apptainer_keys():
    slurm, apptainer = profile("slurm"), profile("slurm-apptainer")
    assert {key: value for key, value in apptainer.items() if key not in APPTAINER_KEYS} == slurm
    assert set(apptainer) - set(slurm) == APPTAINER_KEYS
    assert apptainer["software-deployment-method"] == "apptainer"
    assert "--nv" in apptainer["apptainer-args"].split()


def test_slurm_profiles_request_a_gpu_for_the_dream_rules_only():
    for name in ("slurm", "slurm-apptainer"):
        resources = profile(name)["set-resources"]
        assert {rule for rule, values in resources.items() if values.get("gpu")} == {
            "dream_frame",
            "sweep_layer",
        }
        assert "gpu" not in profile(name)["default-resources"]
