"""`dreamflow status`: a run's progress and time left, read from its files alone, on real runs
left half-done; and the model server's progress lines."""

import os
import re
import subprocess
import sys
import time

import pytest

from dreamflow.images import write_rgb
from dreamflow.progress import duration_text, seconds_per_frame, time_left_text
from dreamflow.serving import paths, protocol
from helpers import (
    Workflow,
    copy_workflow,
    job_settings,
    make_video,
    pattern_array,
    tiny_config,
)

FRAMES = 6  # of the tiny video


def status(directory, *arguments, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "dreamflow", "status", *arguments],
        cwd=cwd or directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def columns(line):
    return re.split(r"\s{2,}", line.strip())


def set_mtimes(paths, stamps):
    for path, stamp in zip(paths, stamps, strict=True):
        os.utime(path, (stamp, stamp))


def age_everything(directory, seconds):
    """Make every file of the run `seconds` old, as if it had stopped then."""
    stamp = time.time() - seconds
    for root, _, files in os.walk(directory / "work"):
        for name in files:
            os.utime(os.path.join(root, name), (stamp, stamp))


# ---- the pace and the time left ----


def test_the_pace_is_the_span_of_the_newest_dreams_over_their_intervals():
    assert seconds_per_frame([]) is None
    assert seconds_per_frame([100.0]) is None
    assert seconds_per_frame([100.0, 103.0]) == 3.0
    # chains side by side: two frames at once every 4 s is 2 s a frame
    assert seconds_per_frame([0, 0, 4, 4, 8, 8, 12]) == 2.0
    # only the newest 20 count: a slow start long ago does not
    slow_then_fast = [i * 100.0 for i in range(10)] + [1000.0 + i for i in range(20)]
    assert seconds_per_frame(slow_then_fast) == 1.0
    assert seconds_per_frame(slow_then_fast, recent=30) == pytest.approx(1019 / 29)


def test_the_time_left_is_frames_left_times_the_pace_unless_the_run_is_idle():
    now = 10_000.0
    assert time_left_text(120, 1.8, now - 5, now) == "about 3 min 36 s left"
    assert time_left_text(3, 2.0, now - 1, now) == "about 6 s left"
    assert time_left_text(0, 2.0, now - 9999, now) == "done"
    assert time_left_text(5, None, now - 1, now) == "no estimate yet"
    assert time_left_text(5, 2.0, now - 301, now) == "idle"
    assert time_left_text(5, None, now - 301, now) == "idle"
    # frames slower than the idle time: three frames' time without a file is idle, not less
    assert time_left_text(5, 400.0, now - 1000, now) == "about 33 min 20 s left"
    assert time_left_text(5, 400.0, now - 1201, now) == "idle"
    assert duration_text(59.4) == "59 s"
    assert duration_text(3600 + 5 * 60 + 20) == "1 h 5 min"


# ---- dreamflow status on real runs ----


