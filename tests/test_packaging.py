"""An installed dreamflow (a wheel, as containers/Dockerfile installs it) works without the
checkout: every subpackage and the config schema are inside it."""

import shutil
import subprocess
import sys
import zipfile

from helpers import REPO


def test_a_wheel_holds_the_schema_and_works_from_its_own_files(tmp_path):
    # what containers/Dockerfile copies and installs: no build or egg-info left by an earlier build
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "workflow",
        source / "workflow",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         str(source), "--wheel-dir", str(tmp_path / "wheel")],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("dreamflow-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "installed")
    code = (
        "import dreamflow, dreamflow.serving.server;"
        "from dreamflow import config;"
        "print(dreamflow.__file__);"
        "config.validate_section('dream', config.section_defaults('dream'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path / "installed")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(tmp_path / "installed"))  # not the checkout's files
