"""The model server of the dream step: real processes, real sockets, real torch, tiny frames;
and who and what it serves: only its own user, through a directory only that user can reach, and
only files of the workflow it serves. Real users (as root) and a real full file system too.

Each test gets its own server directory (DREAMFLOW_SERVER_DIR) and kills the servers left in it.
Its servers wait LONG_IDLE seconds for work: a status request is not work, and a short idle time
would let a server leave between two requests of a test on a slow machine. The one test of the
idle exit sets a short time itself.
"""

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from dreamflow import __version__
from dreamflow.config import resolve_dream
from dreamflow.images import write_rgb
from dreamflow.job import BlendSettings
from dreamflow.plan import job_shell_prefix
from dreamflow.serving import client, paths, protocol
from helpers import (
    LONG_IDLE,
    TINY_DREAM,
    assert_no_traceback,
    defaults,
    dream_frame,
    dreamed_by_server,
    finish,
    has_exited,
    is_dreamflow_server,
    job_settings,
    kill_servers,
    pattern_array,
    run_dreamflow,
)

SHORT_IDLE = 2  # seconds, for the test of the idle exit


def status(cwd, env):
    return protocol.ping(paths.server_paths(cwd=str(cwd), env=env).socket)


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def server_dir(tmp_path):
    directory = tmp_path / "servers"
    yield directory
    kill_servers(directory)


@pytest.fixture
def env(server_dir, frames):
    values = {
        **os.environ,
        "DREAMFLOW_SERVER_DIR": str(server_dir),
        "DREAMFLOW_SERVER_IDLE": str(LONG_IDLE),
        "DREAMFLOW_SERVER_ROOTS": str(frames),  # the test's working directory is another
    }
    values.pop("DREAMFLOW_SERVER", None)
    return values


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


def test_first_request_starts_a_server_and_the_next_reuse_it(tmp_path, env, frames, in_process):
    expected = in_process("plain", "1.png")
    assert status(tmp_path, env) is None
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    first = status(tmp_path, env)
    assert dreamed_by_server(result) == first["pid"]
    assert first["cwd"] == str(tmp_path) and first["ready"]
    assert first["idle"] == LONG_IDLE
    assert (tmp_path / "a.png").read_bytes() == expected

    # two at once, as Snakemake runs them: the same server, both right
    processes = [
        dream_frame(tmp_path, env, frames / "1.png", tmp_path / f"b{n}.png", wait=False)
        for n in (1, 2)
    ]
    for process in processes:
        result = finish(process)
        assert result.returncode == 0, result.stderr
        assert dreamed_by_server(result) == first["pid"]
    for n in (1, 2):
        assert (tmp_path / f"b{n}.png").read_bytes() == expected
    again = status(tmp_path, env)
    assert again["pid"] == first["pid"]
    assert again["served"] == 3


