"""The workstation profile, profiles/default, which Snakemake loads beside the Snakefile by
itself: what the README says it sets. The behaviour behind each key is tested end to end
elsewhere (test_faults.py, test_workflow.py); this holds the keys themselves in place."""

import yaml

from helpers import REPO


def test_the_default_profile_sets_what_the_readme_promises():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile["scheduler"] == "greedy"
    assert profile["show-failed-logs"] is True  # a failed job's log is printed
    assert profile["keep-going"] is True  # one failed input does not stop the others
    assert profile["rerun-incomplete"] is True  # a killed run continues without --unlock
    assert profile["cores"] == "all"
