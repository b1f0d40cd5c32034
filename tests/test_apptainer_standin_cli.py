"""The test-only Apptainer adapter (tests/adapters/apptainer): its command line and the environment
it builds, checked without Podman. tests/integration/test_apptainer_adapter.py runs it for real."""

import importlib.util
import os
import subprocess
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
from packaging.version import Version
from snakemake.deployment.singularity import Singularity

ADAPTER = Path(__file__).resolve().parent / "adapters" / "apptainer"
_loader = SourceFileLoader("apptainer_adapter", str(ADAPTER))
adapter = importlib.util.module_from_spec(
    importlib.util.spec_from_loader("apptainer_adapter", _loader)
)
_loader.exec_module(adapter)


def run_adapter(*args, env=None):
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APPTAINER", "SINGULARITY"))
    }
    return subprocess.run(
        [str(ADAPTER), *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_its_version_line_is_one_snakemake_accepts():
    result = run_adapter("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("apptainer version ")
    assert Singularity().parseversion(result.stdout.strip()) >= Version("1.0.0")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["exec", "--fakeroot", "docker://localhost/x", "true"],
            {},
            "unknown or not emulated option '--fakeroot'",
        ),
        (
            ["exec", "--writable-tmpfs", "docker://localhost/x", "true"],
            {},
            "unknown or not emulated option '--writable-tmpfs'",
        ),
        (
            ["--debug", "exec", "docker://localhost/x", "true"],
            {},
            "unknown or not emulated global option '--debug'",
        ),
        (
            ["build", "x.sif", "x.def"],
            {},
            "unknown or not emulated command 'build'; the adapter emulates exec, pull and version",
        ),
        (
            ["exec", "--bind", "/tmp:/data:nodev", "docker://localhost/x", "true"],
            {},
            "bind option 'nodev' in '/tmp:/data:nodev' is not emulated (only ro and rw)",
        ),
        (
            ["exec", "--nv=false", "docker://localhost/x", "true"],
            {},
            "option --nv takes no value (got '--nv=false')",
        ),
        (
            ["exec", "docker://localhost/x", "true"],
            {"APPTAINER_CLEANENV": "1"},
            (
                "environment variable APPTAINER_CLEANENV sets an Apptainer option the adapter does "
                "not emulate; unset it"
            ),
        ),
        (
            ["exec", "library://user/collection/image", "true"],
            {},
            (
                "cannot run 'library://user/collection/image': the adapter runs only docker:// "
                "images through Podman"
            ),
        ),
    ],
)
def test_what_it_does_not_emulate_is_refused_with_one_clear_line(args, env, message):
    result = run_adapter(*args, env=env)
    assert result.returncode == 255
    assert result.stderr == f"apptainer (test adapter): {message}\n"


def test_a_real_sif_file_is_refused(tmp_path):
    image = tmp_path / "dreamflow.sif"
    image.write_bytes(b"#!/usr/bin/env run-singularity\n" + b"\0" * 8 + b"SIF_MAGIC" + b"\0" * 64)
    result = run_adapter("exec", str(image), "true")
    assert result.returncode == 255
    assert f"{image} is a real SIF image; the adapter cannot run SIF files" in result.stderr


def test_a_missing_bind_source_is_refused(tmp_path):
    result = run_adapter("exec", "--bind", str(tmp_path / "nope"), "docker://localhost/x", "true")
    assert (
        result.stderr
        == f"apptainer (test adapter): bind source {tmp_path / 'nope'} does not exist\n"
    )


def test_binds_are_read_as_apptainer_reads_them(tmp_path):
    assert adapter.parse_binds(f"{tmp_path}:/data:ro,/var/tmp") == [
        (str(tmp_path), "/data", True),
        ("/var/tmp", "/var/tmp", False),
    ]


def request(**changes):
    return {
        "binds": [],
        "env": {},
        "cleanenv": False,
        "image": "docker://localhost/dreamflow:test",
        **changes,
    }


HOST = {
    "PATH": "/work/.venv/bin:/usr/bin",
    "LD_LIBRARY_PATH": "/host/lib",
    "HOME": "/root",
    "TERM": "xterm",
    "TORCH_HOME": "/scratch/torch",
    "VIRTUAL_ENV": "",
    "LANG": "C.UTF-8",
    "APPTAINER_BIND": "/scratch",
    "DREAMFLOW_SERVER_IDLE": "2",
    "APPTAINERENV_DREAMFLOW_SERVER_IDLE": "30",
}
IMAGE_ENV = [
    ("PATH", "=", "/opt/venv/bin:/usr/local/bin:/usr/bin"),
    ("VIRTUAL_ENV", "=", "/opt/venv"),
    ("TORCH_HOME", "=", "/opt/torch"),
]


def test_the_host_path_never_reaches_the_container_and_image_values_are_defaults():
    env = adapter.container_environment(HOST, IMAGE_ENV, request(), "/work/project")
    # the image's PATH, completed with Apptainer's default directories: no host virtualenv
    assert (
        env["PATH"] == "/opt/venv/bin:/usr/local/bin:/usr/bin:/usr/local/sbin:/usr/sbin:/sbin:/bin"
    )
    assert env["LD_LIBRARY_PATH"] == "/.singularity.d/libs"
    assert env["HOME"] == "/work/project"
    assert env["TORCH_HOME"] == "/scratch/torch"  # a host value overrides the image's default
    assert env["VIRTUAL_ENV"] == "/opt/venv"  # an empty one does not
    assert env["DREAMFLOW_SERVER_IDLE"] == "30"  # APPTAINERENV_ wins over the host's own value
    assert env["LANG"] == "C.UTF-8"
    assert "APPTAINERENV_DREAMFLOW_SERVER_IDLE" not in env
    assert env["APPTAINER_BIND"] == ""  # the runtime's list of binds, not the host's setting


def test_cleanenv_keeps_only_what_apptainer_keeps():
    env = adapter.container_environment(HOST, IMAGE_ENV, request(cleanenv=True), "/work/project")
    assert env["TORCH_HOME"] == "/opt/torch"
    assert env["LANG"] == "C"
    assert env["TERM"] == "xterm"
    assert env["DREAMFLOW_SERVER_IDLE"] == "30"  # injected on purpose, so kept


def test_path_can_be_changed_only_the_apptainer_way():
    env = adapter.container_environment(
        {**HOST, "APPTAINERENV_PREPEND_PATH": "/extra"},
        IMAGE_ENV,
        request(env={"APPEND_PATH": "/last"}),
        "/work/project",
    )
    assert env["PATH"].split(":")[0] == "/extra"
    assert env["PATH"].split(":")[-1] == "/last"
    assert "/work/.venv/bin" not in env["PATH"]
    with pytest.raises(adapter.UsageError, match="setting HOME"):
        adapter.container_environment(
            HOST, IMAGE_ENV, request(env={"HOME": "/elsewhere"}), "/work/project"
        )
