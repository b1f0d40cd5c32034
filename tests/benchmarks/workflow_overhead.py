"""How much of a workflow run is dreaming? Prints one table, all figures measured side by side here.

    .venv/bin/python tests/benchmarks/workflow_overhead.py [--frames 48] [--repeats 3]

(a) per-frame dream time in one warm process: the compute floor
(b) whole-workflow wall time per frame, `snakemake --cores 2`, frames dreamed through the model
    server with the shipped `dream_threads: auto` (independent frames: one thread each, two at once)
(c) b / a (target: at most 1.15); b2 and b2 / a: the same with 2 threads per frame, as in (a)
(d) the same workflow with one fresh process per frame (DREAMFLOW_SERVER=off: import torch and
    load the model every time, as the old tools do), and d / b
(e) dry-run DAG build time for a synthetic 10,000- and 108,000-frame video with blending on, and
    the same for a bare Snakefile of the same DAG shape: Snakemake's own floor
(f) peak RSS of the model server and of one client

Not a test: it takes minutes and its figures depend on the machine. Medians over --repeats runs.
The dream settings are the defaults (3 octaves of 10 steps, EfficientNet-Lite0 block10) on a
320x180 test pattern; on this project's 2-core CPU figures are CPU-only.
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # run as a script, so pytest's pythonpath does not apply

from helpers import make_video  # noqa: E402

PYTHON = sys.executable
WIDTH, HEIGHT, FPS = 320, 180, 24


def write_project(directory, frames, blend="none", dream_threads="auto"):
    directory.mkdir(parents=True, exist_ok=True)
    make_video(
        directory / "clip.mp4",
        frames=frames,
        fps=FPS,
        size=f"{WIDTH}x{HEIGHT}",
        audio=False,
        pattern="testsrc2",
    )
    config = {
        "inputs": {"clip": {"path": "clip.mp4"}},
        "blend": {"mode": blend},
        "resources": {"dream_threads": dream_threads, "ffmpeg_threads": 2},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(directory, *args, env=None, snakefile=REPO / "Snakefile"):
    command = [
        PYTHON,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(directory),
        "--cores",
        "2",
        *args,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def warm_per_frame(frames_dir, count):
    """(a): one process, model loaded once, then `count` frames timed one by one."""
    code = f"""
