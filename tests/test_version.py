"""The version handshake and the server directory warning, with real processes: the settings the
workflow writes for each dream and blend job name the dreamflow that wrote them, and a job of
another dreamflow refuses them in one line; a model server serves only clients of its own
version; a run whose jobs find no usable server directory says so once.

Another version is a copy of this package with another __version__, put first on the jobs'
PYTHONPATH: what a container image built from another checkout is to the host's workflow.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from dreamflow import __version__
from dreamflow.images import write_rgb
from dreamflow.job import VERSION_KEY, BlendSettings
from dreamflow.serving import paths, protocol
from helpers import (
    LONG_IDLE,
    REPO,
    Workflow,
    defaults,
    dream_frame,
    dreamed_by_server,
    job_settings,
    kill_servers,
    make_video,
    pattern_array,
    run_dreamflow,
    tiny_config,
)

OTHER = "0.0.1"  # a version this checkout never was


def refusal(source_version, job_version=__version__):
    """The start of the one line a job of `job_version` gives for settings of `source_version`."""
    return (
        f"dreamflow: error: --settings: written by dreamflow {source_version}, but this job "
        f"runs dreamflow {job_version} (from "
    )


def written_by(settings_text, version):
    """The settings `settings_text` as another version would have written them (None: as a
    dreamflow without the handshake did)."""
    settings = json.loads(settings_text)
    if version is None:
        del settings[VERSION_KEY]
    else:
        settings[VERSION_KEY] = version
    return json.dumps(settings)


@pytest.fixture(scope="module")
def other_package(tmp_path_factory):
    """A copy of this package that says it is dreamflow OTHER: the folder to put on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("other")
    shutil.copytree(REPO / "workflow" / "dreamflow", folder / "dreamflow")
    init = folder / "dreamflow" / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{__version__}"' in text
    init.write_text(text.replace(f'"{__version__}"', f'"{OTHER}"'))
    return folder


@pytest.fixture
def env(tmp_path):
    values = {
        **os.environ,
        "DREAMFLOW_SERVER_DIR": str(tmp_path / "servers"),
        "DREAMFLOW_SERVER_IDLE": str(LONG_IDLE),
    }
    values.pop("DREAMFLOW_SERVER", None)
    yield values
    kill_servers(tmp_path / "servers")


def with_package(env, folder):
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")])),
    }


# ---- the jobs ----


