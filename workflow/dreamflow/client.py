"""The thin side of the dream step: hand one frame to the model server of this node and directory.

`dreamflow dream-frame` runs once per frame. Importing torch and loading the model costs seconds, a
frame far less, so the job is sent over a Unix socket to a model server (dreamflow.server) that
keeps torch and the model loaded. This module is what the job runs instead: the standard library
only (no torch, numpy or PIL), so a frame job costs a Python start-up and one request.

- One server per node and workflow directory: the socket is named by a short hash of the current
  working directory (Snakemake runs jobs from the workflow's working directory) and of what else
  the result depends on (this Python, the package, the CPUs it may use, the umask, the environment
  variables in IDENTITY_ENV, and those in THREAD_ENV for jobs without --threads). Different
  workflows never share a server, and the server, started in the same directory, resolves relative
  paths exactly as the job would.
- The first client that finds no server starts one (detached, in its own session; its output goes
  to a log file beside the socket), holding a file lock so that concurrent clients start exactly one;
  the others wait on the lock, then use that server.
- If the server dies mid-request or the connection breaks, the server is started again and the
  request retried (a few times). If no server can be had (disabled, socket directory not usable, the
  server cannot start or answer in time), the caller dreams in-process: results never depend on the
  server, only speed does. Errors that are the user's (DreamflowError in the server) come back as
  DreamflowError, without a retry or a fallback.

Environment variables:
  DREAMFLOW_SERVER                off (also 0, false, no) always dreams in-process; anything else, or
                                  unset, uses the server.
  DREAMFLOW_SERVER_DIR            directory of the sockets, lock files, pid files and server logs;
                                  default $XDG_RUNTIME_DIR/dreamflow when XDG_RUNTIME_DIR is set,
                                  else /tmp/dreamflow-<uid>. It must be node-local (a Unix socket on
                                  a shared file system does not reach other nodes) and is created with
                                  mode 0700; a directory owned by another user, or writable by
                                  everyone, is refused. Containers bind-mount it.
  DREAMFLOW_SERVER_IDLE           seconds a server stays up without requests before it exits
                                  (default 10); given to the server when a client starts one.
  DREAMFLOW_SERVER_START_TIMEOUT  seconds a client waits for a new server to accept connections
                                  (default 120; a server binds its socket before importing torch).
  DREAMFLOW_SERVER_COMMAND        the command that starts a server, split like a shell would, before
                                  the arguments --socket PATH --idle SECONDS; default: this Python
                                  with -m dreamflow.server. For containers and tests.
  DREAMFLOW_SERVER_MODELS         (read by the server) how many loaded models it keeps (default 2).
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time

from .errors import DreamflowError

DEFAULT_IDLE = 10.0
DEFAULT_START_TIMEOUT = 120.0
MAX_STARTS = 3  # the first start plus two restarts after a server died under a request
PING_TIMEOUT = 10.0  # a live server answers a ping at once, even while it imports torch
CONNECT_TIMEOUT = 10.0
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
LOG_MAX_BYTES = 1 << 20  # a server log beyond this is moved to .log.old when the next server starts
# environment variables that change what a dream computes or which code runs it: a server serves
# only clients whose values are its own (they are part of the socket name)
IDENTITY_ENV = ("TORCH_HOME", "XDG_CACHE_HOME", "HOME", "CUDA_VISIBLE_DEVICES", "PYTHONPATH",
                "LD_LIBRARY_PATH", "LD_PRELOAD")
# these only set torch's default thread count, which matters only to jobs run without --threads
# (Snakemake sets them to each job's threads; the server sets every request's count itself)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class Unavailable(Exception):
    """No server can serve this request: the caller dreams in-process."""


class _NoServer(Exception):
    """Nothing accepts on the socket: start a server."""


class _Broken(Exception):
    """The connection broke before the reply: the server died or went away; start one and retry."""


def enabled(env=None):
    env = os.environ if env is None else env
    return env.get("DREAMFLOW_SERVER", "").strip().lower() not in ("off", "0", "false", "no")


def _number(env, name, default):
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise DreamflowError(f"environment variable {name}: '{text}' is not a number of seconds") from None
    if value < 0:
        raise DreamflowError(f"environment variable {name}: {text} is negative")
    return value


def idle_seconds(env=None):
    return _number(os.environ if env is None else env, "DREAMFLOW_SERVER_IDLE", DEFAULT_IDLE)


def server_dir(env=None):
    env = os.environ if env is None else env
    if env.get("DREAMFLOW_SERVER_DIR"):
        return os.path.abspath(env["DREAMFLOW_SERVER_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "dreamflow")
    return f"/tmp/dreamflow-{os.getuid()}"


def package_root():
    """The directory holding the dreamflow package: the server must import this very code."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def identity(cwd=None, env=None, threads=None):
    """What a server must share with a client to give the bytes the client itself would.

    `threads`: the job's --threads; without it the default thread count matters, so THREAD_ENV does.
    """
    env = os.environ if env is None else env
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    umask = os.umask(0o077)  # reading the umask means setting it; the server's files get this one
    os.umask(umask)
    return {"cwd": os.path.abspath(cwd or os.getcwd()), "python": sys.executable, "package": package_root(),
            "cpus": cpus, "umask": umask,
            "env": {name: env.get(name) for name in IDENTITY_ENV + (() if threads else THREAD_ENV)}}


