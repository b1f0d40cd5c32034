"""What a frame job costs without the model server, as in per-rule containers. Prints one table.

    .venv/bin/python tests/benchmarks/per_rule_cost.py [--repeats 5] [--width 320] [--threads 2]

In per-rule containers (`snakemake --sdm apptainer`) every job runs in a container of its own that
ends with it, so no model server outlives a job and each frame job dreams in-process: a Python
start, the torch import, the model load and the dream, every frame. With the whole workflow in one
container (or on the host) the jobs hand their frames to one warm server. For the tests' tiny dream
(helpers.TINY_DREAM) and the default dream settings, on a test pattern of --width x width*9/16, this
times one `dreamflow dream-frame` process per frame, as a job's shell runs it:

    in-process   DREAMFLOW_SERVER=off: what a per-rule container job does
    warm server  the same command, handing the frame to a warm model server (its start excluded)

and prints the medians, their difference (what per-rule containers cost per frame) and their
ratio. Both run on the host's Python: a container adds its own start to every job on top (Apptainer
mounts the image once per job), which this does not count.

Not a test: its figures depend on the machine and its load; it asserts nothing. Runs go one after
the other, so they never compete.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # run as a script, so pytest's pythonpath does not apply
sys.path.insert(0, str(REPO / "workflow"))  # this checkout's dreamflow, whatever is installed

from dreamflow.images import write_rgb  # noqa: E402
from dreamflow.serving import client, paths  # noqa: E402
from helpers import TINY_DREAM, defaults, job_settings, pattern_array  # noqa: E402

SETTINGS = {
    "tiny": dict(TINY_DREAM),
    "default": {
        key: defaults("dream")[key] for key in ("octaves", "iterations", "jitter", "layers")
    },
}


def frame_seconds(directory, env, frame, settings, threads, number):
    command = [sys.executable, "-m", "dreamflow", "dream-frame", "--frame", str(frame)]
    command += ["--number", "1", "--settings", settings, "--threads", str(threads)]
    command += ["-o", str(directory / f"{number}.png")]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"dream-frame failed:\n{result.stderr}")
    return seconds, result.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    height = args.width * 9 // 16
    with tempfile.TemporaryDirectory(prefix="dreamflow-per-rule-cost-") as root:
        root = Path(root)
        base = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
        base.pop(client.PER_RULE_CONTAINER, None)
        server_dir = root / "servers"
        rows = []
        for name, dream in SETTINGS.items():
            settings = job_settings(**dream)
            work = root / name
            work.mkdir()
            frame = work / "frame.png"  # in the server's working directory, which it may read
            write_rgb(pattern_array(height, args.width, seed=1), frame)
            off = {**base, "DREAMFLOW_SERVER": "off"}
            warm = {**base, "DREAMFLOW_SERVER_DIR": str(server_dir), "DREAMFLOW_SERVER_IDLE": "60"}
            frame_seconds(work, warm, frame, settings, args.threads, 0)  # starts the server
            in_process, served = [], []
            for number in range(1, args.repeats + 1):  # alternating: load changes hit both alike
                seconds, log = frame_seconds(work, off, frame, settings, args.threads, number)
                assert "dreamed in-process" in log, log
                in_process.append(seconds)
                seconds, log = frame_seconds(work, warm, frame, settings, args.threads, number)
                assert "dreamed by the model server" in log, log
                served.append(seconds)
            client.stop(paths.server_paths(cwd=str(work), env=warm).socket)
            rows.append((name, statistics.median(in_process), statistics.median(served)))
    print(
        f"per frame, {args.width}x{height}, {args.threads} threads, medians of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'dream':<9} {'in-process':>11} {'warm server':>12} {'difference':>11} {'ratio':>6}")
    for name, alone, served in rows:
        print(
            f"{name:<9} {alone:>10.2f}s {served:>11.2f}s {alone - served:>10.2f}s "
            f"{alone / served:>6.1f}"
        )


if __name__ == "__main__":
    main()
