"""How much of a workflow run is dreaming? Prints one table, all figures measured side by side here.

    .venv/bin/python tests/benchmarks/workflow_overhead.py [--frames 48] [--repeats 3]
        [--only a,e,g,h] [--baseline CHECKOUT]

(a) per-frame dream time in one warm process: the compute floor
(b) whole-workflow wall time per frame, `snakemake --cores 2`, frames dreamed through the model
    server with the shipped `dream_threads: auto` (independent frames: one thread each, two at once)
(c) b / a (target: at most 1.15); b2 and b2 / a: the same with 2 threads per frame, as in (a)
(d) the same workflow with one fresh process per frame (DREAMFLOW_SERVER=off: import torch and
    load the model every time, as the old tools do), and d / b
(e) dry-run DAG build time for a synthetic extraction of --dag-frames frames (default 10,000:
    empty frame files and a scenes.json written as the scenes checkpoint writes it), blend
    constant: with flow dis in one scene and in ten equal scenes (ten / one: target at most 1.0),
    with flow none in one scene (blend steps, no flow steps), and a bare Snakefile of the old DAG
    shape (one chained job per frame), Snakemake's own floor. The job counts of each DAG are
    checked, so that a DAG missing its frame steps cannot pass for a fast one.
(f) peak RSS of the model server and of one client
(g) per-frame wall time of a blend chain, real runs: --chain-frames frames (default 24) of
    320x180 with a tiny dream (1 octave of 1 step, layer block4), so that the per-frame overhead
    of the frame steps shows; `snakemake --cores 2` with the model server, target the video (not
    the coherence figure, which the baseline has no rule for), scene cuts none (one chain).
    g0: blend none (independent frames), for reference; g1: blend constant, flow none (a blend
    step and a dream step per frame); g2: blend constant, flow dis (flow steps run ahead, then
    blend and dream); g3: with --baseline, that checkout with blend constant and its shipped
    flow, its jobs running its own package (PYTHONPATH=CHECKOUT/workflow, checked on its
    server). Ratios g1 / g3 and g2 / g3, and g2 - g3 in ms.
    Each also as the time from the first dream finished to the last, per frame: the chain's
    pace without the fixed costs (start-up, extraction, the server's start, the encode).

(h) where a serial frame job's time goes (blend none with 2 threads a frame, so one job at a
    time, the tiny dream of (g), --chain-frames frames), step by step: the dream in one warm
    process; dream requests to a warm model server from one warm process (adds the socket, the
    job's checks, the server's bookkeeping); one `dreamflow dream-frame` process per frame, as
    the job's shell runs it (adds Python's start, imports, argument parsing); the workflow's pace
    from the first dream finished to the last (adds Snakemake between jobs); beside a chain of
    trivial jobs in a bare Snakefile, Snakemake's own turnaround. With --baseline, each step also
    for that checkout (its package on PYTHONPATH, its Snakefile).

--baseline CHECKOUT runs (b2), (e), (g) and (h) also for another checkout of dreamflow (e.g. a
git worktree of an older commit), alternating with this one so that load changes hit both alike.
--only picks parts by letter: a, b, c, d and f come from the same runs, so naming any of them
measures all five; --dag-only is --only e.

Not a test: it takes minutes and its figures depend on the machine. Medians over --repeats runs
(--dag-repeats for (e)). The dream settings of (a)-(d) and (f) are the defaults (3 octaves of 10
steps, EfficientNet-Lite0 block10) on a 320x180 test pattern; on this project's 2-core CPU
figures are CPU-only.
"""

import argparse
import glob
import json
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
sys.path.insert(0, str(REPO / "workflow"))  # this checkout's dreamflow, whatever is installed

from dreamflow.scenes import write_scenes  # noqa: E402
from helpers import make_video  # noqa: E402

