"""The model server of the dream step: torch and the models stay loaded; frame jobs send it work.

Started by the first client that finds none (see serving.client), as `python -m dreamflow serve
--socket PATH --idle SECONDS`, in the workflow's working directory, or by hand with `dreamflow
serve`. It

- binds its Unix socket first and imports torch after, so clients see it at once and their requests
  wait for the import instead of timing out;
- answers one request per connection (see serving.protocol). A job (dream, blend or flow) is
  parsed with its class's from_message and its settings checked against the config schema; a
  dream is then run by the parts of dreamstep.run_job with the Dreamer settings and torch thread
  count the client would use in-process, a blend by blend.run_blend and a flow by
  blend.run_flow, so the bytes are the same whichever process made them (files are written
  atomically). Blend and flow jobs cost milliseconds here against a process start of their own:
  that is why they come here;
- runs each connection in its own thread, letting requests through a ThreadGate (serving.gate);
  a dream request's frame is decoded before the gate and its result encoded and written after it,
  so that one request's file work overlaps another's dream (a GPU is not left idle while PNGs are
  encoded);
- lets at most `--device-slots` dreams (default 2) onto one accelerator at once, whatever the
  number of clients: two keep a GPU busy across the gaps each dream leaves (its Python-side work,
  the copies to and from the device), more would only add their memory. All run on the device's
  default stream. Frames are not batched: a dream's bytes must not depend on which other frames
  happened to be waiting. On the CPU the gate and Snakemake's thread counts are the bound;
- keeps the last few Dreamers (`--models`, default 2) keyed by the dream settings, the thread count
  and the size and mtime of the weights and guide files;
- answers only processes of its own user (the peer's uid, SO_PEERCRED): it closes other
  connections unanswered;
- reads and writes only the files of its working directory (taken with symbolic links resolved)
  and of the directories in $DREAMFLOW_SERVER_ROOTS as it was when it started: a job naming any
  other file (through `..` or a symbolic link included) is refused. The guide image and the
  weights of the dream settings are read wherever they are: the workflow names them;
- exits after `--idle` seconds without job requests, removing its socket, pid and lock files; also
  when its socket file is removed or replaced, or on SIGTERM/SIGINT. When it starts and when it
  leaves it removes the files of other servers gone (see serving.paths).

A DreamflowError (the user's mistake, a malformed job included) goes back to the client as
{"status": "error", "message"}, and so does an OSError that another try cannot mend (a full disk,
a quota, a permission, a read-only file system); any other failure as {"status": "failed"}, after
which the client dreams in-process.
"""

import collections
import contextlib
import errno
import io
import json
import os
import select
import signal
import socket
import struct
import threading
import time
import traceback

from ..errors import DreamflowError
from ..job import BlendJob, FlowJob, FrameJob
from . import paths, protocol
from .gate import ThreadGate

DEFAULT_MODELS = 2
DEFAULT_DEVICE_SLOTS = 2
JOBS = {protocol.DREAM: FrameJob, protocol.BLEND: BlendJob, protocol.FLOW: FlowJob}
# the fields of each job naming a file it reads (its settings' model files aside); each writes
# its `output`
JOB_INPUTS = {
    FrameJob: ("frame", "previous"),
    BlendJob: ("frame", "previous", "previous_frame", "flow"),
    FlowJob: ("frame", "previous_frame"),
}
# errors that running the job again, here or in the client's process, ends in the same way
LASTING_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
ACCEPT_POLL = 0.25  # seconds between idle checks
PROGRESS_INTERVAL = 10.0  # seconds between progress lines in the log, while jobs come


def log(*parts):
    print(time.strftime("%Y-%m-%d %H:%M:%S"), f"[{os.getpid()}]", *parts, flush=True)


class SettingsChecks:
    """Checks jobs' settings against the config schema, once per distinct settings: a workflow
    sends the same few for every frame. Failures are not remembered."""

    MAX_REMEMBERED = 256

    def __init__(self):
        self._lock = threading.Lock()
        self._passed = set()

    def check(self, settings):
        from .. import config

        text = settings.text()
        with self._lock:
            if text in self._passed:
                return
        config.validate_job_settings(settings)
        with self._lock:
            if len(self._passed) >= self.MAX_REMEMBERED:
                self._passed.clear()
            self._passed.add(text)


def _file_signature(path):
    if not path:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None  # the Dreamer reports it as the in-process path would
    return [os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ino]


