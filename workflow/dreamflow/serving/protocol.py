"""The wire format between client and server: one JSON line each way, one request per connection.

Requests: {"op": "status"} (the server's pid, directory and load), {"op": "stop"} (leave once
idle), and jobs: {"op": "dream" | "blend" | "flow", "cwd": ..., "job": job.to_message()} for a
FrameJob, BlendJob or FlowJob, with the client's dreamflow "version". Every reply has a "status":
ok; error (the user's mistake, a DreamflowError: "message" is shown as is); failed or unavailable
(the server could not do it: the client dreams in-process); retry (the server is stale and leaving:
start another and send again). A connection from a process of another user gets no reply at all.
"""

import errno
import json
import os
import socket
import sys

from .. import __version__

STATUS, STOP = "status", "stop"
DREAM, BLEND, FLOW = "dream", "blend", "flow"
JOB_OPS = (DREAM, BLEND, FLOW)
OK, ERROR, FAILED, UNAVAILABLE, RETRY = "ok", "error", "failed", "unavailable", "retry"
MAX_REQUEST_BYTES = 1 << 20
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # a client writes its whole request at once
PING_TIMEOUT = 10.0  # a live server answers a ping at once, even while it imports torch


class Unavailable(Exception):
    """No server can serve this request: the caller dreams in-process."""


class NoServer(Exception):
    """Nothing accepts on the socket: start a server."""


class Broken(Exception):
    """The connection broke before the reply: the server died or went away; start one and retry."""


def encode(message):
    return json.dumps(message).encode() + b"\n"


def job_request(op, cwd, job):
    return {"op": op, "cwd": cwd, "version": __version__, "job": job.to_message()}


def version_mismatch(request):
    """Why a server of this dreamflow must not run `request`, or None: a job's fields and what
    running it gives are those of the client's version."""
    version = request.get("version")
    if version == __version__:
        return None
    return f"the model server runs dreamflow {__version__}, the job dreamflow {version}"


def exchange(socket_path, message, timeout):
    """Send one request, return the reply; `timeout` None waits as long as it takes."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(min(CONNECT_TIMEOUT, timeout) if timeout else CONNECT_TIMEOUT)
        try:
            connection.connect(socket_path)
        except (TimeoutError, FileNotFoundError, ConnectionRefusedError) as error:
            raise NoServer(str(error)) from None
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ENOTSOCK):
                raise NoServer(str(error)) from None
            raise Unavailable(f"cannot connect to {socket_path}: {error.strerror}") from None
        connection.settimeout(timeout)
        try:
            connection.sendall(encode(message))
            data = b""
            while not data.endswith(b"\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    raise Broken("the server closed the connection before replying")
                data += chunk
        except (TimeoutError, OSError) as error:
            raise Broken(str(error) or type(error).__name__) from None
    finally:
        connection.close()
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise Broken(f"unreadable reply from the server: {data[:200]!r}")
    return reply


def read_request(connection):
    """The request a client sent on `connection`: a mapping, or None when the client closed the
    connection first or sent too much. ValueError when it is not a JSON mapping."""
    connection.settimeout(READ_TIMEOUT)
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk or len(data) > MAX_REQUEST_BYTES:
            return None
        data += chunk
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError(f"a request must be a JSON mapping, not {type(request).__name__}")
    return request


def send_reply(connection, reply):
    connection.settimeout(READ_TIMEOUT)
    connection.sendall(encode(reply))


def ping(socket_path, timeout=PING_TIMEOUT):
    """The server's status ({"pid", "cwd", "ready", "dreaming", "served", ...}), or None when none
    answers."""
    try:
        reply = exchange(socket_path, {"op": STATUS}, timeout)
    except (NoServer, Broken, Unavailable):
        return None
    return reply if reply.get("status") == OK else None


def dreamer_identity():
    """Who dreamed a frame, for the job's log: which Python on which host (inside a container, the
    container's Python and host name), so a log shows where the work ran."""
    return f"pid {os.getpid()}, python {sys.executable}, host {socket.gethostname()}"
