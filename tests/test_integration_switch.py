"""DREAMFLOW_REQUIRE_INTEGRATION: a missing tool of the integration tier is a skip naming its setup
command, and a failure when CI sets the switch. A real pytest run of a test that finds its tool
missing, as the tier's fixtures do."""

import os
import subprocess
import sys

from helpers import REPO

MISSING = "podman is not installed: run `bash tests/integration/setup-podman.sh`"


def run_tier_test(tmp_path, switch):
    (tmp_path / "test_tool.py").write_text(
        "from integration.services import unavailable\n\n\n"
        f"def test_a_tool():\n    unavailable({MISSING!r})\n"
    )
    env = {
        key: value for key, value in os.environ.items() if key != "DREAMFLOW_REQUIRE_INTEGRATION"
    }
    if switch is not None:
        env["DREAMFLOW_REQUIRE_INTEGRATION"] = switch
    # tests/ for `integration.services`, the package for what `helpers` imports
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO / "workflow")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", "test_tool.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout


def test_without_the_switch_a_missing_tool_skips_naming_its_setup(tmp_path):
    code, output = run_tier_test(tmp_path, None)
    assert code == 0 and "1 skipped" in output and "failed" not in output, output
    assert f": {MISSING}\n" in output, output


def test_with_the_switch_a_missing_tool_fails_naming_it_and_the_switch(tmp_path):
    code, output = run_tier_test(tmp_path, "1")
    assert code == 1 and "1 failed" in output and "skipped" not in output, output
    assert f"{MISSING} (DREAMFLOW_REQUIRE_INTEGRATION=1)" in output, output