def test_dreamflow_says_its_version():
    result = subprocess.run(
        [sys.executable, "-m", "dreamflow", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, f"dreamflow {__version__}\n")


@pytest.mark.parametrize("version", [OTHER, None])
def test_a_dream_job_refuses_settings_of_another_version_in_one_line(tmp_path, env, version):
    write_rgb(pattern_array(), tmp_path / "frame.png")
    settings = written_by(job_settings(), version)
    result = dream_frame(
        tmp_path, env, tmp_path / "frame.png", tmp_path / "out.png", settings=settings
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    written = f"dreamflow {version}" if version else "a dreamflow that names no version"
    assert line.startswith(refusal(version).replace(f"dreamflow {version}", written, 1)), line
    assert line.endswith(
        "rebuild the image from the checkout that runs the workflow (containers/README.md), or "
        f"run the workflow from a checkout of dreamflow {__version__}"
    )
    assert not (tmp_path / "out.png").exists()
    assert not (tmp_path / "servers").exists()  # refused before any server was asked


def test_a_blend_job_refuses_settings_of_another_version_in_one_line(tmp_path, env):
    for number in (1, 2):
        write_rgb(pattern_array(seed=number), tmp_path / f"{number}.png")
    settings = BlendSettings(defaults("blend", mode="constant", flow="none")).text()
    result = run_dreamflow(
        *["blend", "--number", "2", "--frame", "2.png", "--previous", "1.png"],
        *["--settings", written_by(settings, OTHER), "-o", "start.png"],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(refusal(OTHER)), line
    assert not (tmp_path / "start.png").exists()


def test_a_flow_job_refuses_a_workflow_of_another_version_in_one_line(tmp_path, env):
    for number in (1, 2):
        write_rgb(pattern_array(seed=number), tmp_path / f"{number}.png")
    result = run_dreamflow(
        *["flow", "--previous-frame", "1.png", "--frame", "2.png"],
        *["--written-by", OTHER, "-o", "flow.npz"],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(refusal(OTHER).replace("--settings", "--written-by")), line
    assert not (tmp_path / "flow.npz").exists()


@pytest.mark.workflow
def test_a_run_whose_jobs_are_another_version_fails_in_its_dream_and_flow_jobs_naming_both(
    tmp_path, other_package
):
    """The host's checkout writes the jobs, the jobs' dreamflow (an image's) runs them."""
    flow = Workflow(tmp_path)
    make_video(tmp_path / "tiny.mp4", frames=2, audio=False)
    flow.write_config(tiny_config("tiny.mp4", blend={"mode": "constant", "flow": "dis"}))
    result = flow.run("--keep-going", env=with_package(os.environ, other_package))
    assert result.returncode != 0, result.output
    assert not list(flow.path("work", "tiny", "dreamed").glob("*.png"))
    expected = refusal(__version__, OTHER) + str(other_package)
    logs = flow.path("work", "tiny", "logs")
    for step, option in (("dream", "--settings"), ("flow", "--written-by")):
        (log,) = (logs / step).iterdir()
        assert log.read_text().startswith(expected.replace("--settings", option)), log
    lines = [line for line in result.output.splitlines() if line.startswith("dreamflow: input")]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(
        f"dreamflow: input tiny failed: {expected[len('dreamflow: error: ') :]}"
    )


# ---- the model server ----


def test_a_client_of_another_version_gets_its_own_server_not_the_running_one(tmp_path, env):
    """An upgrade in place: the same package folder, now another version, the old server still
    up; nothing else of the identity differs."""
    package = tmp_path / "package"
    shutil.copytree(REPO / "workflow" / "dreamflow", package / "dreamflow")
    env = with_package(env, package)
    write_rgb(pattern_array(), tmp_path / "frame.png")
    before = dream_frame(tmp_path, env, tmp_path / "frame.png", tmp_path / "a.png")
    init = package / "dreamflow" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{OTHER}"'))
    settings = written_by(job_settings(), OTHER)
    after = dream_frame(
        tmp_path, env, tmp_path / "frame.png", tmp_path / "b.png", settings=settings
    )
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert dreamed_by_server(after) != dreamed_by_server(before)
    assert len(list((tmp_path / "servers").glob("*.sock"))) == 2


def test_a_server_refuses_a_request_of_another_version_and_serves_on(tmp_path, env):
    write_rgb(pattern_array(), tmp_path / "frame.png")
    first = dream_frame(tmp_path, env, tmp_path / "frame.png", tmp_path / "a.png")
    assert first.returncode == 0, first.stderr
    socket_path = paths.server_paths(cwd=str(tmp_path), env=env).socket
    request = {
        "op": protocol.DREAM,
        "cwd": str(tmp_path),
        "version": OTHER,
        "job": {"number": 1, "output": "x.png", "frame": "frame.png", "threads": 1},
    }
    reply = protocol.exchange(socket_path, request, 60)
    assert reply == {
        "status": protocol.UNAVAILABLE,
        "message": f"the model server runs dreamflow {__version__}, the job dreamflow {OTHER}",
    }
    assert not (tmp_path / "x.png").exists()
    assert protocol.ping(socket_path)  # it serves its own version on


# ---- the server directory ----


def test_a_job_with_no_usable_server_directory_warns_naming_it_and_the_fix(tmp_path, env):
    """An XDG_RUNTIME_DIR that does not exist on this node (here: cannot, under a file)."""
    write_rgb(pattern_array(), tmp_path / "frame.png")
    (tmp_path / "a-file").write_text("")
    runtime = tmp_path / "a-file" / "run"
    env = {key: value for key, value in env.items() if key != "DREAMFLOW_SERVER_DIR"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    result = dream_frame(tmp_path, env, tmp_path / "frame.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    warning, dreamed = result.stderr.splitlines()
    assert warning == (
        f"dreamflow: warning: no usable model server directory (cannot create the server "
        f"directory {runtime}/dreamflow: Not a directory): every job loads its model itself; "
        "set DREAMFLOW_SERVER_DIR=/tmp/dreamflow-$USER, a directory of your own that the jobs "
        "can reach"
    )
    assert dreamed.startswith("dreamflow: dreamed in-process: ")


@pytest.mark.workflow
def test_a_run_without_a_usable_server_directory_says_so_once_and_dreams_every_frame(tmp_path):
    flow = Workflow(tmp_path)
    make_video(tmp_path / "tiny.mp4", frames=3, audio=False)
    flow.write_config(tiny_config("tiny.mp4"))
    (tmp_path / "a-file").write_text("")
    directory = tmp_path / "a-file" / "servers"
    result = flow.run(env={"DREAMFLOW_SERVER_DIR": str(directory)})
    assert result.returncode == 0, result.output
    assert len(flow.dreamed_in_run(result)) == 3
    warnings = [
        line
        for line in result.output.splitlines()
        if line.startswith("dreamflow: warning: no usable model server directory")
    ]
    assert len(warnings) == 1, result.output
    assert warnings[0].startswith(
        "dreamflow: warning: no usable model server directory (cannot create the server "
        f"directory {directory}: "
    )
    logs = flow.path("work", "tiny", "logs", "dream")
    assert all(warnings[0] in log.read_text() for log in logs.iterdir()), os.listdir(logs)
    assert re.search(r"DREAMFLOW_SERVER_DIR=/tmp/dreamflow-\$USER", warnings[0])


# ---- reruns ----


class CheckoutWorkflow(Workflow):
    """A project run by the Snakefile of another checkout."""

    def __init__(self, directory, checkout):
        super().__init__(directory)
        self.checkout = checkout

    def command(self, *args):
        command = super().command(*args)
        command[command.index(str(REPO / "Snakefile"))] = str(self.checkout / "Snakefile")
        return command


@pytest.mark.workflow
def test_an_upgraded_checkout_reruns_the_dreams_blends_and_flows_not_the_extraction(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for part in ("Snakefile", "workflow", "envs", "profiles"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, checkout / part, symlinks=True)
        else:
            shutil.copy2(source, checkout / part)
    flow = CheckoutWorkflow(tmp_path / "project", checkout)
    flow.directory.mkdir()
    make_video(flow.directory / "tiny.mp4", frames=2, audio=False)
    flow.write_config(tiny_config("tiny.mp4", blend={"mode": "constant", "flow": "dis"}))
    assert flow.run().returncode == 0
    init = checkout / "workflow" / "dreamflow" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{OTHER}"'))
    result = flow.run("--dry-run")
    assert result.returncode == 0, result.output
    assert flow.dreamed_in_run(result) == [1, 2]
    assert (
        flow.ran_in_run(result, "Blending") == flow.ran_in_run(result, "Optical flow") == ["000002"]
    )
    assert "rule extract_frames" not in result.output
    # the way to keep what the old version made
    kept = flow.run("--dry-run", "--rerun-triggers", "mtime", "input")
    assert "Nothing to be done" in kept.output, kept.output
