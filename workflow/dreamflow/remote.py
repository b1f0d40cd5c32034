"""Inputs given as http(s) URLs: recognised and checked without the network (config validation),
looked up once per run (the run stops in one line naming the input when the file is not there),
and downloaded by a job into the work folder, so that every later step reads a local file.

Snakemake's HTTP storage plugin (snakemake-storage-plugin-http) tells the workflow whether the
file changed: it reports the server's Last-Modified as the file's modification time, so a URL
whose Last-Modified is newer than the downloaded copy downloads again, and every step after it
reruns. The download itself is done here rather than by the plugin: the plugin's retrieval runs in
Snakemake's main process, where a failure cannot name the input, and it writes a 404 page as if
it were the file.
"""

import http.client
import os
import re
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit

from .errors import DreamflowError

SCHEMES = ("http", "https")
TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20
# a URL path's suffix that can name the local copy; anything else (a query-like tail, spaces)
# leaves the copy without one
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")


def is_url(path):
    """Whether a config path is a URL (`scheme://...`) rather than a file name; a file name with
    a ':' in it (`res:ults/a.mp4`) is not."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def check_url(url):
    """Raise DreamflowError unless `url` is an http(s) URL naming a host. No network."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise DreamflowError(f"{url} is not a valid URL: {error}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise DreamflowError(
            f"{url}: only http:// and https:// URLs can be read, not {parts.scheme}://"
        )
    if not parts.hostname:
        raise DreamflowError(f"{url} is not a valid URL: it names no host")
    if any(character.isspace() for character in url):
        raise DreamflowError(f"{url} is not a valid URL: it contains whitespace")


def suffix(url):
    """The suffix of the file a URL names (its path's, lowercase), or '' without one. It decides
    the input's kind, as a local file's suffix does: an image suffix is an image, anything else a
    video. The server's Content-Type is not asked: validation works without the network."""
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    found = os.path.splitext(name)[1]
    return found.lower() if _SUFFIX.fullmatch(found) else ""


def local_copy(work, name, url_suffix):
    """Where the download of input `name` goes, given its URL's suffix (or Snakemake wildcards,
    for the rule that writes it)."""
    return f"{work}/{name}/input{url_suffix}"


def _reason(error):
    """Why a request failed, in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def check_available(url):
    """Ask the server (a HEAD request, as the storage plugin does) whether `url` is there; raise
    DreamflowError saying why not."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
            pass
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise DreamflowError(f"cannot download {url}: {_reason(error)}") from None


def _chunks(url, response):
    """The body of `response`; a network error as DreamflowError, which atomic_path passes on as
    it is (it reports an OSError as a failure to write)."""
    received = 0
    try:
        while chunk := response.read(CHUNK_BYTES):
            received += len(chunk)
            yield chunk
    except (OSError, http.client.HTTPException) as error:
        raise DreamflowError(
            f"cannot download {url}: the connection broke after {received} bytes ({_reason(error)})"
        ) from None
    expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and received != int(expected):
        raise DreamflowError(
            f"cannot download {url}: the connection closed after {received} of {expected} bytes"
        )


def download(url, path):
    """Download `url` to `path`, atomically: a failed or short download (fewer bytes than the
    server's Content-Length) leaves nothing at `path`."""
    from .images import atomic_path  # numpy and Pillow: not for config validation

    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS)
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise DreamflowError(f"cannot download {url}: {_reason(error)}") from None
    with response, atomic_path(path) as temporary, open(temporary, "wb") as copy:
        for chunk in _chunks(url, response):
            copy.write(chunk)
