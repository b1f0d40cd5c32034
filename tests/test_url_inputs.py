"""Inputs given as http:// URLs, served by a real HTTP server on 127.0.0.1 that each test module
starts, through the real workflow: downloaded once into the work folder, dreamed as the same file
given locally, and each way a download fails stopping the run in one line naming the input."""

import email.utils
import http.server
import re
import threading
import time

import pytest

from dreamflow import config as dreamflow_config
from dreamflow.errors import DreamflowError
from helpers import Workflow, make_video, solid_image, tiny_config

OLD = 1_700_000_000  # the Last-Modified of every file that does not change


class Files(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of `files` ({path: (bytes, Last-Modified as a time.time())}); /cut.mp4 says
    the whole length of /video.mp4 and closes the connection halfway through it."""

    files = {}

    def log_message(self, *arguments):
        pass

    def _headers(self):
        if self.path == "/cut.mp4":
            body, modified = self.files["/video.mp4"]
            cut = len(body) // 2
        elif self.path in self.files:
            body, modified = self.files[self.path]
            cut = len(body)
        else:
            self.send_error(404)
            return b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", email.utils.formatdate(modified, usegmt=True))
        self.end_headers()
        return body[:cut]

    def do_HEAD(self):
        self._headers()

    def do_GET(self):
        self.wfile.write(self._headers())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server's base URL; its files, and a local copy of each under `media`."""
    media = tmp_path_factory.mktemp("served")
    make_video(media / "video.mp4", frames=3)
    solid_image(media / "image.png", (200, 120, 40))
    Files.files = {
        f"/{name}": ((media / name).read_bytes(), OLD) for name in ("video.mp4", "image.png")
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", media
    httpd.shutdown()
    httpd.server_close()


def dreamed_frames(project, name):
    folder = project.path("work", name, "dreamed")
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def one_error_line(result, name):
    """The run failed, and said why in one line naming input `name`: a config error, or the
    summary of a failed job (Snakemake shows the job's log as well)."""
    assert result.returncode != 0
    lines = [
        line
        for line in result.output.splitlines()
        if line.startswith(("dreamflow: error: config key", "dreamflow: input "))
    ]
    assert len(lines) == 1, result.output
    assert f"inputs.{name}.path" in lines[0] or f"input {name} " in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def leftovers(project):
    work = project.path("work")
    return sorted(str(p) for p in work.rglob("input*")) + sorted(
        str(p) for p in work.rglob(".partial*")
    )


# ---- config checks: no network ----


@pytest.mark.parametrize(
    "url, kind",
    [
        ("http://127.0.0.1:9/clip.mp4", "video"),
        ("https://example.invalid/a/still.PNG?size=large", "image"),
        ("http://example.invalid/stream", "video"),
    ],
)
def test_a_url_is_checked_without_the_network_and_its_suffix_gives_its_kind(url, kind):
    config = dreamflow_config.validate(tiny_config(url))
    assert dreamflow_config.check_inputs(config) == {"tiny": kind}


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://example.invalid/a.mp4", "only http:// and https:// URLs can be read, not ftp://"),
        ("http:///a.mp4", "is not a valid URL: it names no host"),
        ("http://example.invalid:99999/a.mp4", "is not a valid URL: Port out of range"),
    ],
)
def test_a_bad_url_is_a_one_line_error_naming_the_key(url, message):
    config = dreamflow_config.validate(tiny_config(url))
    with pytest.raises(DreamflowError) as raised:
        dreamflow_config.check_inputs(config)
    assert str(raised.value).startswith(f"config key inputs.tiny.path: {url}")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


# ---- the real workflow ----


@pytest.mark.workflow
def test_url_inputs_dream_exactly_as_the_same_files_given_locally(server, tmp_path):
    base, media = server
    local, remote = Workflow(tmp_path / "local"), Workflow(tmp_path / "remote")
    for project, prefix in ((local, str(media)), (remote, base)):
        project.directory.mkdir()
        config = tiny_config(f"{prefix}/video.mp4")
        config["inputs"]["still"] = {"path": f"{prefix}/image.png"}
        project.write_config(config)
        result = project.run()
        assert result.returncode == 0, result.output
    assert remote.finished(result, "download") == 2
    assert (
        remote.path("work", "tiny", "input.mp4").read_bytes() == (media / "video.mp4").read_bytes()
    )
    for name in ("tiny", "still"):
        assert dreamed_frames(remote, name) == dreamed_frames(local, name)
    assert (
        remote.path("results", "still", "still.png").read_bytes()
        == local.path("results", "still", "still.png").read_bytes()
    )
    again = remote.run()
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output  # downloaded once


@pytest.mark.workflow
def test_a_url_whose_file_changes_downloads_again_and_reruns_what_follows(server, project):
    base, media = server
    Files.files["/changing.mp4"] = ((media / "video.mp4").read_bytes(), OLD)
    project.write_config(tiny_config(f"{base}/changing.mp4"))
    first = project.run("--until", "extract_frames")
    assert first.returncode == 0, first.output
    frame = project.path("work", "tiny", "frames", "000001.png")
    before = frame.read_bytes()

    # the same Last-Modified: nothing is downloaded again, even though the content changed
    other = make_video(media / "other.mp4", frames=3, pattern="testsrc2")
    Files.files["/changing.mp4"] = (open(other, "rb").read(), OLD)
    unchanged = project.run("--until", "extract_frames")
    assert unchanged.returncode == 0, unchanged.output
    assert project.finished(unchanged, "download") == 0, unchanged.output

    time.sleep(1.1)  # Last-Modified counts whole seconds: newer than the download
    Files.files["/changing.mp4"] = (open(other, "rb").read(), int(time.time()))
    changed = project.run("--until", "extract_frames")
    assert changed.returncode == 0, changed.output
    for rule in ("download", "probe", "extract_frames"):
        assert project.finished(changed, rule) == 1, changed.output
    assert project.path("work", "tiny", "input.mp4").read_bytes() == open(other, "rb").read()
    assert frame.read_bytes() != before


@pytest.mark.workflow
def test_a_url_that_is_not_there_stops_the_run_in_one_line(server, project):
    base, _ = server
    project.write_config(tiny_config(f"{base}/missing.mp4"))
    line = one_error_line(project.run(), "tiny")
    assert line == (
        f"dreamflow: error: config key inputs.tiny.path: cannot download {base}/missing.mp4: "
        "HTTP 404 Not Found"
    )
    assert not project.path("work").exists()


@pytest.mark.workflow
def test_an_unreachable_host_stops_the_run_in_one_line(project):
    url = "http://127.0.0.1:9/clip.mp4"  # the discard port: nothing listens there
    project.write_config(tiny_config(url))
    line = one_error_line(project.run(), "tiny")
    assert line == (
        f"dreamflow: error: config key inputs.tiny.path: cannot download {url}: connection refused"
    )


@pytest.mark.workflow
def test_a_download_cut_halfway_stops_the_input_in_one_line_and_leaves_no_file(server, project):
    base, media = server
    project.write_config(tiny_config(f"{base}/cut.mp4"))
    result = project.run()
    size = len((media / "video.mp4").read_bytes())
    line = one_error_line(result, "tiny")
    assert re.fullmatch(
        rf"dreamflow: input tiny failed: cannot download {base}/cut\.mp4: the connection closed "
        rf"after {size // 2} of {size} bytes \(log: work/tiny/logs/download\.mp4\.log\)",
        line,
    ), line
    assert leftovers(project) == []
    assert not project.path("results").exists()