PYTHON = sys.executable
WIDTH, HEIGHT, FPS = 320, 180, 24
# (g): a dream that costs little, so that the per-frame overhead of the frame steps shows. Not the
# tests' TINY_DREAM (helpers.py): one step, not two, and the default jitter, the settings that the
# figures in README.md were measured with
ONE_STEP_DREAM = {"octaves": 1, "iterations": 1, "layers": ["block4"]}
MAIN_PARTS = set("abcdf")  # measured from the same runs: c is b / a, d and f need b's runs


def write_project(
    directory,
    frames,
    blend="none",
    dream_threads="auto",
    flow=None,
    dream=None,
    cuts=None,
    size=f"{WIDTH}x{HEIGHT}",
):
    """A project of a `frames`-frame test pattern of `size` ("WIDTHxHEIGHT"). `flow` and `cuts`
    (blend.flow, scenes.cuts) are left out when None, the shipped defaults, and so that an older
    checkout without those settings accepts the config."""
    directory.mkdir(parents=True, exist_ok=True)
    make_video(
        directory / "clip.mp4",
        frames=frames,
        fps=FPS,
        size=size,
        audio=False,
        pattern="testsrc2",
    )
    config = {
        "inputs": {"clip": {"path": "clip.mp4"}},
        "blend": {"mode": blend},
        "resources": {"dream_threads": dream_threads, "ffmpeg_threads": 2},
    }
    if flow is not None:
        config["blend"]["flow"] = flow
    if dream:
        config["dream"] = dream
    if cuts is not None:
        config["scenes"] = {"cuts": cuts}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(directory, *args, env=None, snakefile=REPO / "Snakefile", cores=2, timeout=None):
    """Runs Snakemake on `directory`; its wall time in seconds and its output. Past `timeout`
    seconds, subprocess.TimeoutExpired."""
    command = [
        PYTHON,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(directory),
        "--cores",
        str(cores),
        *args,
    ]
    start = time.perf_counter()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(
            f"snakemake failed in {directory} (exit {result.returncode}):\n"
            + "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        )
    return seconds, result.stdout + result.stderr


def job_counts(output):
    """The job counts of Snakemake's "Job stats" table in `output`: rule -> jobs."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3  # the heading, the column names, the rule
    counts = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def warm_per_frame(frames_dir, count, dream=None, timeout=None, package=None):
    """(a): one process, model loaded once, then `count` frames timed one by one. `dream`: dream
    settings over the schema defaults, as a project's config.yaml gives them. `package`: the
    workflow folder of the checkout whose dreamflow runs (default: this one)."""
    code = f"""
import json, sys, time, glob
from dreamflow import config
from dreamflow.dreamstep import Dreamer, run_job
from dreamflow.job import FrameJob, JobSettings
schema = config.load_schema()
dream = config.resolve_dream(
    config.fill_defaults({dict(dream or {})!r}, schema["$defs"]["dream"], schema)
)
settings = JobSettings(dream=dream)
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
        env={**os.environ, "DREAMFLOW_SERVER": "off", **package_env(package)},
        timeout=timeout,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def package_env(package):
    """The environment that makes a process import dreamflow from `package` (a checkout's workflow
    folder; None: this checkout's)."""
    return {"PYTHONPATH": str(package or REPO / "workflow")}


def tiny_job_settings(package):
    """The JSON settings of a frame job with ONE_STEP_DREAM, as `package`'s workflow writes them."""
    code = f"""
from dreamflow import config
from dreamflow.job import JobSettings
schema = config.load_schema()
dream = config.fill_defaults({ONE_STEP_DREAM!r}, schema["$defs"]["dream"], schema)
print(JobSettings(dream=config.resolve_dream(dream)).text())
"""
    result = subprocess.run(
        [PYTHON, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **package_env(package)},
    )
    return result.stdout.strip()


def request_seconds(frames, outputs, server_dir, package):
    """(h) dream requests to a warm model server from one warm process, into the folder
    `outputs`: per-frame seconds, the first (which starts the server) left out."""
    code = f"""
import io, json, time
from dreamflow.job import FrameJob, JobSettings
from dreamflow.serving import client
settings = JobSettings.from_text({tiny_job_settings(package)!r})
times = []
for number, frame in enumerate({[str(frame) for frame in frames]!r}, start=1):
    start = time.perf_counter()
    job = FrameJob(number, f"{outputs}/{{number}}.png", settings, 2, frame=frame)
    if not client.request("dream", job, notes=io.StringIO()):
        raise SystemExit("the model server did not dream")
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""
    result = subprocess.run(
        [PYTHON, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **package_env(package), "DREAMFLOW_SERVER_DIR": str(server_dir)},
    )
    return statistics.median(json.loads(result.stdout.strip().splitlines()[-1])[1:])


def client_process_seconds(frames, outputs, server_dir, package):
    """(h) one `dreamflow dream-frame` process per frame, as a dream job's shell runs it, against
    a warm model server, into the folder `outputs`: per-frame seconds, the first (which starts the
    server) left out."""
    settings = tiny_job_settings(package)
    env = {**os.environ, **package_env(package), "DREAMFLOW_SERVER_DIR": str(server_dir)}
    times = []
    for number, frame in enumerate(frames, start=1):
        command = [str(Path(PYTHON).parent / "dreamflow"), "dream-frame", "--frame", str(frame)]
        command += ["--number", str(number), "--settings", settings, "--threads", "2"]
        start = time.perf_counter()
        subprocess.run(
            command + ["-o", str(outputs / f"{number}.png")],
            check=True,
            env=env,
            stderr=subprocess.DEVNULL,  # its one line per frame: which server dreamed it
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


# A chain of trivial jobs, each waiting for the one before: Snakemake's own turnaround per job.
BARE_CHAIN_SNAKEFILE = """
COUNT = {count}

rule all:
    input: f"done/{{COUNT:06d}}"

def previous(wildcards):
    number = int(wildcards.number)
    return [f"done/{{number - 1:06d}}"] if number > 1 else []

rule step:
    input: previous
    output: "done/{{number}}"
    shell: "touch {{output}}"
"""


def bare_chain_seconds(directory, count):
    """(h) floor: the per-job pace of BARE_CHAIN_SNAKEFILE's chain of `count` trivial jobs."""
    directory.mkdir(parents=True)
    (directory / "Snakefile").write_text(BARE_CHAIN_SNAKEFILE.format(count=count))
    snakemake(directory, "--scheduler", "greedy", snakefile=directory / "Snakefile")
    finished = sorted(path.stat().st_mtime for path in (directory / "done").iterdir())
    return (finished[-1] - finished[0]) / (count - 1)


def scene_cuts(frames, scenes):
    """The cuts of `scenes` equal scenes of `frames` frames."""
    return [1 + scene * frames // scenes for scene in range(1, scenes)]


def dag_seconds(directory, frames, snakefile=REPO / "Snakefile", flow=None, scenes=1):
    """(e): a dry run, blend constant, over a synthetic extraction of `frames` empty frame files
    and a scenes.json of `scenes` equal scenes (the scenes checkpoint's output: the dream jobs
    are only known once it exists). `flow` None: the checkout's default, which an older one
    may not know. Returns the seconds and the job counts of the DAG."""
    write_project(directory, 2, blend="constant", flow=flow)
    work = directory / "work" / "clip"
    (work / "frames").mkdir(parents=True)
    subprocess.run(
        [
            PYTHON,
            "-m",
            "dreamflow",
            "probe",
            str(directory / "clip.mp4"),
            "-o",
            str(work / "probe.json"),
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": str(snakefile.parent / "workflow")},
    )
    touch_frames(work / "frames", frames)
    # after the frames: an older scenes file would be out of date and the checkpoint rerun
    write_scenes(
        {"frames": frames, "cuts": scene_cuts(frames, scenes), "source": "manual"},
        work / "scenes.json",
    )
    seconds, output = snakemake(directory, "--dry-run", "--quiet", "rules", snakefile=snakefile)
    return seconds, job_counts(output)


def touch_frames(folder, frames):
    """A synthetic extraction: `frames` empty frame files, as extract_frames names them."""
    for number in range(1, frames + 1):
        (folder / f"{number:06d}.png").touch()


# The same DAG shape as the old workflow with nothing of dreamflow in it (no config, params, logs
# or settings): a checkpoint, one job per frame chained to the previous one, an all and an encode
# rule listing every frame. Its dry run is Snakemake's own floor for (e).
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
    seconds, output = snakemake(
        directory, "--dry-run", "--quiet", "rules", snakefile=directory / "Snakefile"
    )
    return seconds, job_counts(output)


def server_pids(server_dir):
    """The pids of the live model servers whose files are in `server_dir`."""
    pids = []
    for pid_file in glob.glob(str(Path(server_dir) / "*.pid")):
        pid = Path(pid_file).read_text().strip()
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def stop_servers(server_dir):
    for pid in server_pids(server_dir):
        subprocess.run(["kill", pid], capture_output=True)


def server_pythonpath(pid):
    """PYTHONPATH in the environment of process `pid`."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"PYTHONPATH="):
            return entry[len(b"PYTHONPATH=") :].decode()
    return ""


def chain_seconds(
    directory, frames, server_dir, blend, flow=None, checkout=None, dream_threads="auto"
):
    """(g): a real run of `frames` frames with the tiny dream, through a model server of its own,
    to the video: its wall time per frame, and the time per frame from the first dream finished
    to the last. `checkout`: another checkout of dreamflow, whose Snakefile runs and whose
    package its jobs import."""
    snakefile = REPO / "Snakefile"
    env = {"DREAMFLOW_SERVER_DIR": str(server_dir), "DREAMFLOW_SERVER_IDLE": "30"}
    if checkout is None:
        write_project(
            directory,
            frames,
            blend=blend,
            flow=flow,
            dream=ONE_STEP_DREAM,
            cuts="none",
            dream_threads=dream_threads,
        )
    else:
        write_project(
            directory,
            frames,
            blend=blend,
            dream=ONE_STEP_DREAM,
            cuts="none",
            dream_threads=dream_threads,
        )
        snakefile = checkout / "Snakefile"
        env["PYTHONPATH"] = str(checkout / "workflow")
    seconds, _ = snakemake(directory, "results/clip/clip.mp4", env=env, snakefile=snakefile)
    work = directory / "work" / "clip"
    made = {
        step: len(list((work / step).glob("*")))
        for step in ("dreamed", "blended", "flow")
        if (work / step).exists()
    }
    if checkout is None:
        chained = frames - 1 if blend != "none" else 0
        expected = {"dreamed": frames, "blended": chained, "flow": chained if flow == "dis" else 0}
        if {step: made.get(step, 0) for step in expected} != expected:
            sys.exit(f"{directory}: expected the step files {expected}, the run made {made}")
    else:
        # the jobs ran the checkout's code: its package on the server's path
        if made.get("dreamed") != frames:
            sys.exit(f"{directory}: {frames} dreamed frames expected, the run made {made}")
        package = str(checkout / "workflow")
        paths = [server_pythonpath(pid).split(os.pathsep)[0] for pid in server_pids(server_dir)]
        if not paths or any(path != package for path in paths):
            sys.exit(f"{directory}: the model server imported from {paths}, not {package}")
    stop_servers(server_dir)
    # the chain's own pace, free of the fixed costs (start-up, extraction, the server's start, the
    # encode): from the first dream finished to the last
    finished = sorted(path.stat().st_mtime for path in (work / "dreamed").iterdir())
    return seconds / frames, (finished[-1] - finished[0]) / (frames - 1)


def breakdown_rows(root, count, repeats, baseline):
    """(h): where a serial frame job's time goes, step by step, for this checkout and `baseline`;
    the table rows."""
    project = root / "h-frames"
    write_project(project, count, dream=ONE_STEP_DREAM)
    snakemake(project, "--until", "extract_frames")
    frames = sorted((project / "work" / "clip" / "frames").glob("*.png"))
    server_dir = root / "h-sockets"
    checkouts = {"now": None, **({"base": baseline} if baseline else {})}
    steps = ("floor", "request", "client", "workflow", "wall")
    times = {(name, step): [] for name in checkouts for step in steps}
    bare = []
    for repeat in range(repeats):
        for name, checkout in checkouts.items():
            package = checkout and checkout / "workflow"
            times[name, "floor"].append(
                statistics.median(
                    warm_per_frame(frames[0].parent, count, dream=ONE_STEP_DREAM, package=package)[
                        1:
                    ]
                )
            )
            outputs = root / "h-dreams"
            times[name, "request"].append(request_seconds(frames, outputs, server_dir, package))
            times[name, "client"].append(
                client_process_seconds(frames, outputs, server_dir, package)
            )
            stop_servers(server_dir)
            directory = root / f"h-chain-{name}-{repeat}"
            wall, pace = chain_seconds(
                directory, count, server_dir, "none", checkout=checkout, dream_threads=2
            )
            times[name, "workflow"].append(pace)
            times[name, "wall"].append(wall)
            shutil.rmtree(directory)
        directory = root / f"h-bare-{repeat}"
        bare.append(bare_chain_seconds(directory, count))
        shutil.rmtree(directory)
    median = {key: statistics.median(values) for key, values in times.items()}

    def ms(name, step, before=None):
        value = median[name, step] - (median[name, before] if before else 0)
        return f"{value * 1000:.0f}"

    def row(label, step, before=None):
        text = " / ".join(ms(name, step, before) for name in checkouts)
        return (label, f"{text} ms/frame")

    heading = "now / baseline" if baseline else "this checkout"
    rows = [
        (
            f"(h) serial frame jobs ({heading}): blend none, 2 threads a frame (one job at a "
            "time), tiny dream",
            "",
        ),
        row("    dream in one warm process (the floor)", "floor"),
        row(
            "    + model server request (socket, job checks, the server's thread)",
            "request",
            "floor",
        ),
        row(
            "    + one dreamflow process per frame (Python start, imports, parsing)",
            "client",
            "request",
        ),
        row("    + Snakemake between jobs (scheduling, shell, job records)", "workflow", "client"),
        (
            "      Snakemake's own floor: a chain of trivial jobs",
            f"{statistics.median(bare) * 1000:.0f} ms/job",
        ),
        row("    = workflow pace, first to last dream", "workflow"),
        row("    workflow pace - floor (target <= 50)", "workflow", "floor"),
        row("    workflow wall time per frame, fixed costs included", "wall"),
    ]
    return rows


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def parse_parts(text):
    parts = set(text.replace(",", "").replace(" ", ""))
    unknown = parts - set("abcdefgh")
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown parts: {', '.join(sorted(unknown))}")
    return parts | (MAIN_PARTS if parts & MAIN_PARTS else set())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-fresh", action="store_true", help="skip (d), the slowest part")
    parser.add_argument("--dag-frames", type=int, nargs="*", default=[10_000])
    parser.add_argument("--dag-repeats", type=int, default=1, help="dry runs of each DAG size")
    parser.add_argument("--chain-frames", type=int, default=24, help="frames of the (g) chain")
    parser.add_argument(
        "--only",
        type=parse_parts,
        default=set("abcdefgh"),
        metavar="PARTS",
        help="measure only these parts, e.g. e,g (default: all)",
    )
    parser.add_argument("--dag-only", action="store_true", help="measure (e) only")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="(e) and (g) also for another checkout of dreamflow (e.g. a git worktree of an "
        "older commit), side by side with this one",
    )
    args = parser.parse_args()
    parts = {"e"} if args.dag_only else args.only
    baseline = args.baseline.resolve() if args.baseline else None
    root = Path(tempfile.mkdtemp(prefix="dreamflow-bench-"))
    server_dir = root / "sockets"
    chain_server_dir = root / "chain-sockets"
    rows = []
    try:
        if "a" in parts:
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
            if baseline:
                runs["base"] = []  # the baseline checkout with 2 threads per frame, as b2
            for repeat in range(args.repeats):
                for threads in runs:
                    project = root / f"server{repeat}-{threads}"
                    if threads == "base":
                        write_project(project, args.frames, dream_threads=2)
                        seconds = snakemake(
                            project,
                            env={**env, **package_env(baseline / "workflow")},
                            snakefile=baseline / "Snakefile",
                        )[0]
                        stop_servers(server_dir)  # the next runs must not use its server
                        runs[threads].append(seconds / args.frames)
                        continue
                    write_project(project, args.frames, dream_threads=threads)
                    runs[threads].append(snakemake(project, env=env)[0] / args.frames)
                    server_peak = max(
                        [peak_rss_mib(pid) for pid in server_pids(server_dir)] or [server_peak]
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
            rows.append(
                (
                    "    b2 / a; b2 - a",
                    f"{same_threads / floor:.2f}; {(same_threads - floor) * 1000:.0f} ms/frame",
                )
            )
            if baseline:
                before = statistics.median(runs["base"])
                rows.append(
                    (
                        f"    {baseline}: b2; b2 - a",
                        f"{before:.3f} s/frame; {(before - floor) * 1000:.0f} ms/frame",
                    )
                )

            if not args.skip_fresh:
                project = root / "fresh"
                write_project(project, args.frames)
                fresh = snakemake(project, env={"DREAMFLOW_SERVER": "off"})[0] / args.frames
                rows.append(("(d) workflow, fresh process per frame", f"{fresh:.3f} s/frame"))
                rows.append(("    d / b", f"{fresh / workflow:.2f}"))

        for frames in args.dag_frames if "e" in parts else []:
            # alternating, so that load changes hit all alike; each DAG's jobs checked
            variants = {
                "one": dict(flow="dis", scenes=1),
                "ten": dict(flow="dis", scenes=10),
                "none": dict(flow="none", scenes=1),
            }
            expected = {
                "one": {"dream_frame": frames, "blend": frames - 1, "flow": frames - 1},
                "ten": {"dream_frame": frames, "blend": frames - 10, "flow": frames - 10},
                "none": {"dream_frame": frames, "blend": frames - 1, "flow": 0},
                "bare": {"dream": frames},
                # any checkout: its blend and flow steps depend on its version, its dreams do not
                "base": {"dream_frame": frames},
            }
            times = {name: [] for name in [*variants, "bare", *(["base"] if baseline else [])]}
            for repeat in range(args.dag_repeats):
                for name in times:
                    directory = root / f"dag{frames}-{name}-{repeat}"
                    if name == "bare":
                        seconds, counts = bare_dag_seconds(directory, frames)
                    elif name == "base":
                        seconds, counts = dag_seconds(
                            directory, frames, snakefile=baseline / "Snakefile"
                        )
                    else:
                        seconds, counts = dag_seconds(directory, frames, **variants[name])
                    wrong = {
                        rule: counts.get(rule, 0)
                        for rule, jobs in expected[name].items()
                        if counts.get(rule, 0) != jobs
                    }
                    if wrong:
                        sys.exit(
                            f"(e) {name}: expected jobs {expected[name]}, the DAG has {counts}"
                        )
                    times[name].append(seconds)
                    shutil.rmtree(directory)
            one, ten, none, bare = (
                statistics.median(times[name]) for name in ("one", "ten", "none", "bare")
            )
            target = 10 if frames <= 10_000 else 90
            rows.append(
                (
                    f"(e) dry-run DAG, {frames:,} frames, flow dis, one scene",
                    f"{one:.1f} s  (target <= {target} s)",
                )
            )
            rows.append(
                (
                    "    the same, ten scenes",
                    f"{ten:.1f} s  (ten / one {ten / one:.2f}, target <= 1.0)",
                )
            )
            rows.append(
                (
                    "    flow none (blend steps, no flow steps), one scene",
                    f"{none:.1f} s  (flow none / flow dis {none / one:.2f})",
                )
            )
            rows.append(
                (
                    "    bare Snakefile of the old DAG shape",
                    f"{bare:.1f} s  (one scene / bare {one / bare:.2f})",
                )
            )
            if baseline:
                before = statistics.median(times["base"])
                rows.append(
                    (
                        f"    {baseline}, blend constant, its shipped flow",
                        f"{before:.1f} s  (one scene / baseline {one / before:.2f}, "
                        f"flow none / baseline {none / before:.2f})",
                    )
                )

        if "a" in parts:
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
                    '"jpg_quality": 95}',
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

        if "g" in parts:
            # (g) alternating, so that load changes hit all alike; every run starts its own server
            frames = args.chain_frames
            variants = {
                "g0": dict(blend="none"),
                "g1": dict(blend="constant", flow="none"),
                "g2": dict(blend="constant", flow="dis"),
            }
            if baseline:
                variants["g3"] = dict(blend="constant", checkout=baseline)
            times = {name: [] for name in variants}
            for repeat in range(args.repeats):
                for name, options in variants.items():
                    directory = root / f"chain-{name}-{repeat}"
                    times[name].append(
                        chain_seconds(directory, frames, chain_server_dir, **options)
                    )
                    shutil.rmtree(directory)
            wall = {name: statistics.median(run[0] for run in runs) for name, runs in times.items()}
            pace = {name: statistics.median(run[1] for run in runs) for name, runs in times.items()}
            labels = {
                "g0": f"(g) chain of {frames} frames, tiny dream; g0: blend none",
                "g1": "    g1: blend constant, flow none",
                "g2": "    g2: blend constant, flow dis",
                "g3": f"    g3: {baseline}, blend constant, its shipped flow",
            }
            for name in times:
                rows.append(
                    (
                        labels[name],
                        f"{wall[name]:.3f} s/frame  ({pace[name]:.3f} s/frame first to last dream)",
                    )
                )
            if baseline:
                for name in ("g1", "g2"):
                    rows.append(
                        (
                            f"    {name} / g3",
                            f"{wall[name] / wall['g3']:.2f}  "
                            f"({pace[name] / pace['g3']:.2f} first to last dream)",
                        )
                    )
                rows.append(
                    (
                        "    g2 - g3",
                        f"{(wall['g2'] - wall['g3']) * 1000:.0f} ms/frame  "
                        f"({(pace['g2'] - pace['g3']) * 1000:.0f} ms/frame first to last dream)",
                    )
                )
        if "h" in parts:
            rows += breakdown_rows(root, args.chain_frames, args.repeats, baseline)
    finally:
        for folder in (server_dir, chain_server_dir, root / "h-sockets"):
            stop_servers(folder)
        shutil.rmtree(root, ignore_errors=True)
    runs = []
    if "a" in parts:
        runs.append(f"(a)-(d) {args.frames} frames of {WIDTH}x{HEIGHT}")
    if "e" in parts:
        runs.append(f"(e) medians of {args.dag_repeats} dry runs")
    if parts & {"g", "h"}:
        runs.append(f"(g), (h) {args.chain_frames} frames of {WIDTH}x{HEIGHT}")
    if parts & {"a", "g", "h"}:
        runs.append(f"medians of {args.repeats} runs")
    print(", ".join(runs) + f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