class ServerPaths:
    """The socket, lock, pid and log files of the server for one identity, in `directory`."""

    def __init__(self, directory, key):
        self.directory = directory
        self.key = key
        base = os.path.join(directory, key)
        self.socket, self.lock, self.pid, self.log = (base + end for end in (".sock", ".lock", ".pid", ".log"))


def server_paths(cwd=None, env=None, threads=None):
    """The paths of the server for this directory (and jobs with --threads or not); creates nothing."""
    text = json.dumps(identity(cwd, env, threads), sort_keys=True)
    return ServerPaths(server_dir(env), hashlib.sha256(text.encode()).hexdigest()[:16])


def prepare_dir(paths):
    """Create the socket directory (mode 0700) and check that only this user can use it."""
    if len(os.fsencode(paths.socket)) > SOCKET_PATH_MAX:
        raise Unavailable(f"socket path {paths.socket} is longer than {SOCKET_PATH_MAX} bytes: "
                          "set DREAMFLOW_SERVER_DIR to a shorter directory")
    try:
        os.makedirs(paths.directory, mode=0o700, exist_ok=True)
        info = os.stat(paths.directory)
    except OSError as error:
        raise Unavailable(f"cannot create the server directory {paths.directory}: {error.strerror}") from None
    if info.st_uid != os.getuid():
        raise Unavailable(f"server directory {paths.directory} belongs to another user")
    if info.st_mode & 0o002:
        raise Unavailable(f"server directory {paths.directory} is writable by everyone: chmod 700 it")
    if not os.access(paths.directory, os.W_OK | os.X_OK):
        raise Unavailable(f"server directory {paths.directory} is not writable")


def _exchange(socket_path, message, timeout):
    """Send one JSON line, return the one JSON line of the reply; `timeout` None waits as long as it takes."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(min(CONNECT_TIMEOUT, timeout) if timeout else CONNECT_TIMEOUT)
        try:
            connection.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout) as error:
            raise _NoServer(str(error)) from None
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ENOTSOCK):
                raise _NoServer(str(error)) from None
            raise Unavailable(f"cannot connect to {socket_path}: {error.strerror}") from None
        connection.settimeout(timeout)
        try:
            connection.sendall(json.dumps(message).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    raise _Broken("the server closed the connection before replying")
                data += chunk
        except (socket.timeout, OSError) as error:
            raise _Broken(str(error) or type(error).__name__) from None
    finally:
        connection.close()
    try:
        return json.loads(data)
    except ValueError:
        raise _Broken(f"unreadable reply from the server: {data[:200]!r}") from None


def ping(socket_path, timeout=PING_TIMEOUT):
    """The server's status ({"pid", "cwd", "ready", "dreaming", "served", ...}), or None when none answers."""
    try:
        reply = _exchange(socket_path, {"op": "status"}, timeout)
    except (_NoServer, _Broken, Unavailable):
        return None
    return reply if reply.get("status") == "ok" else None