def dreamer_key(dream_settings, threads):
    """Settings, thread count (guide features are computed when loading) and the files read at
    load."""
    from .. import models

    weights = dream_settings.get("weights")
    if not weights:
        try:
            weights = models.default_weights_file(dream_settings.get("model"))
        except (DreamflowError, KeyError, TypeError):
            weights = None
    return json.dumps(
        [
            dream_settings,
            threads,
            _file_signature(weights),
            _file_signature(dream_settings.get("guide")),
        ],
        sort_keys=True,
        separators=(",", ":"),
    )


class DreamerCache:
    """The last `size` Dreamers used; each is loaded once, by the first request that needs it."""

    class _Entry:
        def __init__(self):
            self.lock = threading.Lock()
            self.dreamer = None

    def __init__(self, size):
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._entries = collections.OrderedDict()

    def __len__(self):
        return len(self._entries)

    def get(self, dream_settings, threads):
        from ..dreamstep import Dreamer

        key = dreamer_key(dream_settings, threads)
        with self._lock:
            entry = self._entries.pop(key, None) or self._Entry()
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)  # a request using it keeps its reference
        with entry.lock:
            if entry.dreamer is None:
                started = time.monotonic()
                try:
                    entry.dreamer = Dreamer(dream_settings, threads=threads)
                except BaseException:
                    with self._lock:
                        if self._entries.get(key) is entry:
                            del self._entries[key]
                    raise
                log(
                    f"loaded {dream_settings.get('model')} in {time.monotonic() - started:.1f} s "
                    f"(threads: {threads})"
                )
            return entry.dreamer


class DeviceSlots:
    """At most `slots` dreams at once on each accelerator (cuda:0, cuda:1, ...); the CPU is not
    limited here."""

    def __init__(self, slots):
        self.slots = max(1, slots)
        self._lock = threading.Lock()
        self._semaphores = {}

    @contextlib.contextmanager
    def held(self, device):
        if device.type == "cpu":
            yield
            return
        with self._lock:
            semaphore = self._semaphores.setdefault(str(device), threading.Semaphore(self.slots))
        with semaphore:
            yield


