"""The model server of the dream step: real processes, real sockets, real torch, tiny frames.

Each test gets its own server directory (DREAMFLOW_SERVER_DIR) and kills the servers left in it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from dreamflow.config import resolve_dream
from dreamflow.images import write_rgb
from dreamflow.job import settings_text
from dreamflow.serving import paths, protocol
from helpers import defaults, pattern_array

IDLE = 2  # seconds a test server waits for work before it exits
TINY = {"octaves": 1, "iterations": 2, "jitter": 4, "layers": ["block4"], "device": "cpu"}


def job_settings(**dream):
    return settings_text(
        {
            "dream": resolve_dream(defaults("dream", **{**TINY, **dream})),
            "zoom": None,
            "jpg_quality": 95,
        }
    )


def run_step(cwd, env, *arguments):
    """Run a `dreamflow` step command (flow, blend) the way its workflow job does."""
    return subprocess.run(
        [sys.executable, "-m", "dreamflow", *map(str, arguments)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def dream_frame(
    cwd, env, frame, output, number=1, previous=None, settings=None, threads=1, wait=True
):
    command = [
        sys.executable,
        "-m",
        "dreamflow",
        "dream-frame",
        "--frame",
        str(frame),
        "--number",
        str(number),
        "--settings",
        settings or job_settings(),
        "--threads",
        str(threads),
        "-o",
        str(output),
    ]
    if previous:
        command += ["--previous", str(previous)]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return finish(process) if wait else process


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def status(cwd, env):
    return protocol.ping(paths.server_paths(cwd=str(cwd), env=env).socket)


def is_dreamflow_server(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False  # exited, not yet reaped
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"\0-m\0dreamflow\0serve\0" in handle.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_servers(directory):
    for pid_file in directory.glob("*.pid") if directory.is_dir() else []:
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if is_dreamflow_server(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server_dir(tmp_path):
    directory = tmp_path / "servers"
    yield directory
    kill_servers(directory)


@pytest.fixture
def env(server_dir):
    values = {
        **os.environ,
        "DREAMFLOW_SERVER_DIR": str(server_dir),
        "DREAMFLOW_SERVER_IDLE": str(IDLE),
    }
    values.pop("DREAMFLOW_SERVER", None)
    return values


def dreamed_by_server(result):
    """The pid of the server that the client's one log line names (and that line is all it
    wrote)."""
    (line,) = result.stderr.splitlines()
    match = re.fullmatch(
        rf"dreamflow: dreamed by the model server: pid (\d+), python {re.escape(sys.executable)}, "
        rf"host {re.escape(socket.gethostname())}",
        line,
    )
    assert match, line
    return int(match.group(1))


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    directory = tmp_path_factory.mktemp("frames")
    for number in (1, 2):
        write_rgb(pattern_array(seed=number), directory / f"{number}.png")
    write_rgb(pattern_array(180, 320, seed=3), directory / "large.png")
    return directory


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, frames):
    """Frames dreamed with the server off, once per module: what every server result must equal."""
    directory = tmp_path_factory.mktemp("in-process")
    env = {
        **os.environ,
        "DREAMFLOW_SERVER": "off",
        "DREAMFLOW_SERVER_DIR": str(directory / "servers"),
    }
    cache = {}

    def reference(name, frame, number=1, previous=None, settings=None, threads=1):
        if name not in cache:
            result = dream_frame(
                directory,
                env,
                frames / frame,
                directory / f"{name}.png",
                number,
                previous and cache[previous],
                settings,
                threads,
            )
            assert result.returncode == 0, result.stderr
            assert result.stderr.startswith("dreamflow: dreamed in-process: pid "), result.stderr
            cache[name] = directory / f"{name}.png"
        return cache[name].read_bytes()

    yield reference
    assert not (directory / "servers").exists()  # off means no server, nor even its directory


def test_first_request_starts_a_server_the_next_reuse_it_and_it_leaves_when_idle(
    tmp_path, env, frames, in_process
):
    expected = in_process(
        "plain", "1.png"
    )  # first: a server waits only IDLE seconds for the next request
    assert status(tmp_path, env) is None
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    first = status(tmp_path, env)
    assert dreamed_by_server(result) == first["pid"]
    assert first["cwd"] == str(tmp_path) and first["ready"]
    assert (tmp_path / "a.png").read_bytes() == expected

    # two at once, as Snakemake runs them: the same server, both right
    processes = [
        dream_frame(tmp_path, env, frames / "1.png", tmp_path / f"b{n}.png", wait=False)
        for n in (1, 2)
    ]
    for process in processes:
        result = finish(process)
        assert result.returncode == 0, result.stderr
    for n in (1, 2):
        assert (tmp_path / f"b{n}.png").read_bytes() == expected
    again = status(tmp_path, env)
    assert again["pid"] == first["pid"]
    assert again["served"] == 3

    socket_path = paths.server_paths(cwd=str(tmp_path), env=env).socket
    wait_until(
        lambda: not os.path.exists(socket_path), IDLE + 10, "the idle server to remove its socket"
    )
    wait_until(lambda: not is_dreamflow_server(first["pid"]), 10, "the idle server to exit")
    assert status(tmp_path, env) is None


def test_a_killed_server_is_restarted_by_the_next_request(tmp_path, env, frames, in_process):
    assert dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png").returncode == 0
    old = status(tmp_path, env)["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not is_dreamflow_server(old), 10, "the killed server to die")

    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "b.png")
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == status(tmp_path, env)["pid"] != old
    assert (tmp_path / "b.png").read_bytes() == in_process("plain", "1.png")


def test_flow_and_blend_jobs_go_through_the_server_and_give_the_in_process_bytes(tmp_path, env):
    """A chained frame: the flow of its raw pair, its start image, and its dream, made by the
    server and then again with the server off."""
    blend = settings_text(
        {
            "blend": defaults("blend", mode="constant"),
            "start": "image",
            "seed": 0,
            "jpg_quality": 95,
        }
    )
    write_rgb(pattern_array(seed=7), tmp_path / "dreamed-1.png")
    texture = pattern_array(36, 67, seed=1)  # a pan: the flow finds reliable pixels
    write_rgb(texture[:, :64], tmp_path / "raw-1.png")
    write_rgb(texture[:, 3:], tmp_path / "raw-2.png")
    outputs = {}
    for where, environment in (("server", env), ("local", {**env, "DREAMFLOW_SERVER": "off"})):
        folder = tmp_path / where
        flow = run_step(
            tmp_path,
            environment,
            "flow",
            "--previous-frame",
            tmp_path / "raw-1.png",
            "--frame",
            tmp_path / "raw-2.png",
            "-o",
            folder / "flow.npz",
        )
        assert flow.returncode == 0, flow.stderr
        start = run_step(
            tmp_path,
            environment,
            "blend",
            "--number",
            2,
            "--frame",
            tmp_path / "raw-2.png",
            "--previous",
            tmp_path / "dreamed-1.png",
            "--previous-frame",
            tmp_path / "raw-1.png",
            "--flow",
            folder / "flow.npz",
            "--settings",
            blend,
            "-o",
            folder / "start.png",
        )
        assert start.returncode == 0, start.stderr
        dream = run_step(
            tmp_path,
            environment,
            "dream-frame",
            "--frame",
            folder / "start.png",
            "--prepared",
            "--number",
            2,
            "--settings",
            job_settings(),
            "--threads",
            1,
            "-o",
            folder / "2.png",
        )
        assert dream.returncode == 0, dream.stderr
        verbs = [result.stderr.split(" by the model server")[0] for result in (flow, start, dream)]
        if where == "server":
            assert verbs == ["dreamflow: flow computed", "dreamflow: blended", "dreamflow: dreamed"]
            assert status(tmp_path, env)["served"] == 1  # one dream; flow and blend are steps
        else:
            assert "in-process" in start.stderr and "in-process" in flow.stderr
        outputs[where] = [(folder / name).read_bytes() for name in ("start.png", "2.png")]
    assert outputs["server"] == outputs["local"]
    assert outputs["server"][0] != (tmp_path / "raw-2.png").read_bytes()


def test_a_blend_job_with_a_wrong_setting_gets_a_one_line_error_from_the_server(
    tmp_path, env, frames
):
    blend = settings_text(
        {"blend": defaults("blend", mode="constant", flow="none", carry="sideways")}
    )
    result = run_step(
        tmp_path,
        env,
        "blend",
        "--number",
        2,
        "--frame",
        frames / "2.png",
        "--previous",
        frames / "1.png",
        "--settings",
        blend,
        "-o",
        tmp_path / "start.png",
    )
    assert result.returncode == 1
    assert result.stderr.startswith("dreamflow: error: config key blend.carry: 'sideways'")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "start.png").exists()
    assert status(tmp_path, env)  # the server answered, and lives on


def test_concurrent_requests_with_different_thread_counts_each_give_their_in_process_bytes(
    tmp_path, env, frames, in_process
):
    # big enough to overlap: dreams with different thread counts running at once change each other's
    # bytes
    settings = job_settings(octaves=2, iterations=6, jitter=16, layers=["block10"])
    expected = {
        threads: in_process(f"large-{threads}", "large.png", settings=settings, threads=threads)
        for threads in (1, 2)
    }
    jobs = [(1, "a"), (2, "a"), (1, "b"), (2, "b")]
    processes = [
        dream_frame(
            tmp_path,
            env,
            frames / "large.png",
            tmp_path / f"{threads}{name}.png",
            settings=settings,
            threads=threads,
            wait=False,
        )
        for threads, name in jobs
    ]
    for process in processes:
        result = finish(process)
        assert result.returncode == 0, result.stderr
    assert status(tmp_path, env)["served"] == 4
    for threads, name in jobs:
        assert (tmp_path / f"{threads}{name}.png").read_bytes() == expected[threads], (
            f"{threads}{name}"
        )


def test_two_working_directories_get_two_servers(tmp_path, env, frames, in_process):
    directories = [tmp_path / "one", tmp_path / "two"]
    processes = []
    for directory in directories:
        directory.mkdir()
        processes.append(
            dream_frame(directory, env, frames / "1.png", "out/a.png", wait=False)
        )  # relative
    for process in processes:
        result = finish(process)
        assert result.returncode == 0, result.stderr
    servers = [status(directory, env) for directory in directories]
    assert servers[0]["pid"] != servers[1]["pid"]
    assert [server["cwd"] for server in servers] == [str(directory) for directory in directories]
    for directory in directories:
        assert (directory / "out" / "a.png").read_bytes() == in_process("plain", "1.png")


def test_a_server_killed_mid_request_leaves_no_partial_frame_and_the_client_retries(
    tmp_path, env, frames, in_process
):
    settings = job_settings(
        octaves=3, iterations=30, jitter=16, layers=["block10"]
    )  # a few seconds
    expected = in_process("large", "large.png", settings=settings)
    output = tmp_path / "out" / "large.png"
    process = dream_frame(
        tmp_path, env, frames / "large.png", output, settings=settings, wait=False
    )
    server = wait_until(
        lambda: (s := status(tmp_path, env)) and s["dreaming"] and s, 120, "the dream to start"
    )
    time.sleep(0.5)
    os.kill(server["pid"], signal.SIGKILL)
    wait_until(lambda: not is_dreamflow_server(server["pid"]), 10, "the killed server to die")
    assert not output.exists()

    result = finish(process)  # the client started another server and sent the frame again
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == status(tmp_path, env)["pid"] != server["pid"]
    assert output.read_bytes() == expected
    assert os.listdir(output.parent) == ["large.png"]

    output.unlink()
    result = dream_frame(tmp_path, env, frames / "large.png", output, settings=settings)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == expected


def test_a_user_error_comes_back_through_the_server_as_one_line(tmp_path, env, frames):
    assert dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png").returncode == 0
    server = status(tmp_path, env)
    result = dream_frame(
        tmp_path,
        env,
        frames / "1.png",
        tmp_path / "bad.png",
        settings=job_settings(layers=["block4:999"]),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no note: the server answered, nothing fell back
    assert lines[0].startswith("dreamflow: error: channel 999 of layer block4 is out of range")
    assert not (tmp_path / "bad.png").exists()
    assert status(tmp_path, env)["pid"] == server["pid"]  # the server lives on

    off = dream_frame(
        tmp_path,
        {**env, "DREAMFLOW_SERVER": "off"},
        frames / "1.png",
        tmp_path / "bad.png",
        settings=job_settings(layers=["block4:999"]),
    )
    assert (off.returncode, off.stderr) == (1, result.stderr)


def test_falls_back_to_in_process_when_the_server_directory_cannot_be_made(
    tmp_path, env, frames, in_process
):
    (tmp_path / "a-file").write_text("not a directory\n")
    env = {**env, "DREAMFLOW_SERVER_DIR": str(tmp_path / "a-file" / "servers")}
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    assert "cannot create the server directory" in result.stderr
    assert "running in-process" in result.stderr
    assert (tmp_path / "a.png").read_bytes() == in_process("plain", "1.png")


def test_falls_back_to_in_process_when_the_server_exits_at_start(
    tmp_path, env, server_dir, frames, in_process
):
    # the client passes its environment to the server it starts: this makes that server exit at once
    site = tmp_path / "site"
    site.mkdir()
    # os._exit: a SystemExit while Python imports site is a fatal error (status 1)
    (site / "sitecustomize.py").write_text(
        "import os, sys\nif 'serve' in sys.argv:\n    os._exit(3)\n"
    )
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))}
    started = time.monotonic()
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60  # noticed at once, not after the start timeout
    assert "the server exited at start with status 3" in result.stderr
    assert (tmp_path / "a.png").read_bytes() == in_process("plain", "1.png")
    assert not list(server_dir.glob("*.sock"))


def test_a_loaded_model_is_reused_only_for_the_same_settings_threads_and_files(tmp_path):
    from dreamflow.serving.server import dreamer_key

    guide = tmp_path / "guide.png"
    write_rgb(pattern_array(), guide)
    settings = resolve_dream(defaults("dream", **TINY, guide=str(guide)))
    key = dreamer_key(settings, 1)
    assert dreamer_key(json.loads(json.dumps(settings)), 1) == key
    assert dreamer_key({**settings, "seed": 1}, 1) != key
    assert dreamer_key(settings, 2) != key  # guide features are computed with the request's threads
    os.utime(guide, ns=(0, 0))  # a changed guide (or weights) file is loaded again
    assert dreamer_key(settings, 1) != key


def test_a_malformed_job_gets_a_one_line_error_naming_its_field_and_the_server_lives_on(
    tmp_path, env, frames, in_process
):
    from dreamflow.job import FrameJob, JobSettings

    command = [sys.executable, "-m", "dreamflow", "serve"]  # by hand: this directory's socket
    # a long idle time: this test stops the server itself, however slow the machine is
    server = subprocess.Popen(
        [*command, "--idle", "600"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pid = wait_until(
            lambda: (s := status(tmp_path, env)) and s["pid"], 30, "the server to answer"
        )
        assert pid == server.pid
        socket_path = paths.server_paths(cwd=str(tmp_path), env=env).socket
        job = FrameJob(
            1,
            str(tmp_path / "bad.png"),
            JobSettings.from_text(job_settings()),
            1,
            frame=str(frames / "1.png"),
        ).to_message()
        settings = job["settings"]
        cases = [
            ({**job, "number": 0}, "'number'"),
            ({**job, "colour": "red"}, "unknown fields colour"),
            (
                {key: value for key, value in job.items() if key != "output"},
                "missing fields output",
            ),
            (
                {**job, "settings": {**settings, "dream": {**settings["dream"], "octaves": 0}}},
                "config key dream.octaves",
            ),
            (
                {**job, "settings": {**settings, "blend": {"mode": "fade"}}},
                "unknown keys blend",
            ),
            (
                {**job, "settings": {**settings, "zoom": {"frames": 3, "factor": -1}}},
                "config key zoom.factor",
            ),
        ]
        for message, expected in cases:
            request = {"op": "dream", "cwd": str(tmp_path), "job": message}
            reply = protocol.exchange(socket_path, request, 60)
            assert reply["status"] == "error", (message, reply)
            assert expected in reply["message"] and "\n" not in reply["message"], reply
            assert status(tmp_path, env)["pid"] == pid  # the server lives on
        assert not (tmp_path / "bad.png").exists()

        # through the command line too: one line, no fallback, from the same server
        result = dream_frame(
            tmp_path, env, frames / "1.png", tmp_path / "bad.png", settings=job_settings(octaves=0)
        )
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("dreamflow: error: config key dream.octaves: 0 is less than"), line
        assert status(tmp_path, env)["pid"] == pid

        result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "good.png")
        assert result.returncode == 0, result.stderr
        assert dreamed_by_server(result) == pid
        assert (tmp_path / "good.png").read_bytes() == in_process("plain", "1.png")

        stopped = subprocess.run(
            command + ["--stop"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["pid"] == pid
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_client_imports_no_torch_numpy_pil_yaml_or_jsonschema():
    code = (
        "import sys; from dreamflow.serving import client; from dreamflow import job; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'numpy', 'PIL', 'yaml', 'jsonschema')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_device_slots_let_at_most_that_many_dreams_onto_one_gpu_and_do_not_limit_the_cpu():
    import threading

    import torch

    from dreamflow.serving.server import DeviceSlots

    slots = DeviceSlots(2)
    inside = {"cuda:0": 0, "cuda:1": 0, "cpu": 0}
    most = dict(inside)
    lock = threading.Lock()
    release = threading.Event()

    def dream(device):
        with slots.held(device):
            with lock:
                inside[str(device)] += 1
                most[str(device)] = max(most[str(device)], inside[str(device)])
            release.wait(5)
            with lock:
                inside[str(device)] -= 1

    devices = [torch.device("cuda", 0)] * 4 + [torch.device("cuda", 1)] * 3
    devices += [torch.device("cpu")] * 4
    threads = [threading.Thread(target=dream, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(inside.values()) == 2 + 2 + 4, 10, "the dreams let in")
    time.sleep(0.2)  # a slot leaking now would show as a third dream on a GPU
    assert inside == {"cuda:0": 2, "cuda:1": 2, "cpu": 4}
    release.set()
    for thread in threads:
        thread.join(10)
    assert most == {"cuda:0": 2, "cuda:1": 2, "cpu": 4}
    assert inside == {"cuda:0": 0, "cuda:1": 0, "cpu": 0}


def test_the_device_slots_come_from_the_environment_and_a_bad_value_is_one_line(
    tmp_path, env, frames
):
    result = dream_frame(
        tmp_path,
        {**env, "DREAMFLOW_SERVER_DEVICE_SLOTS": "3"},
        frames / "1.png",
        tmp_path / "out.png",
    )
    assert result.returncode == 0, result.stderr
    assert status(tmp_path, env)["device_slots"] == 3
    serve = subprocess.run(
        [sys.executable, "-m", "dreamflow", "serve", "--socket", str(tmp_path / "other.sock")],
        env={**env, "DREAMFLOW_SERVER_DEVICE_SLOTS": "two"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 1
    assert serve.stderr == (
        "dreamflow: error: environment variable DREAMFLOW_SERVER_DEVICE_SLOTS: 'two' is not a "
        "whole number of at least 1\n"
    )
