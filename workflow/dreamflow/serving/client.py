"""The thin side of the dream step: hand a FrameJob to the model server of this node and directory.

This is what every frame job runs, so it imports the standard library only (no torch, numpy, PIL,
yaml or jsonschema): a frame costs a Python start-up and one request.

- The first client that finds no server starts one (`python -m dreamflow serve --socket PATH
  --idle SECONDS`, detached, in its own session, its output in a log file beside the socket),
  holding a file lock so that concurrent clients start exactly one; the others wait on the lock,
  then use that server.
- If the server dies mid-request or the connection breaks, the server is started again and the
  request retried (a few times). If no server can be had (disabled, socket directory not usable,
  the server cannot start or answer in time), the caller dreams in-process; a server directory
  that cannot be used is a warning (the user's to fix), the rest a note. Errors that are the
  user's (DreamflowError in the server) come back as DreamflowError, without a retry or a fallback.
"""

import contextlib
import os
import sys
import time

from ..errors import DreamflowError
from . import protocol
from .paths import locked, package_root, prepare_dir, server_paths, server_roots
from .protocol import PING_TIMEOUT, Broken, NoServer, Unavailable, ping

DEFAULT_IDLE = 10.0
START_TIMEOUT = 120.0  # a server binds its socket before importing torch, so this is rarely reached
MAX_STARTS = 3  # the first start plus two restarts after a server died under a request
LOG_MAX_BYTES = 1 << 20  # a log beyond this is moved to .log.old when the next server starts


# Set by the workflow for jobs that each run in a container of their own (`--sdm apptainer`): such
# a container ends with its job, and Apptainer then unmounts the image under anything the job left
# running, so a server started there could not serve the next job.
PER_RULE_CONTAINER = "DREAMFLOW_PER_RULE_CONTAINER"
PER_RULE_NOTE = (
    "dreamflow: note: no model server started: this job runs in a container of its own (--sdm "
    "apptainer), whose image leaves with the job, so each job loads its model itself; run the "
    "workflow in one container (apptainer exec IMAGE snakemake) to keep one server for all jobs"
)


class NotStarted(Unavailable):
    """No server answers, and this job may not start one (a per-rule container)."""


def may_start(env=None):
    env = os.environ if env is None else env
    return not env.get(PER_RULE_CONTAINER, "").strip()


def enabled(env=None):
    env = os.environ if env is None else env
    return env.get("DREAMFLOW_SERVER", "").strip().lower() not in ("off", "0", "false", "no")


def idle_seconds(env=None):
    env = os.environ if env is None else env
    text = env.get("DREAMFLOW_SERVER_IDLE", "").strip()
    if not text:
        return DEFAULT_IDLE
    try:
        value = float(text)
    except ValueError:
        raise DreamflowError(
            f"environment variable DREAMFLOW_SERVER_IDLE: '{text}' is not a number of seconds"
        ) from None
    if value < 0:
        raise DreamflowError(f"environment variable DREAMFLOW_SERVER_IDLE: {text} is negative")
    return value


def device_slots(env=None):
    """Dreams a server lets onto one accelerator at once: $DREAMFLOW_SERVER_DEVICE_SLOTS, or None
    for the server's default."""
    env = os.environ if env is None else env
    text = env.get("DREAMFLOW_SERVER_DEVICE_SLOTS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise DreamflowError(
            f"environment variable DREAMFLOW_SERVER_DEVICE_SLOTS: '{text}' is not a whole number "
            "of at least 1"
        )
    return int(text)


def stop(socket_path, timeout=PING_TIMEOUT):
    """Ask the server to exit once its running requests are done; False when none answered."""
    try:
        reply = protocol.exchange(socket_path, {"op": protocol.STOP}, timeout)
    except (NoServer, Broken, Unavailable):
        return False
    return reply.get("status") == protocol.OK


def server_command(socket_path, idle):
    return [
        sys.executable,
        "-m",
        "dreamflow",
        "serve",
        "--socket",
        socket_path,
        "--idle",
        str(idle),
    ]


