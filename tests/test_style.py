"""The code is formatted and linted as CI and contributors expect: ruff for Python, snakefmt for
the Snakefile and rules, and Snakemake's own linter, with the settings in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

BIN = Path(sys.executable).parent


def run(*command):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("check", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_python_passes_ruff(check):
    result = run(str(BIN / "ruff"), *check, ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefile_and_rules_pass_snakefmt():
    result = run(str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_finds_nothing():
    result = run(sys.executable, "-m", "snakemake", "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