def _peer_uid(connection):
    """The uid of the process at the other end of a Unix socket; None where the system does not
    say (then the mode 0700 server directory is the only guard)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    credentials = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]  # pid, uid, gid


def _inside(path, root):
    return os.path.commonpath([path, root]) == root


def _client_gone(connection):
    """True when the client closed its end (e.g. its job was killed while the request waited)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        # a client sends nothing after its request: readable means closed (b"") or reset (error)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Server:
    def __init__(self, socket_path, idle, models, device_slots):
        self.socket_path = socket_path
        self.cwd = os.getcwd()  # getcwd() fails once the directory is removed
        self.files = paths.ServerPaths.of_socket(socket_path)
        self.pid_path = self.files.pid
        # where jobs may read and write: resolved now, as the directories were when it started
        self.roots = [os.path.realpath(self.cwd)]
        self.roots += [os.path.realpath(root) for root in paths.server_roots()]
        self.idle = idle
        self.dreamers = DreamerCache(models)
        self.settings_checks = SettingsChecks()
        self.gate = ThreadGate()
        self.device_slots = DeviceSlots(device_slots)
        self.ready = threading.Event()
        self.load_error = None
        self._state = threading.Lock()
        self._active = 0  # connections being handled
        self._job_requests = 0
        self.dreaming = 0
        self.served = 0
        self._last_request = time.monotonic()
        self._progress = (time.monotonic(), 0)  # when the last progress line was due, served then
        self._stopping = False
        self._inode = None
        self._unlinked = False

    # --- socket life cycle ---

    def _bind(self):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.socket_path)
        except OSError:
            if protocol.ping(self.socket_path):
                listener.close()
                return None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)  # left by a server that was killed
            listener.bind(self.socket_path)
        listener.listen(128)
        self._inode = os.stat(self.socket_path).st_ino
        return listener

    def _socket_is_ours(self):
        try:
            return os.stat(self.socket_path).st_ino == self._inode
        except OSError:
            return False

    def _unlink_socket(self):
        """Remove the socket file, unless a newer server has put its own there."""
        with self._state:
            if self._unlinked:
                return
            self._unlinked = True
            if self._socket_is_ours():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.socket_path)

    def _write_pid(self):
        with open(self.pid_path + ".tmp", "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(self.pid_path + ".tmp", self.pid_path)

    def _remove_pid(self):
        with contextlib.suppress(OSError):
            with open(self.pid_path) as handle:
                if handle.read().strip() == str(os.getpid()):
                    os.unlink(self.pid_path)

    def _tidy(self, leaving=False):
        try:
            if leaving and not paths.check_dir(self.files.directory):
                paths.remove_lock(self.files.lock)
            paths.tidy(self.files.directory, self.files.key, log)
        except Exception as error:  # tidying is a courtesy: it never stops serving
            log(f"cannot tidy {self.files.directory}: {type(error).__name__}: {error}")

    def _should_leave(self):
        with self._state:
            if self._active:
                return False
            if self._stopping or time.monotonic() - self._last_request >= self.idle:
                return True
        return not self._socket_is_ours()  # removed or replaced: no client can reach this server

    def run(self):
        listener = self._bind()
        if listener is None:
            log(f"another server already answers on {self.socket_path}")
            return 0
        self._write_pid()
        log(f"serving {self.cwd} on {self.socket_path} (idle exit after {self.idle:g} s)")
        if self.roots[1:]:
            log(f"jobs may also use files in {', '.join(self.roots[1:])}")
        threading.Thread(target=self._load, daemon=True).start()
        threading.Thread(target=self._tidy, daemon=True).start()
        try:
            listener.settimeout(ACCEPT_POLL)
            while not self._should_leave():
                self._log_progress()
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                self._start_handler(connection)
            # no client can connect once the file is gone; serve those that connected before
            self._unlink_socket()
            listener.setblocking(False)
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    break
                self._start_handler(connection)
            listener.close()
            while True:
                with self._state:
                    if not self._active:
                        break
                time.sleep(0.05)
            log(f"leaving after {self.served} frames")
        finally:
            self._unlink_socket()
            self._remove_pid()
            self._tidy(leaving=True)
        return 0

    def _log_progress(self):
        """Every PROGRESS_INTERVAL seconds, a line of the frames served, while there are jobs: a
        long run's log says how it goes, an idle server's stays quiet."""
        now = time.monotonic()
        since, served_then = self._progress
        if now - since < PROGRESS_INTERVAL:
            return
        with self._state:
            served, busy = self.served, self._job_requests
        self._progress = (now, served)
        recent = served - served_then
        if recent or busy:
            pace = f" ({(now - since) / recent:.1f} s/frame)" if recent else ""
            log(f"progress: {served} frames served, {recent} in the last {now - since:.0f} s{pace}")

    def _load(self):
        started = time.monotonic()
        try:
            import torch

            from .. import config, dreamstep  # noqa: F401  the imports are the cost paid once

            log(f"torch {torch.__version__} ready in {time.monotonic() - started:.1f} s")
        except BaseException as error:  # the clients dream in-process and see the real error there
            self.load_error = f"the server cannot import torch: {type(error).__name__}: {error}"
            log(self.load_error)
        finally:
            self.ready.set()

    # --- requests ---

    def _start_handler(self, connection):
        with self._state:
            self._active += 1
        threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _status(self):
        with self._state:
            return {
                "status": protocol.OK,
                "pid": os.getpid(),
                "cwd": self.cwd,
                "ready": self.ready.is_set(),
                "error": self.load_error,
                "requests": self._job_requests,
                "dreaming": self.dreaming,
                "served": self.served,
                "models": len(self.dreamers),
                "device_slots": self.device_slots.slots,
                "idle": self.idle,
            }

    def _handle(self, connection):
        try:
            uid = _peer_uid(connection)
            if uid is not None and uid != os.getuid():
                log(f"refused a connection from uid {uid}: this server answers uid {os.getuid()}")
                return
            reply = self._reply(connection)
            if reply is not None:
                protocol.send_reply(connection, reply)
        except OSError:
            pass  # the client is gone: its job was killed, or it gave up
        finally:
            connection.close()
            with self._state:
                self._active -= 1

    def _reply(self, connection):
        try:
            request = protocol.read_request(connection)
            if request is None:
                return None
            op = request.get("op")
            if op == protocol.STATUS:
                return self._status()
            if op == protocol.STOP:
                with self._state:
                    self._stopping = True
                return {"status": protocol.OK}
            if op not in protocol.JOB_OPS:
                return {"status": protocol.FAILED, "message": f"unknown request {op!r}"}
            with self._state:
                self._job_requests += 1
            try:
                return self._run(op, request, connection)
            finally:
                with self._state:
                    self._job_requests -= 1
                    self._last_request = time.monotonic()
        except Exception as error:
            log(f"request failed:\n{traceback.format_exc()}")
            return {
                "status": protocol.FAILED,
                "message": f"the server failed: {type(error).__name__}: {error}",
            }

    def _same_directory(self, directory):
        try:
            return os.path.samefile(directory, ".")
        except (OSError, TypeError):
            return False

    def _run(self, op, request, connection):
        mismatch = protocol.version_mismatch(request)
        if mismatch:
            log(f"refused: {mismatch}")
            return {"status": protocol.UNAVAILABLE, "message": mismatch}
        try:
            job = JOBS[op].from_message(request.get("job"))
            if job.SETTINGS:
                self.settings_checks.check(job.settings)
        except DreamflowError as error:
            log(f"malformed {op} job: {error}")
            return {"status": protocol.ERROR, "message": str(error)}
        self.ready.wait()
        if self.load_error:
            return {"status": protocol.UNAVAILABLE, "message": self.load_error}
        if not self._same_directory(request.get("cwd")):
            # the directory was removed or replaced since this server started in it: hand over
            with self._state:
                self._stopping = True
            self._unlink_socket()
            return {
                "status": protocol.RETRY,
                "message": f"the server's directory {self.cwd} is gone",
            }
        try:
            self._check_files(job)
        except DreamflowError as error:
            log(f"refused: {error}")
            return {"status": protocol.ERROR, "message": str(error)}
        notes = io.StringIO()
        started = time.monotonic()
        try:
            if op == protocol.DREAM:
                if not self._dream(job, connection, notes):
                    return {"status": protocol.FAILED, "message": "the client left"}
            elif op == protocol.FLOW:
                self._flow(job)
            else:
                from ..blend import run_blend

                run_blend(job, notes)
        except DreamflowError as error:
            log(f"{job.output}: error: {error}")
            return {"status": protocol.ERROR, "message": str(error)}
        except OSError as error:
            if error.errno not in LASTING_ERRORS:
                raise
            message = _os_error_message(job, error)
            log(f"{job.output}: error: {message}")
            return {"status": protocol.ERROR, "message": message}
        log(f"{job.output} in {time.monotonic() - started:.2f} s")
        return {
            "status": protocol.OK,
            "dreamer": protocol.dreamer_identity(),
            "notes": notes.getvalue().splitlines(),
        }

    def _check_files(self, job):
        """A DreamflowError unless every file `job` names lies in one of self.roots."""
        for field in ("output", *JOB_INPUTS[type(job)]):
            path = getattr(job, field)
            if path is None:
                continue
            real = os.path.realpath(path)
            if not any(_inside(real, root) for root in self.roots):
                raise DreamflowError(
                    f"{job.KIND}: '{field}' {path} lies outside the directories the model server "
                    f"may use ({', '.join(self.roots)}): add its directory to "
                    "DREAMFLOW_SERVER_ROOTS, or set DREAMFLOW_SERVER=off"
                )

    def _dream(self, job, connection, notes):
        """Dream a FrameJob; False when its client left while it waited at the gate."""
        import torch

        from ..dreamstep import dream_input, read_input, write_output

        source = read_input(job)
        with self.gate.held(job.threads):
            if _client_gone(connection):
                return False
            torch.set_num_threads(job.threads)  # this thread's OpenMP team only
            dreamer = self.dreamers.get(job.settings.dream, job.threads)
            if dreamer.device_warning:
                print(dreamer.device_warning, file=notes)
            with self.device_slots.held(dreamer.device):
                with self._state:
                    self.dreaming += 1
                try:
                    dreamed = dream_input(job, dreamer, source)
                finally:
                    with self._state:
                        self.dreaming -= 1
        write_output(job, dreamed)
        with self._state:
            self.served += 1
        return True

    def _flow(self, job):
        """Compute a FlowJob. RAFT runs torch, so it passes the gate with its thread count as a
        dream does; the OpenCV methods run beside the dreams."""
        from ..blend import run_flow

        if not job.method.startswith("raft"):
            run_flow(job)
            return
        import torch

        with self.gate.held(job.threads):
            torch.set_num_threads(job.threads)
            run_flow(job)


def _os_error_message(job, error):
    """One line naming the file of `job` that `error` is about and what went wrong."""
    reads = {
        os.path.realpath(getattr(job, field)): getattr(job, field)
        for field in JOB_INPUTS[type(job)]
        if getattr(job, field)
    }
    if error.filename is not None and os.path.realpath(error.filename) in reads:
        return f"cannot read {reads[os.path.realpath(error.filename)]}: {error.strerror}"
    # the output, the temporary file it is written as, or its directory
    return f"cannot write {job.output}: {error.strerror}"


def _leave(signum, frame):
    raise SystemExit(128 + signum)


def serve(socket_path, idle, models=None, device_slots=None):
    """Run a server on `socket_path` in the current directory until it has been idle `idle`
    seconds, keeping `models` loaded models (default DEFAULT_MODELS) and letting `device_slots`
    dreams (default DEFAULT_DEVICE_SLOTS) onto each accelerator at once."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _leave)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return Server(
        socket_path,
        idle,
        DEFAULT_MODELS if models is None else models,
        DEFAULT_DEVICE_SLOTS if device_slots is None else device_slots,
    ).run()