import json, sys, time, glob
from dreamflow import config
from dreamflow.dreamstep import Dreamer, run_job
from dreamflow.job import FrameJob, JobSettings
schema = config.load_schema()
dream = config.resolve_dream(config.fill_defaults({{}}, schema["$defs"]["dream"], schema))
blend = config.fill_defaults({{}}, schema["$defs"]["blend"], schema)
settings = JobSettings(dream=dream, blend=blend)
dreamer = Dreamer(dream, threads=2)
frames = sorted(glob.glob({str(frames_dir)!r} + "/*.png"))[:{count}]
times = []
for number, frame in enumerate(frames, start=1):
    start = time.perf_counter()
    run_job(FrameJob(number, frame + ".out.png", settings, 2, frame=frame), dreamer)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""
    result = subprocess.run(
        [PYTHON, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DREAMFLOW_SERVER": "off"},
    )
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def dag_seconds(directory, frames, snakefile=REPO / "Snakefile"):
    """(e): a dry run over a synthetic extraction of `frames` empty frame files, blending on."""
    write_project(directory, 2, blend="constant")
    frames_dir = directory / "work" / "clip" / "frames"
    frames_dir.mkdir(parents=True)
    subprocess.run(
        [
            PYTHON,
            "-m",
            "dreamflow",
            "probe",
            str(directory / "clip.mp4"),
            "-o",
            str(directory / "work" / "clip" / "probe.json"),
        ],
        check=True,
    )
    touch_frames(frames_dir, frames)
    return snakemake(directory, "--dry-run", "--quiet", snakefile=snakefile)


def touch_frames(folder, frames):
    """A synthetic extraction: `frames` empty frame files, as extract_frames names them."""
    for number in range(1, frames + 1):
        (folder / f"{number:06d}.png").touch()


# The same DAG shape with nothing of dreamflow in it (no config, params, logs or settings): a
# checkpoint, one job per frame chained to the previous one, an all and an encode rule listing every
# frame. Its dry run is Snakemake's own floor for (e).
BARE_SNAKEFILE = """
import os, sys
sys.setrecursionlimit(1_000_000)

def dreamed(wildcards):
    folder = checkpoints.extract.get().output[0]
    count = sum(1 for entry in os.scandir(folder) if entry.name.endswith(".png"))
    return [f"dreamed/{n:06d}.png" for n in range(1, count + 1)]

rule all:
    input: dreamed, "video.mp4"

checkpoint extract:
    output: directory("frames")
    shell: "mkdir -p {output}"

def dream_inputs(wildcards):
    number = int(wildcards.frame)
    inputs = {"frame": f"frames/{wildcards.frame}.png"}
    if number > 1:
        inputs["previous"] = f"dreamed/{number - 1:06d}.png"
    return inputs

rule dream:
    input: unpack(dream_inputs)
    output: "dreamed/{frame}.png"
    shell: "cp {input.frame} {output}"

rule encode:
    input: dreamed
    output: "video.mp4"
    shell: "touch {output}"
"""


def bare_dag_seconds(directory, frames):
    """(e) floor: the dry run of BARE_SNAKEFILE over `frames` empty frame files."""
    (directory / "frames").mkdir(parents=True)
    touch_frames(directory / "frames", frames)
    (directory / "Snakefile").write_text(BARE_SNAKEFILE)
    return snakemake(directory, "--dry-run", "--quiet", snakefile=directory / "Snakefile")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-fresh", action="store_true", help="skip (d), the slowest part")
    parser.add_argument("--dag-frames", type=int, nargs="*", default=[10_000, 108_000])
    parser.add_argument("--dag-repeats", type=int, default=1, help="dry runs of each DAG size")
    parser.add_argument("--dag-only", action="store_true", help="measure (e) only")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="(e) also for another checkout of dreamflow (e.g. a git worktree of an "
        "older commit), side by side with this one",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dreamflow-bench-"))
    server_dir = root / "sockets"
    rows = []
    try:
        if not args.dag_only:
            # (a) the compute floor, from frames extracted by the workflow itself
            warm_project = root / "warm"
            write_project(warm_project, args.frames)
            snakemake(warm_project, "--until", "extract_frames")
            floor = statistics.median(
                warm_per_frame(warm_project / "work" / "clip" / "frames", args.frames)
            )
            rows.append(("(a) dream, one warm process", f"{floor:.3f} s/frame"))

            # (b) whole workflow through the server, with the shipped dream_threads (auto: here one
            # thread per frame, two frames at once) and with 2 threads per frame, the threading of
            # (a); the two settings alternate so that load changes hit both alike
            env = {"DREAMFLOW_SERVER_DIR": str(server_dir), "DREAMFLOW_SERVER_IDLE": "30"}
            runs, server_peak = {"auto": [], 2: []}, float("nan")
            for repeat in range(args.repeats):
                for threads in runs:
                    project = root / f"server{repeat}-{threads}"
                    write_project(project, args.frames, dream_threads=threads)
                    runs[threads].append(snakemake(project, env=env) / args.frames)
                    pids = [
                        Path(p).read_text().strip() for p in glob.glob(str(server_dir / "*.pid"))
                    ]
                    server_peak = max(
                        [peak_rss_mib(pid) for pid in pids if Path(f"/proc/{pid}").exists()]
                        or [server_peak]
                    )
            workflow = statistics.median(runs["auto"])
            same_threads = statistics.median(runs[2])
            rows.append(
                ("(b) workflow, model server, dream_threads auto", f"{workflow:.3f} s/frame")
            )
            rows.append(("(c) b / a", f"{workflow / floor:.2f}  (target <= 1.15)"))
            rows.append(
                ("(b2) workflow, model server, dream_threads 2", f"{same_threads:.3f} s/frame")
            )
            rows.append(("    b2 / a", f"{same_threads / floor:.2f}"))

            if not args.skip_fresh:
                project = root / "fresh"
                write_project(project, args.frames)
                fresh = snakemake(project, env={"DREAMFLOW_SERVER": "off"}) / args.frames
                rows.append(("(d) workflow, fresh process per frame", f"{fresh:.3f} s/frame"))
                rows.append(("    d / b", f"{fresh / workflow:.2f}"))

        for frames in args.dag_frames:
            ours, bare, baseline = [], [], []
            for repeat in range(
                args.dag_repeats
            ):  # alternating, so that load changes hit all alike
                ours.append(dag_seconds(root / f"dag{frames}-{repeat}", frames))
                bare.append(bare_dag_seconds(root / f"bare{frames}-{repeat}", frames))
                if args.baseline:
                    baseline.append(
                        dag_seconds(
                            root / f"base{frames}-{repeat}",
                            frames,
                            snakefile=args.baseline / "Snakefile",
                        )
                    )
            ours, bare = statistics.median(ours), statistics.median(bare)
            target = 10 if frames <= 10_000 else 90
            rows.append(
                (f"(e) dry-run DAG, {frames:,} frames", f"{ours:.1f} s  (target <= {target} s)")
            )
            rows.append(
                (
                    "    the same DAG with no dreamflow logic",
                    f"{bare:.1f} s  (ours / bare {ours / bare:.2f})",
                )
            )
            if baseline:
                before = statistics.median(baseline)
                rows.append(
                    (
                        f"    the same with {args.baseline}",
                        f"{before:.1f} s  (ours / baseline {ours / before:.2f})",
                    )
                )

        if not args.dag_only:
            # (f) one client request against the warm server of the last (b) project
            frame = root / "server0-auto" / "work" / "clip" / "frames" / "000001.png"
            client = subprocess.run(
                [
                    PYTHON,
                    "-c",
                    "import resource, sys; from dreamflow.cli import main; main(sys.argv[1:]); "
                    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
                    "dream-frame",
                    "--frame",
                    str(frame),
                    "--number",
                    "1",
                    "--threads",
                    "2",
                    "--settings",
                    '{"dream": {"model": "efficientnet_lite0", "weights": null, '
                    '"layers": ["block10"], "octaves": 1, "octave_scale": 1.4, "iterations": 1, '
                    '"step_size": 1.5, "jitter": 0, "seed": 0, "device": "cpu"}, '
                    '"blend": {"mode": "none"}, "jpg_quality": 95}',
                    "-o",
                    str(root / "client.png"),
                ],
                capture_output=True,
                text=True,
                cwd=root / "server0-auto",
                env={**os.environ, **env},
            )
            client_kib = (
                int(client.stderr.strip().splitlines()[-1])
                if client.returncode == 0
                else float("nan")
            )
            rows.append(("(f) peak RSS, model server", f"{server_peak:.0f} MiB"))
            rows.append(("    peak RSS, one client", f"{client_kib / 1024:.0f} MiB"))
    finally:
        for pid_file in glob.glob(str(server_dir / "*.pid")):
            subprocess.run(["kill", Path(pid_file).read_text().strip()], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{args.frames} frames of {WIDTH}x{HEIGHT}, medians of {args.repeats} runs, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
