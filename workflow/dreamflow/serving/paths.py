"""Where the server of this node, working directory and environment listens: the one place that
names its socket, lock, pid and log files.

The name is a short hash of the working directory (Snakemake runs jobs from the workflow's) and of
what else the bytes of a dream depend on: this Python, the package, the CPUs this process may use,
the umask and the environment variables in IDENTITY_ENV. Different workflows never share a server,
and a server started in the same directory resolves relative paths exactly as the job would.
"""

import hashlib
import json
import os
import sys

from .protocol import Unavailable

SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
# environment variables that change what a dream computes or which code runs it: a server serves
# only clients whose values are its own
IDENTITY_ENV = (
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "HOME",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
)


def server_dir(env=None):
    env = os.environ if env is None else env
    if env.get("DREAMFLOW_SERVER_DIR"):
        return os.path.abspath(env["DREAMFLOW_SERVER_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "dreamflow")
    return f"/tmp/dreamflow-{os.getuid()}"


def package_root():
    """The directory holding the dreamflow package: the server must import this very code."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def identity(cwd=None, env=None):
    """What a server must share with a client to give the bytes the client itself would."""
    env = os.environ if env is None else env
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    umask = os.umask(0o077)  # reading the umask means setting it; the server's files get this one
    os.umask(umask)
    return {
        "cwd": os.path.abspath(cwd or os.getcwd()),
        "python": sys.executable,
        "package": package_root(),
        "cpus": cpus,
        "umask": umask,
        "env": {name: env.get(name) for name in IDENTITY_ENV},
    }


class ServerPaths:
    """The socket, lock, pid and log files of the server for one identity, in `directory`."""

    def __init__(self, directory, key):
        self.directory = directory
        self.key = key
        base = os.path.join(directory, key)
        self.socket, self.lock, self.pid, self.log = (
            base + end for end in (".sock", ".lock", ".pid", ".log")
        )


def server_paths(cwd=None, env=None):
    """The paths of the server for this directory and environment; creates nothing."""
    text = json.dumps(identity(cwd, env), sort_keys=True)
    return ServerPaths(server_dir(env), hashlib.sha256(text.encode()).hexdigest()[:16])


def prepare_dir(paths):
    """Create the socket directory (mode 0700) and check that only this user can use it."""
    if len(os.fsencode(paths.socket)) > SOCKET_PATH_MAX:
        raise Unavailable(
            f"socket path {paths.socket} is longer than {SOCKET_PATH_MAX} bytes: "
            "set DREAMFLOW_SERVER_DIR to a shorter directory"
        )
    try:
        os.makedirs(paths.directory, mode=0o700, exist_ok=True)
        info = os.stat(paths.directory)
    except OSError as error:
        raise Unavailable(
            f"cannot create the server directory {paths.directory}: {error.strerror}"
        ) from None
    if info.st_uid != os.getuid():
        raise Unavailable(f"server directory {paths.directory} belongs to another user")
    if info.st_mode & 0o002:
        raise Unavailable(
            f"server directory {paths.directory} is writable by everyone: chmod 700 it"
        )
    if not os.access(paths.directory, os.W_OK | os.X_OK):
        raise Unavailable(f"server directory {paths.directory} is not writable")