def test_a_server_leaves_when_idle_and_removes_its_socket(tmp_path, env, frames):
    env = {**env, "DREAMFLOW_SERVER_IDLE": str(SHORT_IDLE)}
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    pid = dreamed_by_server(result)
    socket_path = paths.server_paths(cwd=str(tmp_path), env=env).socket
    # how long it takes is not the point: that it leaves by itself, with nothing asking it to
    wait_until(lambda: not os.path.exists(socket_path), 120, "the idle server to remove its socket")
    wait_until(lambda: not is_dreamflow_server(pid), 60, "the idle server to exit")
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
    blend = BlendSettings(defaults("blend", mode="constant")).text()
    write_rgb(pattern_array(seed=7), tmp_path / "dreamed-1.png")
    texture = pattern_array(36, 67, seed=1)  # a pan: the flow finds reliable pixels
    write_rgb(texture[:, :64], tmp_path / "raw-1.png")
    write_rgb(texture[:, 3:], tmp_path / "raw-2.png")
    outputs = {}
    for where, environment in (("server", env), ("local", {**env, "DREAMFLOW_SERVER": "off"})):
        folder = tmp_path / where
        flow = run_dreamflow(
            "flow",
            "--previous-frame",
            tmp_path / "raw-1.png",
            "--frame",
            tmp_path / "raw-2.png",
            "-o",
            folder / "flow.npz",
            cwd=tmp_path,
            env=environment,
        )
        assert flow.returncode == 0, flow.stderr
        start = run_dreamflow(
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
            cwd=tmp_path,
            env=environment,
        )
        assert start.returncode == 0, start.stderr
        dream = run_dreamflow(
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
            cwd=tmp_path,
            env=environment,
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
    blend = BlendSettings(defaults("blend", mode="constant", flow="none", carry="sideways")).text()
    result = run_dreamflow(
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
        cwd=tmp_path,
        env=env,
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


def write_to_pipe(path, data, timeout):
    """Write `data` into the named pipe `path` once a reader has opened it."""

    def opened():
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading yet
                raise
            return None

    handle = wait_until(opened, timeout, f"a reader of {path}")
    os.set_blocking(handle, True)
    with os.fdopen(handle, "wb") as pipe:
        pipe.write(data)


def test_a_server_killed_mid_request_leaves_no_partial_frame_and_the_client_retries(
    tmp_path, env, frames, in_process
):
    expected = in_process("plain", "1.png")
    # the frame is a named pipe, written only once the first server is dead: until then its
    # request cannot finish, however fast or slow the machine is
    frame = tmp_path / "frame.png"
    os.mkfifo(frame)
    output = tmp_path / "out" / "a.png"
    process = dream_frame(tmp_path, env, frame, output, wait=False)
    server = wait_until(
        lambda: (s := status(tmp_path, env)) and s["ready"] and s["requests"] == 1 and s,
        120,
        "the request to reach the server",
    )
    os.kill(server["pid"], signal.SIGKILL)
    # exited, its end of the pipe closed: a writer now can only reach the next server
    wait_until(lambda: has_exited(server["pid"]), 10, "the killed server to exit")
    assert process.poll() is None and not output.exists()

    # the client starts another server and sends the frame again: that server reads the pipe
    write_to_pipe(frame, (frames / "1.png").read_bytes(), 120)
    result = finish(process)
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == status(tmp_path, env)["pid"] != server["pid"]
    assert output.read_bytes() == expected
    assert os.listdir(output.parent) == ["a.png"]

    # and it serves the next request
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "b.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.png").read_bytes() == expected


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
    warning, dreamed = result.stderr.splitlines()
    assert warning.startswith(
        "dreamflow: warning: no usable model server directory (cannot create the server directory "
    )
    assert dreamed.startswith("dreamflow: dreamed in-process: ")
    assert (tmp_path / "a.png").read_bytes() == in_process("plain", "1.png")


def test_a_job_in_a_per_rule_container_starts_no_server_but_uses_a_running_one(
    tmp_path, env, frames, in_process
):
    """Its container ends with it, taking the image from under a server started inside."""
    contained = {**env, client.PER_RULE_CONTAINER: "1"}
    result = dream_frame(tmp_path, contained, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    note, dreamed = result.stderr.splitlines()
    assert note == client.PER_RULE_NOTE
    assert "no model server started: this job runs in a container of its own" in note
    assert dreamed.startswith("dreamflow: dreamed in-process: ")
    assert status(tmp_path, contained) is None
    assert (tmp_path / "a.png").read_bytes() == in_process("plain", "1.png")

    started = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "b.png")
    assert started.returncode == 0, started.stderr
    result = dream_frame(tmp_path, contained, frames / "1.png", tmp_path / "c.png")
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == dreamed_by_server(started)
    assert (tmp_path / "c.png").read_bytes() == in_process("plain", "1.png")


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
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    # noticed when it exited: after the start timeout the note would say it did not answer
    assert "the server exited at start with status 3" in result.stderr
    assert (tmp_path / "a.png").read_bytes() == in_process("plain", "1.png")
    assert not list(server_dir.glob("*.sock"))


def test_a_loaded_model_is_reused_only_for_the_same_settings_threads_and_files(tmp_path):
    from dreamflow.serving.server import dreamer_key

    guide = tmp_path / "guide.png"
    write_rgb(pattern_array(), guide)
    settings = resolve_dream(defaults("dream", **TINY_DREAM, device="cpu", guide=str(guide)))
    key = dreamer_key(settings, 1)
    assert dreamer_key(json.loads(json.dumps(settings)), 1) == key
    assert dreamer_key({**settings, "seed": 1}, 1) != key
    assert dreamer_key(settings, 2) != key  # guide features are computed with the request's threads
    os.utime(guide, ns=(0, 0))  # a changed guide (or weights) file is loaded again
    assert dreamer_key(settings, 1) != key


def test_the_server_keeps_the_two_models_used_last_and_serve_status_shows_it_running_on(
    tmp_path, env, frames, server_dir
):
    stopped = run_dreamflow("serve", "--status", cwd=tmp_path, env=env)
    assert stopped.returncode == 1
    (line,) = stopped.stderr.splitlines()
    assert line.startswith("dreamflow: error: no model server for this directory"), line
    assert not server_dir.exists() or not list(server_dir.glob("*.pid"))  # none started

    # three settings, then the first again (no longer loaded) and the third (still loaded)
    pids = set()
    for seed in (1, 2, 3, 1, 3):
        result = dream_frame(
            tmp_path,
            env,
            frames / "1.png",
            tmp_path / f"{seed}.png",
            settings=job_settings(seed=seed),
        )
        assert result.returncode == 0, result.stderr
        pids.add(dreamed_by_server(result))
    (pid,) = pids
    log = paths.server_paths(cwd=str(tmp_path), env=env).log
    with open(log) as handle:
        loads = [line for line in handle if f"[{pid}] loaded " in line]
    assert len(loads) == 4, loads

    shown = run_dreamflow("serve", "--status", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    figures = json.loads(shown.stdout)
    assert (figures["pid"], figures["cwd"], figures["models"]) == (pid, str(tmp_path), 2)
    assert (figures["served"], figures["dreaming"]) == (5, 0)
    # --status alone leaves the server running: it still answers, and serves the next frame
    assert status(tmp_path, env)["pid"] == pid and is_dreamflow_server(pid)
    result = dream_frame(tmp_path, env, frames / "2.png", tmp_path / "next.png")
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == pid


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
            request = {"op": "dream", "cwd": str(tmp_path), "version": __version__, "job": message}
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


# ---- who and what the server serves, and what it leaves behind ----

NOBODY = 65534
SERVE = [sys.executable, "-m", "dreamflow", "serve"]
root_only = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")


def start_server(cwd, env, log):
    """A server started by hand in `cwd` (so without a lock of a client's), its output in `log`;
    a long idle time: the test stops it."""
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [*SERVE, "--idle", "600"], cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    wait_until(lambda: status(cwd, env), 60, "the server to answer")
    return process


def stop_server(process):
    if process.poll() is None:
        process.kill()
        process.wait()


def serve_error(cwd, env):
    """The one line `dreamflow serve` (which checks the server directory first) ends with."""
    result = subprocess.run(SERVE, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    return line


# ---- the server directory ----


@pytest.mark.parametrize("mode", [0o750, 0o701, 0o705, 0o770])
def test_a_server_directory_others_can_enter_is_refused_with_the_chmod_to_run(
    tmp_path, env, server_dir, mode
):
    server_dir.mkdir(mode=0o700)
    server_dir.chmod(mode)
    line = serve_error(tmp_path, env)
    assert line == (
        f"dreamflow: error: server directory {server_dir} has mode {mode:04o}, not 0700: "
        f"chmod 700 {server_dir}"
    )
    assert os.listdir(server_dir) == []


def test_a_frame_job_with_a_refused_server_directory_says_why_and_dreams_in_process(
    tmp_path, env, server_dir, frames, in_process
):
    server_dir.mkdir(mode=0o700)
    server_dir.chmod(0o750)
    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    warning, dreamed = result.stderr.splitlines()
    assert warning == (
        "dreamflow: warning: no usable model server directory (server directory "
        f"{server_dir} has mode 0750, not 0700: chmod 700 {server_dir}): every job loads its "
        "model itself; set DREAMFLOW_SERVER_DIR=/tmp/dreamflow-$USER, a directory of your own "
        "that the jobs can reach"
    )
    assert dreamed.startswith("dreamflow: dreamed in-process: ")
    assert (tmp_path / "a.png").read_bytes() == in_process("plain", "1.png")


def test_a_symlinked_server_directory_is_refused_not_followed(tmp_path, env, server_dir):
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    target.chmod(0o700)  # a good directory: only the link is wrong
    server_dir.symlink_to(target)
    line = serve_error(tmp_path, env)
    assert line == f"dreamflow: error: server directory {server_dir} is a symbolic link: remove it"
    assert os.listdir(target) == []


def test_a_file_in_the_server_directory_s_place_is_refused(tmp_path, env, server_dir):
    server_dir.write_text("")
    line = serve_error(tmp_path, env)
    assert line == f"dreamflow: error: server directory {server_dir} is not a directory: remove it"


@root_only
def test_a_server_directory_of_another_user_is_refused(tmp_path, env, server_dir):
    server_dir.mkdir(mode=0o700)
    server_dir.chmod(0o700)
    os.chown(server_dir, NOBODY, NOBODY)
    line = serve_error(tmp_path, env)
    assert line == (
        f"dreamflow: error: server directory {server_dir} belongs to uid {NOBODY}, not to this "
        f"user (uid 0): remove it or set DREAMFLOW_SERVER_DIR to a directory of your own"
    )


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_the_server_directory_is_made_0700_whatever_the_umask(tmp_path, umask):
    directory = tmp_path / "deep" / "servers"
    server = paths.ServerPaths(str(directory), "0123456789abcdef")
    old = os.umask(umask)
    try:
        paths.prepare_dir(server)
    finally:
        os.umask(old)
    assert directory.stat().st_mode & 0o7777 == 0o700
    paths.prepare_dir(server)  # and it is accepted as it is


# ---- the peer's user ----


def connect_as(uid, socket_path):
    """What a process of `uid` gets for a status request on `socket_path`: b"reply:" and the
    reply's bytes, b"closed" when the server closed the connection unanswered (a close with the
    request unread resets the connection), or b"error:" and the connection's error."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to `uid`, ask, report through the pipe, leave at once
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(30)
                connection.connect(socket_path)
                try:
                    connection.sendall(protocol.encode({"op": protocol.STATUS}))
                    data = b""
                    while chunk := connection.recv(65536):
                        data += chunk
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
            os.write(write, b"reply:" + data if data else b"closed")
        except BaseException as error:
            os.write(write, f"error:{error}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


@root_only
def test_a_process_of_another_user_gets_no_answer_and_the_server_serves_on(tmp_path):
    # outside pytest's own temporary directory, which others cannot enter
    base = tempfile.mkdtemp(prefix="dreamflow-peer-")
    env = {**os.environ, "DREAMFLOW_SERVER_DIR": os.path.join(base, "servers")}
    env.pop("DREAMFLOW_SERVER", None)
    log = tmp_path / "server.log"
    server = None
    try:
        server = start_server(tmp_path, env, log)
        socket_path = paths.server_paths(cwd=str(tmp_path), env=env).socket
        # the mistake defended against: the directory and socket opened to everyone
        os.chmod(base, 0o711)
        os.chmod(env["DREAMFLOW_SERVER_DIR"], 0o711)
        os.chmod(socket_path, 0o777)
        assert connect_as(NOBODY, socket_path) == b"closed"
        assert status(tmp_path, env)["pid"] == server.pid  # its own user is served
        assert connect_as(0, socket_path).startswith(b'reply:{"status": "ok"')
        text = log.read_text()
        assert text.count(f"refused a connection from uid {NOBODY}: this server answers uid 0") == 1
        assert_no_traceback(text)
        assert str(tmp_path) not in text.split("refused a connection")[1]
    finally:
        if server:
            stop_server(server)
        shutil.rmtree(base)


# ---- the files a job may use ----


@pytest.fixture
def confined(tmp_path, env, frames):
    """A workflow directory `work` with a frame; beside it, outside, `other` with one too; a server
    started in `work` by hand, with no extra roots."""
    work, other = tmp_path / "work", tmp_path / "other"
    for directory in (work, other):
        directory.mkdir()
        shutil.copy(frames / "1.png", directory / "1.png")
    (work / "linked.png").symlink_to(other / "1.png")
    (work / "linked-dir").symlink_to(other)
    env = {key: value for key, value in env.items() if key != "DREAMFLOW_SERVER_ROOTS"}
    server = start_server(work, env, tmp_path / "server.log")
    yield work, other, env, server.pid
    stop_server(server)


@pytest.mark.parametrize(
    "frame, output, field",
    [
        ("../other/1.png", "a.png", "frame"),
        ("linked.png", "a.png", "frame"),
        ("1.png", "../other/a.png", "output"),
        ("1.png", "linked-dir/a.png", "output"),
        ("OTHER/1.png", "a.png", "frame"),
        ("1.png", "OTHER/a.png", "output"),
    ],
)
def test_a_job_naming_a_file_outside_the_workflow_is_refused_in_one_line(
    confined, frame, output, field
):
    work, other, env, pid = confined
    frame, output = (name.replace("OTHER", str(other)) for name in (frame, output))
    result = dream_frame(work, env, frame, output)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # no note: nothing fell back to in-process
    named = frame if field == "frame" else output
    assert line == (
        f"dreamflow: error: frame job: '{field}' {named} lies outside the directories the model "
        f"server may use ({os.path.realpath(work)}): add its directory to "
        "DREAMFLOW_SERVER_ROOTS, or set DREAMFLOW_SERVER=off"
    )
    assert sorted(os.listdir(other)) == ["1.png"] and not (work / "a.png").exists()
    assert status(work, env)["pid"] == pid


def test_blend_and_flow_jobs_naming_files_outside_are_refused(confined):
    from dreamflow.job import BlendJob, BlendSettings, FlowJob

    work, other, env, pid = confined
    socket_path = paths.server_paths(cwd=str(work), env=env).socket
    blend = BlendSettings(defaults("blend", mode="constant", flow="dis"))
    jobs = [
        (
            "blend",
            BlendJob(2, "b.png", blend, "1.png", "../other/1.png", "1.png", "f"),
            "'previous'",
        ),
        ("blend", BlendJob(2, "b.png", blend, "1.png", "1.png", "1.png", "/"), "'flow'"),
        ("flow", FlowJob("../other/f.npz", "1.png", "1.png", "dis"), "'output'"),
        ("flow", FlowJob("f.npz", "1.png", str(other / "1.png"), "dis"), "'previous_frame'"),
    ]
    for op, job, field in jobs:
        reply = protocol.exchange(socket_path, protocol.job_request(op, str(work), job), 120)
        assert reply["status"] == "error", reply
        assert f"{field} " in reply["message"] and "lies outside" in reply["message"], reply
    assert sorted(os.listdir(other)) == ["1.png"]
    assert sorted(os.listdir(work)) == ["1.png", "linked-dir", "linked.png"]
    assert status(work, env)["pid"] == pid


def test_files_inside_the_workflow_and_in_the_extra_roots_are_served(confined, frames, in_process):
    work, other, env, pid = confined
    expected = in_process("plain", "1.png")
    result = dream_frame(work, env, "1.png", "out/a.png")
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == pid
    assert (work / "out" / "a.png").read_bytes() == expected

    # another server: the extra roots are part of a server's identity
    roots = {**env, "DREAMFLOW_SERVER_ROOTS": os.pathsep.join([str(other), "/nonexistent"])}
    result = dream_frame(work, roots, "linked.png", "linked-dir/a.png")
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == status(work, roots)["pid"] != pid
    assert (other / "a.png").read_bytes() == expected

    relative = dream_frame(work, {**env, "DREAMFLOW_SERVER_ROOTS": "other"}, "1.png", "b.png")
    assert relative.returncode == 1
    assert relative.stderr == (
        "dreamflow: error: environment variable DREAMFLOW_SERVER_ROOTS: 'other' is not an "
        "absolute path\n"
    )


def test_the_job_shell_prefix_names_work_and_results_directories_outside_the_workflow(
    tmp_path, monkeypatch
):
    here, elsewhere = tmp_path / "here", tmp_path / "else {where}"
    here.mkdir()
    elsewhere.mkdir()
    (here / "results").symlink_to(elsewhere)
    monkeypatch.chdir(here)
    python = "/nonexistent/bin/python"
    assert job_shell_prefix(python, False, ("work", str(here / "x"))) == "set -euo pipefail; "
    prefix = job_shell_prefix(python, False, ("work", "results", str(elsewhere)))

    def roots(**env):
        # as Snakemake runs it: the prefix formatted like the command it precedes, then bash
        script = prefix.format() + 'printf %s "$DREAMFLOW_SERVER_ROOTS"'
        environment = {"PATH": os.environ["PATH"], **env}
        return subprocess.run(
            ["bash", "-c", script], env=environment, capture_output=True, text=True, check=True
        ).stdout

    assert roots() == str(elsewhere)
    assert roots(DREAMFLOW_SERVER_ROOTS="/mine") == f"{elsewhere}{os.pathsep}/mine"


# ---- tidying the server directory ----


def dead_socket(path):
    """A socket file nothing listens on, as a killed server leaves it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))


def test_a_starting_server_removes_the_files_of_servers_gone_and_keeps_the_others(
    tmp_path, env, server_dir, frames
):
    from dreamflow.serving.client import stop

    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live = start_server(live_dir, env, tmp_path / "live.log")
    try:
        live_key = paths.server_paths(cwd=str(live_dir), env=env).key
        week = time.time() - 8 * 86400
        dead, fresh, held = "0" * 16, "1" * 16, "2" * 16
        dead_socket(server_dir / f"{dead}.sock")
        for name in (f"{dead}.pid", f"{dead}.lock", f"{dead}.log", f"{dead}.log.old"):
            (server_dir / name).write_text("99999999\n")
        os.utime(server_dir / f"{dead}.log", (week, week))
        os.utime(server_dir / f"{dead}.log.old", (week, week))
        (server_dir / f"{fresh}.log").write_text("a failed start, read by its user\n")
        (server_dir / f"{fresh}.pid").write_text("99999999\n")
        dead_socket(server_dir / f"{held}.sock")
        (server_dir / "notes.txt").write_text("not a server's\n")
        os.utime(server_dir / "notes.txt", (week, week))
        # a client starting the server of `held` holds its lock
        handle = os.open(server_dir / f"{held}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            # the server stays (LONG_IDLE) until the test tells it to leave
            result = dream_frame(tmp_path, env, frames / "1.png", "a.png")
            assert result.returncode == 0, result.stderr
            own = paths.server_paths(cwd=str(tmp_path), env=env)
            # the line its tidying ends with: 4 files of `dead`, the pid file of `fresh`
            wait_until(
                lambda: "removed 5 files of servers gone" in open(own.log).read(),
                60,
                "the server to tidy up",
            )
            assert set(os.listdir(server_dir)) == {
                *(f"{live_key}{end}" for end in (".sock", ".pid")),
                *(f"{own.key}{end}" for end in (".sock", ".pid", ".lock", ".log")),
                f"{fresh}.log",
                f"{held}.sock",
                f"{held}.lock",
                "notes.txt",
            }
        finally:
            os.close(handle)

        # leaving, it removes its own files but its log, and those of `held`, now unlocked
        pid = dreamed_by_server(result)
        assert stop(own.socket)
        wait_until(lambda: not is_dreamflow_server(pid), 60, "the server to leave")
        assert set(os.listdir(server_dir)) == {
            f"{live_key}.sock",
            f"{live_key}.pid",
            f"{own.key}.log",
            f"{fresh}.log",
            "notes.txt",
        }
        assert status(live_dir, env)["pid"] == live.pid
    finally:
        stop_server(live)


def open_file_of(pid, path):
    """The inode of `path` as process `pid` has it open, or None."""
    directory = f"/proc/{pid}/fd"
    for fd in os.listdir(directory):
        try:
            if os.readlink(f"{directory}/{fd}").removesuffix(" (deleted)") == str(path):
                return os.stat(f"{directory}/{fd}").st_ino
        except OSError:
            continue
    return None


def test_a_removed_lock_file_never_lets_two_clients_start_two_servers(
    tmp_path, env, server_dir, frames, in_process
):
    server = paths.server_paths(cwd=str(tmp_path), env=env)
    paths.prepare_dir(server)
    # the tidying of another server: it holds the lock file, removes it, then lets go
    handle = os.open(server.lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(handle, fcntl.LOCK_EX)
    old = os.fstat(handle).st_ino
    try:
        first = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png", wait=False)
        wait_until(lambda: open_file_of(first.pid, server.lock), 60, "a client on the lock")
        os.unlink(server.lock)
        # a client arriving now makes a new lock file, takes it and starts a server
        second = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "b.png", wait=False)
        wait_until(
            lambda: open_file_of(second.pid, server.lock) not in (None, old),
            60,
            "the second client on a new lock file",
        )
    finally:
        os.close(handle)  # the first client now holds the old file's lock
    for process, name in ((first, "a.png"), (second, "b.png")):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert dreamed_by_server(subprocess.CompletedProcess([], 0, stdout, stderr))
        assert (tmp_path / name).read_bytes() == in_process("plain", "1.png")
    starts = [
        line
        for line in open(server.log).read().splitlines()
        if "] serving " in line or "another server already answers" in line
    ]
    assert len(starts) == 1, starts


# ---- a full disk ----


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs inside the test's directory, filled to the last byte."""
    mount = tmp_path / "full"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {result.stderr.strip()}")
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            with pytest.raises(OSError) as full:
                while True:
                    filler.write(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_error_line_from_the_server_which_serves_the_next_job(
    tmp_path, env, frames, in_process, full_disk
):
    assert dream_frame(tmp_path, env, frames / "1.png", tmp_path / "a.png").returncode == 0
    pid = status(tmp_path, env)["pid"]
    result = dream_frame(tmp_path, env, frames / "1.png", "full/b.png")
    assert result.returncode == 1
    assert result.stderr == "dreamflow: error: cannot write full/b.png: No space left on device\n"
    assert os.listdir(full_disk) == ["filler"]

    result = dream_frame(tmp_path, env, frames / "1.png", tmp_path / "c.png")
    assert result.returncode == 0, result.stderr
    assert dreamed_by_server(result) == pid
    assert (tmp_path / "c.png").read_bytes() == in_process("plain", "1.png")


def test_an_os_error_that_reaches_the_server_names_the_file_it_is_about(
    tmp_path, full_disk, monkeypatch
):
    from dreamflow.job import BlendJob, BlendSettings
    from dreamflow.serving.server import LASTING_ERRORS, _os_error_message

    settings = BlendSettings(defaults("blend", flow="none"))
    job = BlendJob(2, "full/b.png", settings, "in/1.png", "in/../0.png")
    with pytest.raises(OSError) as full:  # a write cut short: the error names no file
        with open(full_disk / "more", "wb", buffering=0) as handle:
            handle.write(b"\0" * 4096)
    assert full.value.errno in LASTING_ERRORS and full.value.filename is None
    assert _os_error_message(job, full.value) == (
        "cannot write full/b.png: No space left on device"
    )
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "0.png"))
    monkeypatch.chdir(tmp_path)
    assert _os_error_message(job, denied) == "cannot read in/../0.png: Permission denied"
