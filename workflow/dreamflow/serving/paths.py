"""Where the server of this node, working directory and environment listens: the one place that
names its socket, lock, pid and log files, and that tidies the server directory.

The name is a short hash of the working directory (Snakemake runs jobs from the workflow's) and of
what else the bytes of a dream depend on: this Python, the package and its version, the CPUs this
process may use, the umask and the environment variables in IDENTITY_ENV. Different workflows
never share a server, and a server started in the same directory resolves relative paths exactly
as the job would.

The server directory must be a real directory (not a symbolic link) of this user with mode 0700:
anyone who can reach a socket in it can have the server read and write files as this user.

A server removes, when it starts and when it leaves, the files of servers that are gone: their
socket, pid and lock files at once, their logs once not written for LOG_KEEP_DAYS days (users read
the log of a server that failed). A lock file is removed only by whoever holds its lock, and a
client that took a lock checks that its file is still the one at the path (see locked), so
removing one never lets two servers start.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import time

from .. import __version__
from ..errors import DreamflowError
from .protocol import Unavailable, ping

SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
LOG_KEEP_DAYS = 7
# environment variables that change what a dream computes, which code runs it, or which files the
# server may touch: a server serves only clients whose values are its own
IDENTITY_ENV = (
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "HOME",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "DREAMFLOW_SERVER_ROOTS",
)
# the files of one server: <16 hex digits of its identity>.<ending>; nothing else is touched
ENDINGS = (".sock", ".lock", ".pid", ".pid.tmp", ".log", ".log.old")
_SERVER_FILE = re.compile(r"([0-9a-f]{16})(" + "|".join(map(re.escape, ENDINGS)) + r")\Z")


def server_dir(env=None):
    env = os.environ if env is None else env
    if env.get("DREAMFLOW_SERVER_DIR"):
        return os.path.abspath(env["DREAMFLOW_SERVER_DIR"])
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "dreamflow")
    return f"/tmp/dreamflow-{os.getuid()}"


def server_roots(env=None):
    """The directories named by $DREAMFLOW_SERVER_ROOTS (os.pathsep between them) whose files the
    server may read and write besides those of its working directory."""
    env = os.environ if env is None else env
    roots = [root for root in env.get("DREAMFLOW_SERVER_ROOTS", "").split(os.pathsep) if root]
    for root in roots:
        if not os.path.isabs(root):
            raise DreamflowError(
                f"environment variable DREAMFLOW_SERVER_ROOTS: '{root}' is not an absolute path"
            )
    return roots


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
        # the same directory holds another version after an upgrade: never its old server
        "version": __version__,
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

    @classmethod
    def of_socket(cls, socket_path):
        """The paths of the server listening on `socket_path` (KEY.sock)."""
        directory, name = os.path.split(os.path.abspath(socket_path))
        return cls(directory, os.path.splitext(name)[0])


def server_paths(cwd=None, env=None):
    """The paths of the server for this directory and environment; creates nothing."""
    text = json.dumps(identity(cwd, env), sort_keys=True)
    return ServerPaths(server_dir(env), hashlib.sha256(text.encode()).hexdigest()[:16])


def check_dir(directory):
    """None when `directory` is a directory of this user's with mode 0700 (looked at itself, not
    through a symbolic link), else why not and what to do, in one line."""
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        return f"server directory {directory} is a symbolic link: remove it"
    if not stat.S_ISDIR(info.st_mode):
        return f"server directory {directory} is not a directory: remove it"
    if info.st_uid != os.getuid():
        return (
            f"server directory {directory} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.getuid()}): remove it or set DREAMFLOW_SERVER_DIR to a directory of your own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        return f"server directory {directory} has mode {mode:04o}, not 0700: chmod 700 {directory}"
    return None


def prepare_dir(paths):
    """Create the server directory (mode 0700) and check that only this user can use it."""
    if len(os.fsencode(paths.socket)) > SOCKET_PATH_MAX:
        raise Unavailable(
            f"socket path {paths.socket} is longer than {SOCKET_PATH_MAX} bytes: "
            "set DREAMFLOW_SERVER_DIR to a shorter directory"
        )
    try:
        os.makedirs(os.path.dirname(paths.directory), exist_ok=True)
        try:
            os.mkdir(paths.directory, 0o700)
            os.chmod(paths.directory, 0o700)  # the umask may have taken bits this user needs
        except FileExistsError:
            pass
        problem = check_dir(paths.directory)
    except OSError as error:
        raise Unavailable(
            f"cannot create the server directory {paths.directory}: {error.strerror}"
        ) from None
    if problem:
        raise Unavailable(problem)


def _same_file(handle, path):
    try:
        a, b = os.fstat(handle), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def locked(path, deadline):
    """Hold the lock file `path` (created when absent), waiting until `deadline` (monotonic)."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Unavailable(f"timed out waiting for the lock {path}") from None
                    time.sleep(0.05)
            if _same_file(handle, path):
                break
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)  # its holder removed the file: lock the one at the path now
    try:
        yield
    finally:
        os.close(handle)  # closing releases the lock


@contextlib.contextmanager
def _taken(path):
    """Hold the lock file `path` if it exists and nobody holds it; yields whether it does."""
    try:
        handle = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield _same_file(handle, path)
    finally:
        os.close(handle)


def _unlink(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_lock(path):
    """Remove the lock file `path` unless someone holds it."""
    with _taken(path) as taken:
        if taken:
            _unlink(path)  # while holding it: a client waiting on this file then locks a new one


def tidy(directory, keep, log=print):
    """Remove the files of servers gone from the server directory `directory` (see the module's
    docstring); the key `keep` (a running server's own) is left alone."""
    if check_dir(directory):
        return  # not a server directory: a socket named by hand, somewhere else
    keys = set()
    for name in os.listdir(directory):
        match = _SERVER_FILE.match(name)
        if match and match.group(1) != keep:
            keys.add(match.group(1))
    old = time.time() - LOG_KEEP_DAYS * 86400
    removed = 0
    for key in sorted(keys):
        base = os.path.join(directory, key)
        lock = base + ".lock"
        # holding its lock: no client is starting this key's server, so no answer means none runs
        made = False
        with contextlib.suppress(FileExistsError):
            os.close(os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            made = True
        with _taken(lock) as taken:
            if not taken:
                continue
            if ping(base + ".sock"):
                if made:
                    _unlink(lock)  # leave the directory as it was
                continue
            for ending in ENDINGS:
                path = base + ending
                if ending == ".lock":
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if ending.startswith(".log") and os.stat(path).st_mtime >= old:
                        continue
                    os.unlink(path)
                    removed += 1
            _unlink(base + ".lock")  # last, and while holding it
    if removed:
        log(f"removed {removed} files of servers gone from {directory}")