def test_a_half_finished_run_shows_its_counts_pace_and_time_left(tmp_path, finished_plain):
    flow = copy_workflow(finished_plain, tmp_path / "run")
    dreamed = flow.path("work", "tiny", "dreamed")
    for number in (4, 5, 6):
        (dreamed / f"00000{number}.png").unlink()
    now = time.time()
    age_everything(flow.directory, 20)  # the job logs too: only the dreams set the pace
    set_mtimes([dreamed / f"00000{n}.png" for n in (1, 2, 3)], [now - 10, now - 8, now - 6])

    result = status(flow.directory)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [columns(line) for line in lines] == [
        ["tiny", "frames", "6", "dreamed", "3", "left", "3", "2.0 s/frame", "about 6 s left"],
        ["total", "frames", "6", "dreamed", "3", "left", "3", "2.0 s/frame", "about 6 s left"],
    ]
    assert len({line.index("dreamed") for line in lines}) == 1  # aligned

    # from elsewhere, with --directory and a --configfile relative to where it runs
    elsewhere = status(
        flow.directory, "--directory", "run", "--configfile", "run/config.yaml", cwd=tmp_path
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout == result.stdout

    # nothing written for ten minutes: the run is not dreaming
    age_everything(flow.directory, 600)
    idle = status(flow.directory)
    assert idle.returncode == 0, idle.stderr
    assert columns(idle.stdout.splitlines()[0])[-1] == "idle"


def test_a_run_while_snakemake_dreams_shows_frames_appearing(tmp_path, finished_plain):
    """Snakemake running: each status reads the frames dreamed so far, never more than all."""
    flow = copy_workflow(finished_plain, tmp_path / "run")
    for number in range(1, FRAMES + 1):
        flow.path("work", "tiny", "dreamed", f"00000{number}.png").unlink()
    run = subprocess.Popen(
        flow.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=flow.environment()
    )
    seen = []
    try:
        while run.poll() is None:
            result = status(flow.directory)
            assert result.returncode == 0, result.stderr
            seen.append(int(columns(result.stdout.splitlines()[0])[4]))
            time.sleep(0.2)
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()
    assert run.returncode == 0
    assert seen == sorted(seen) and all(0 <= count <= FRAMES for count in seen)
    final = status(flow.directory)
    assert columns(final.stdout.splitlines()[0])[2:] == [
        "6",
        "dreamed",
        "6",
        "left",
        "0",
        columns(final.stdout.splitlines()[0])[7],
        "done",
    ]


def test_before_extraction_the_count_comes_from_the_probe_and_says_so(project, tmp_path):
    make_video(project.path("tiny.mp4"), frames=FRAMES)
    project.write_config(tiny_config("tiny.mp4"))

    nothing = status(project.directory)
    assert nothing.returncode == 0, nothing.stderr
    assert columns(nothing.stdout.splitlines()[0]) == [
        "tiny",
        "frames",
        "?",
        "dreamed",
        "0",
        "left",
        "?",
        "-",
        "not extracted yet",
    ]

    probed = project.run("--until", "probe")
    assert probed.returncode == 0, probed.output
    assert project.path("work", "tiny", "probe.json").is_file()
    assert not project.path("work", "tiny", "frames").exists()
    result = status(project.directory)
    assert result.returncode == 0, result.stderr
    assert columns(result.stdout.splitlines()[0]) == [
        "tiny",
        "frames",
        f"~{FRAMES}",
        "dreamed",
        "0",
        "left",
        f"~{FRAMES}",
        "-",
        "not extracted yet (frame count estimated from probe.json)",
    ]


def test_overlap_frames_count_once_both_their_dreams_are_there(tmp_path):
    """A blended input in chains of 4 frames overlapping by 1: frame 4 is dreamed twice."""
    flow = Workflow(tmp_path)
    make_video(flow.path("tiny.mp4"), frames=FRAMES)
    blend = {"mode": "constant", "factor": 0.5, "max_chain": 4, "overlap": 1}
    flow.write_config(tiny_config("tiny.mp4", blend=blend, scenes={"cuts": "none"}))
    frames = flow.path("work", "tiny", "frames")
    dreamed = flow.path("work", "tiny", "dreamed")
    frames.mkdir(parents=True)
    dreamed.mkdir()
    for number in range(1, FRAMES + 1):
        (frames / f"00000{number}.png").write_bytes(b"")
    flow.path("work", "tiny", "scenes.json").write_text(
        '{"frames": 6, "cuts": [], "source": "none"}'
    )
    for name in ("000001", "000002", "000003", "000004", "000004-lead"):
        (dreamed / f"{name}.png").write_bytes(b"")

    def dreamed_count():
        result = status(flow.directory)
        assert result.returncode == 0, result.stderr
        return columns(result.stdout.splitlines()[0])[4]

    assert dreamed_count() == "4"
    (dreamed / "000004-lead.png").unlink()
    assert dreamed_count() == "3"


def test_two_inputs_get_a_line_each_and_a_total(tmp_path, finished_plain):
    flow = copy_workflow(finished_plain, tmp_path / "run")
    make_video(flow.path("other.mp4"), frames=FRAMES)
    config = flow.read_config()
    config["inputs"]["other"] = {"path": "other.mp4"}
    flow.write_config(config)
    result = status(flow.directory)
    assert result.returncode == 0, result.stderr
    rows = {row[0]: row for row in map(columns, result.stdout.splitlines())}
    assert list(rows)[-1] == "total" and sorted(rows) == ["other", "tiny", "total"]
    assert rows["tiny"][-1] == "done" and rows["other"][-1] == "not extracted yet"
    assert rows["total"][2:7] == ["6+?", "dreamed", "6", "left", "0+?"]
    assert rows["total"][-1] == "no estimate yet"


def test_status_imports_no_torch(finished_plain):
    code = (
        "import sys\n"
        "from dreamflow.cli import main\n"
        "assert main(['status']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=finished_plain, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("tiny")


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, r"config file not found: config\.yaml"),
        ("inputs: [unclosed\n", r"config\.yaml line \d+, column \d+: not valid YAML"),
        ("inputs:\n  tiny:\n    path: missing.mp4\n", r"config\.yaml: .*inputs\.tiny\.path"),
    ],
)
def test_a_missing_or_invalid_config_is_one_error_line(tmp_path, config, expected):
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
    result = status(tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("dreamflow: error: ")
    assert re.search(expected, line), line


def test_a_missing_directory_is_one_error_line(tmp_path):
    result = status(tmp_path, "--directory", "nowhere")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "dreamflow: error: --directory nowhere: No such file or directory"
    ]