def spawn(paths, env=None):
    """Start a server in this directory, detached from the job (own session, no inherited pipes)."""
    # imported here, not at the top: every frame job imports this module, few start a server
    import shlex
    import subprocess

    env = os.environ if env is None else env
    with contextlib.suppress(OSError):
        if os.path.getsize(paths.log) > LOG_MAX_BYTES:
            os.replace(paths.log, paths.log + ".old")
    child_env = dict(env)
    # the server imports the package this client is from, whatever the environment says
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root(), env.get("PYTHONPATH")]))
    command = server_command(paths.socket, idle_seconds(env))
    try:
        with open(paths.log, "ab") as log:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=os.getcwd(),
                env=child_env,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as error:
        raise Unavailable(f"cannot start the server ({shlex.join(command)}): {error}") from None


def ensure_server(paths, env=None):
    """A server that answers on paths.socket: the one running, or one started now. Its status."""
    deadline = time.monotonic() + START_TIMEOUT
    with locked(paths.lock, deadline):
        status = ping(paths.socket)
        if status:
            return status
        if not may_start(env):
            raise NotStarted(PER_RULE_NOTE)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.socket)  # a dead server's socket; a live one answered the ping
        process = spawn(paths, env)
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            status = ping(paths.socket, timeout=max(0.1, min(PING_TIMEOUT, left)))
            if status:
                return status
            code = process.poll()
            if code is not None:
                status = ping(paths.socket)  # it may have left because another server came up
                if status:
                    return status
                raise Unavailable(f"the server exited at start with status {code}; see {paths.log}")
            time.sleep(0.05)
        process.kill()
        raise Unavailable(f"the server did not answer within {START_TIMEOUT:g} s; see {paths.log}")


def no_server_dir_warning(reason):
    """The warning of a job that finds no usable server directory, in one line: each frame job
    then loads its model itself, which on a cluster node can take longer than the dream."""
    return (
        f"dreamflow: warning: no usable model server directory ({reason}): every job loads its "
        "model itself; set DREAMFLOW_SERVER_DIR=/tmp/dreamflow-$USER, a directory of your own "
        "that the jobs can reach"
    )


DONE = {protocol.DREAM: "dreamed", protocol.BLEND: "blended", protocol.FLOW: "flow computed"}


def request(op, job, env=None, notes=sys.stderr):
    """Have the server run `job` (op dream: a FrameJob, blend: a BlendJob, flow: a FlowJob); True
    once it has, False when the caller must run it in-process.

    A DreamflowError from the server is raised here; why the server could not be used is written
    to `notes` as one line, and so are the server's notes about the job.
    """
    env = os.environ if env is None else env
    if not enabled(env):
        return False
    message = protocol.job_request(op, os.getcwd(), job)
    try:
        server_roots(env)  # a bad value is the user's to fix, not a reason to dream in-process
        paths = server_paths(env=env)
        try:
            prepare_dir(paths)
        except Unavailable as error:
            # the same line from every job of the run: the run's summary shows it once
            print(
                no_server_dir_warning(error) if may_start(env) else PER_RULE_NOTE,
                file=notes,
                flush=True,
            )
            return False
        starts = 0
        while True:
            try:
                reply = protocol.exchange(paths.socket, message, None)
            except (NoServer, Broken) as error:
                if starts >= MAX_STARTS:
                    raise Unavailable(f"the server failed {starts} times, last: {error}") from None
                starts += 1
                ensure_server(paths, env)
                continue
            status = reply.get("status")
            if status == protocol.OK:
                for note in reply.get("notes") or []:
                    print(note, file=notes, flush=True)
                print(
                    f"dreamflow: {DONE[op]} by the model server: {reply.get('dreamer')}",
                    file=notes,
                    flush=True,
                )
                return True
            if status == protocol.ERROR:
                raise DreamflowError(reply.get("message", "the server reported an error"))
            if status == protocol.RETRY and starts < MAX_STARTS:  # the server is stale and leaving
                starts += 1
                ensure_server(paths, env)
                continue
            raise Unavailable(reply.get("message") or f"unexpected reply from the server: {reply}")
    except DreamflowError:
        raise
    except NotStarted as error:
        print(error, file=notes, flush=True)
        return False
    except Exception as error:  # Unavailable, or anything unforeseen: the job runs anyway
        note = " ".join(str(error).split())
        if not isinstance(error, Unavailable):
            note = f"{type(error).__name__}: {note}"
        print(
            f"dreamflow: note: no model server ({note}); running in-process",
            file=notes,
            flush=True,
        )
        return False