def stop(socket_path, timeout=PING_TIMEOUT):
    """Ask the server to exit once its running requests are done; False when none answered."""
    try:
        return _exchange(socket_path, {"op": "stop"}, timeout).get("status") == "ok"
    except (_NoServer, _Broken, Unavailable):
        return False


@contextlib.contextmanager
def _locked(path, deadline):
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"timed out waiting for the lock {path}") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def server_command(env=None):
    env = os.environ if env is None else env
    if env.get("DREAMFLOW_SERVER_COMMAND", "").strip():
        return shlex.split(env["DREAMFLOW_SERVER_COMMAND"])
    return [sys.executable, "-m", "dreamflow.server"]


def _spawn(paths, env):
    """Start a server in this directory, detached from the job (own session, no inherited pipes)."""
    with contextlib.suppress(OSError):
        if os.path.getsize(paths.log) > LOG_MAX_BYTES:
            os.replace(paths.log, paths.log + ".old")
    child_env = dict(env)
    # the server imports the package this client is from, whatever the environment says
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root(), env.get("PYTHONPATH")]))
    command = server_command(env) + ["--socket", paths.socket, "--idle", str(idle_seconds(env))]
    try:
        with open(paths.log, "ab") as log:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=os.getcwd(), env=child_env, start_new_session=True, close_fds=True)
    except OSError as error:
        raise Unavailable(f"cannot start the server ({shlex.join(command)}): {error}") from None


def ensure_server(paths, env=None):
    """A server that answers on paths.socket: the one running, or one started now. Its status."""
    env = os.environ if env is None else env
    timeout = _number(env, "DREAMFLOW_SERVER_START_TIMEOUT", DEFAULT_START_TIMEOUT)
    deadline = time.monotonic() + timeout
    with _locked(paths.lock, deadline):
        status = ping(paths.socket)
        if status:
            return status
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.socket)  # a dead server's socket; a live one answered the ping
        process = _spawn(paths, env)
        while time.monotonic() < deadline:
            status = ping(paths.socket, timeout=max(0.1, min(PING_TIMEOUT, deadline - time.monotonic())))
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
        raise Unavailable(f"the server did not answer within {timeout:g} s; see {paths.log}")


def dreamer_identity():
    """Who dreamed a frame, for the job's log: which Python on which host (inside a container, the
    container's Python and host name), so a log shows where the work ran."""
    return f"pid {os.getpid()}, python {sys.executable}, host {socket.gethostname()}"


def request_dream(request, env=None, notes=sys.stderr):
    """Have the server dream `request`; True once it has, False when the caller must dream in-process.

    `request` holds frame, previous, number, settings (the JSON text), output and threads. A
    DreamflowError from the server is raised here; why the server could not be used is written
    to `notes` as one line.
    """
    env = os.environ if env is None else env
    if not enabled(env):
        return False
    message = {"op": "dream", "cwd": os.getcwd(), **request}
    try:
        paths = server_paths(env=env, threads=request.get("threads"))
        prepare_dir(paths)
        starts = 0
        while True:
            try:
                reply = _exchange(paths.socket, message, None)
            except (_NoServer, _Broken) as error:
                if starts >= MAX_STARTS:
                    raise Unavailable(f"the server failed {starts} times, last: {error}") from None
                starts += 1
                ensure_server(paths, env)
                continue
            status = reply.get("status")
            if status == "ok":
                print(f"dreamflow: dreamed by the model server: {reply.get('dreamer')}", file=notes, flush=True)
                return True
            if status == "error":
                raise DreamflowError(reply.get("message", "the server reported an error"))
            if status == "retry" and starts < MAX_STARTS:  # the server was stale and is leaving
                starts += 1
                ensure_server(paths, env)
                continue
            raise Unavailable(reply.get("message") or f"unexpected reply from the server: {reply}")
    except DreamflowError:
        raise
    except Exception as error:  # Unavailable, or anything unforeseen: the frame is dreamed all the same
        note = " ".join(str(error).split())
        if not isinstance(error, Unavailable):
            note = f"{type(error).__name__}: {note}"
        print(f"dreamflow: note: no model server ({note}); dreaming in-process", file=notes, flush=True)
        return False