# ---- the model server's progress lines ----

PROGRESS_LINE = re.compile(
    r"progress: (\d+) frames served, (\d+) in the last (\d+) s(?: \((\d+\.\d) s/frame\))?$"
)
# a real server, as `dreamflow serve` starts it, with progress lines every second
SERVE_WITH_SHORT_PROGRESS = """
from dreamflow.serving import paths, server
server.PROGRESS_INTERVAL = 1.0
where = paths.server_paths()
paths.prepare_dir(where)
server.serve(where.socket, 600)
"""


def test_the_server_logs_its_progress_while_it_serves_and_is_quiet_when_idle(tmp_path):
    env = {**os.environ, "DREAMFLOW_SERVER_DIR": str(tmp_path / "servers")}
    env.pop("DREAMFLOW_SERVER", None)
    write_rgb(pattern_array(), tmp_path / "frame.png")
    settings = job_settings()
    log = tmp_path / "server.log"
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE_WITH_SHORT_PROGRESS],
            cwd=tmp_path,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )

    def wait_for_line(served):
        """Until the log has a progress line of `served` frames: the next frame is then sent in
        the next interval, however slow the machine."""
        deadline = time.monotonic() + 120
        while not re.search(rf"progress: {served} frames served", log.read_text()):
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.1)

    try:
        socket_path = paths.server_paths(cwd=str(tmp_path), env=env).socket
        deadline = time.monotonic() + 60
        while not protocol.ping(socket_path):
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.1)
        for number in (1, 2, 3):
            dreamed = subprocess.run(
                [sys.executable, "-m", "dreamflow", "dream-frame", "--frame", "frame.png"]
                + ["--number", str(number), "--settings", settings, "--threads", "1"]
                + ["-o", f"dreamed{number}.png"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert "dreamed by the model server" in dreamed.stderr, dreamed.stderr
            wait_for_line(number)  # a progress line between the frames
        time.sleep(2.5)  # idle: two intervals and more in which a wrong line would be written
        lines = [
            PROGRESS_LINE.search(line)
            for line in log.read_text().splitlines()
            if "progress" in line
        ]
    finally:
        server.kill()
        server.wait()
    assert lines and all(lines), log.read_text()
    served = [int(match.group(1)) for match in lines]
    recent = [int(match.group(2)) for match in lines]
    assert served == sorted(served) and served[-1] == 3
    assert sum(recent) == 3  # each frame in one line's interval, none twice
    for match in lines:
        count, seconds, pace = int(match.group(2)), int(match.group(3)), match.group(4)
        assert seconds >= 1  # a second, or more while torch's import holds the interpreter
        assert (pace is None) == (count == 0)
        if pace:
            assert float(pace) == pytest.approx(seconds / count, abs=0.6)
    # the last line is the one after the last frame: the idle seconds since added none
    assert recent[-1] > 0
