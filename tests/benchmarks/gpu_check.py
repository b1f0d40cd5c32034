"""Does dreamflow use a CUDA GPU well? One command, one table, within a time budget in seconds.

    .venv/bin/python tests/benchmarks/gpu_check.py [--budget 480]

On a machine with CUDA it
(1) runs the tests marked `cuda` (tests/test_cuda.py: every CUDA path with real parts) as
    `python -m pytest -m cuda` in a subprocess, given at most a quarter of the budget, and counts
    what passed, failed and was skipped;
(2) times one dream per configuration: EfficientNet-Lite0 (its embedded ImageNet weights) and a
    random-init GoogLeNet (layer inception4c), frames of 320x180, 1280x720 and 1920x1080,
    precision float32, bfloat16 and float16, channels_last on and off, cudnn_benchmark on and off,
    the other dream settings the config schema's defaults (3 octaves of 10 steps). Each
    configuration dreams once to warm up (cudnn_benchmark times its algorithms in its first pass)
    and once timed, with torch.cuda.synchronize around it, with its peak GPU memory (the model's
    weights included). Its ratio is to float32, channels_last on, cudnn_benchmark off (the shipped
    settings) of the same model and frame size;
(3) runs the real workflow (`snakemake`, dream.device cuda, the shipped dream settings) on a
    60-frame 1280x720 clip through the model server, blend none and blend constant with the
    shipped flow, and gives its s/frame against the warm floor: the per-frame time of the same
    dream in one warm process (its first frame, the warm-up, left out).
Absolute times are context; the ratios are the figures to compare. What would not fit in the
budget (estimated from what has run so far) is skipped, and the table says what and why.

channels_last on is how dreamflow dreams: the weights in channels_last, so the convolutions run
channels_last whatever the layout of their input. Off: the weights and the input image in the
default NCHW-contiguous layout throughout (Dreamer(..., channels_last=False), and the frame handed
to Dreamer.dream_array as a view of a (3, H, W) buffer, which images.to_tensor turns into an
NCHW-contiguous tensor).

Without CUDA it runs the same code at tiny sizes: frames of 64x36 and 96x54, 1 octave of 1 step
on one torch thread, the three precisions (autocast works on the CPU too), cudnn_benchmark off
only (it has no effect on the CPU), and a 3-frame 64x36 workflow on dream.device cpu. Those
figures say nothing about a GPU; tests/test_gpu_check.py runs this path in CI.

Exit status 1 when a `cuda` test or a workflow run failed, else 0: what was skipped, or stopped
at the end of the budget, is no failure.
Not a test: it takes minutes and its figures depend on the machine and its load.
"""

import argparse
import copy
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# a script beside this one, which puts tests/ and workflow/ on sys.path
from workflow_overhead import (
    PYTHON,
    REPO,
    server_pids,
    snakemake,
    stop_servers,
    warm_per_frame,
    write_project,
)

NO_GPU = "no GPU found: ran the CPU path at tiny sizes; figures say nothing about a GPU"
MODELS = ("efficientnet_lite0", "googlenet")  # GoogLeNet random-init: no weights file needed
GOOGLENET_LAYER = "inception4c"
PYTEST_SHARE = 0.25  # of the budget, at most, for `pytest -m cuda`
WORKFLOW_SHARE = 0.4  # of the budget, kept for the workflow while the dreams are timed
MARGIN_S = 3.0  # for the table and the clean-up after the last part
# a workflow run's fixed costs (start-up, extraction, scene detection, the server's start, the
# encode) and the cost of each frame's jobs besides the dream: guesses until a run has measured them
RUN_FIXED_S = 20.0
JOB_OVERHEAD_S = 1.0


@dataclass(frozen=True)
class Plan:
    """What one kind of machine measures."""

    device: str
    sizes: tuple  # (width, height) of the timed dreams
    precisions: tuple
    cudnn: tuple  # cudnn_benchmark settings
    dream: dict  # over the schema defaults, for the timed dreams and the workflow alike
    workflow_frames: int
    workflow_size: tuple
    floor_frames: int  # timed by the warm floor after its warm-up frame
    threads: int | None  # torch threads of the timed dreams; None: torch's default
    left_out: tuple = ()  # ({column: value}, why) of what this plan does not measure


GPU_PLAN = Plan(
    device="cuda",
    sizes=((320, 180), (1280, 720), (1920, 1080)),
    precisions=("float32", "bfloat16", "float16"),
    cudnn=(False, True),
    dream={},
    workflow_frames=60,
    workflow_size=(1280, 720),
    floor_frames=20,
    threads=None,
)

CPU_PLAN = Plan(
    device="cpu",
    sizes=((64, 36), (96, 54)),
    # float16 autocast works on the CPU too, if slowly (config schema: about 14x): at these sizes
    # it costs little, and it runs the float16 path of the engine before a GPU does
    precisions=("float32", "bfloat16", "float16"),
    cudnn=(False,),
    dream={"octaves": 1, "iterations": 1},
    workflow_frames=3,
    workflow_size=(64, 36),
    floor_frames=2,
    # tiny dreams on two threads wait for each other more than they compute, and far more so
    # when other work shares the cores
    threads=1,
    left_out=(({"cudnn": "on"}, "cudnn_benchmark has no effect on the CPU"),),
)


class Clock:
    """The budget: the seconds left before a deadline, and whether an estimate fits in them."""

    def __init__(self, budget):
        self.start = time.monotonic()
        self.budget = budget
        self.end = self.start + budget - MARGIN_S

    def elapsed(self):
        return time.monotonic() - self.start

    def left(self, until=None):
        return (self.end if until is None else min(until, self.end)) - time.monotonic()

    def fits(self, estimate, until=None):
        """None when `estimate` seconds (None: not known yet) fit before `until` (default: the
        end of the budget), else why not."""
        left = self.left(until)
        if left > 0 and (estimate is None or estimate <= left):
            return None
        needs = "" if estimate is None else f"needs ~{estimate:.0f} s, "
        return f"would not fit: {needs}{max(left, 0):.0f} s left"


@dataclass
class Row:
    """One line of the table; `seconds` is what `time` shows, None when nothing was measured."""

    part: str
    model: str = "-"
    size: str = "-"
    precision: str = "-"
    channels_last: str = "-"
    cudnn: str = "-"
    time: str = "-"
    ratio: str = "-"
    memory: str = "-"
    note: str = ""
    seconds: float | None = None

    def skip(self, why, word="skipped"):
        self.time, self.note = word, f"{self.note}: {why}" if self.note else why
        return self


COLUMNS = (
    ("part", "part"),
    ("model", "model"),
    ("size", "size"),
    ("precision", "precision"),
    ("channels_last", "channels_last"),
    ("cudnn", "cudnn_benchmark"),
    ("time", "time"),
    ("ratio", "ratio"),
    ("memory", "peak GPU memory"),
    ("note", "note"),
)


def on_off(value):
    return "on" if value else "off"


def size_text(size):
    return f"{size[0]}x{size[1]}"


# ---- (1) the tests marked cuda ----

SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?)\b")


def run_cuda_tests(clock):
    """`pytest -m cuda` in a subprocess, given its share of the budget: a Row, and whether a test
    failed."""
    row = Row("pytest", note="-m cuda")
    timeout = min(PYTEST_SHARE * clock.budget, clock.left())
    if timeout <= 0:
        return row.skip("no time left"), False
    command = [PYTHON, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider"]
    start = time.monotonic()
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return row.skip(f"stopped after {timeout:.0f} s", word="timed out"), False
    row.seconds = time.monotonic() - start
    row.time = f"{row.seconds:.1f} s"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, word in SUMMARY.findall(lines[-1] if lines else ""):
        counts["errors" if word.startswith("error") else word] += int(number)
    # -rfEs lines: "SKIPPED [7] tests/test_cuda.py:47: reason", "FAILED tests/test_x.py::name - ..."
    reasons = sorted({line.rsplit(": ", 1)[-1] for line in lines if line.startswith("SKIPPED")})
    failed = [
        line.split()[1].split("::")[-1]
        for line in lines
        if line.startswith(("FAILED ", "ERROR ")) and len(line.split()) > 1
    ]
    row.note = (
        f"-m cuda: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped"
    )
    if counts["errors"]:
        row.note += f", {counts['errors']} errors"
    if reasons:
        row.note += f" ({'; '.join(reasons)})"
    if failed:
        row.note += f"; failed: {', '.join(failed[:3])}" + (" ..." if len(failed) > 3 else "")
    if result.returncode not in (0, 1, 5):  # 5: no test collected
        row.note += f"; pytest exit {result.returncode}: {lines[-1] if lines else 'no output'}"
    return row, result.returncode not in (0, 5)


# ---- (2) one dream per configuration ----


def dream_settings(model, plan):
    """The schema defaults, the plan's dream settings over them, the model and its layer."""
    from dreamflow import config

    schema = config.load_schema()
    overrides = {**plan.dream, "model": model, "device": plan.device}
    if model == "googlenet":
        overrides["layers"] = [GOOGLENET_LAYER]
    return config.resolve_dream(config.fill_defaults(overrides, schema["$defs"]["dream"], schema))


def variant(dreamer, precision, cudnn_benchmark):
    """`dreamer` with another precision and cudnn_benchmark around the same loaded model: a dream
    reads them from dreamer.params and dreamer.settings, and loading the model again for every
    configuration would cost more than its dreams."""
    from dreamflow import engine

    other = copy.copy(dreamer)
    other.settings = {
        **dreamer.settings,
        "precision": precision,
        "cudnn_benchmark": cudnn_benchmark,
    }
    other.params = engine.DreamParams.from_settings(other.settings)
    return other


def frame_in_layout(array, channels_last):
    """The frame for Dreamer.dream_array. images.to_tensor permutes an (H, W, 3) array to
    (1, 3, H, W): a plain (H, W, 3) array comes out channels_last in memory, as dreamflow reads
    frames; a view of a planar (3, H, W) buffer comes out NCHW-contiguous, for a model without
    channels_last."""
    import numpy as np
    import torch

    from dreamflow.images import to_tensor

    if channels_last:
        frame, layout = np.array(array), torch.channels_last
    else:
        frame = np.ascontiguousarray(array.transpose(2, 0, 1)).transpose(1, 2, 0)
        layout = torch.contiguous_format
    if not to_tensor(frame).is_contiguous(memory_format=layout):
        raise RuntimeError("images.to_tensor no longer keeps the memory layout of the frame")
    return frame


def timed_dream(dreamer, frame, gpu):
    """(warm-up seconds, timed seconds, peak GPU bytes or None) of one configuration."""
    import torch

    start = time.perf_counter()
    dreamer.dream_array(frame)
    if gpu:
        torch.cuda.synchronize()
    warm_up = time.perf_counter() - start
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = dreamer.dream_array(frame)
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if result.shape != frame.shape or result.dtype.name != "uint8":
        raise RuntimeError(f"a dream gave {result.dtype} {result.shape} for {frame.shape}")
    return warm_up, seconds, torch.cuda.max_memory_allocated() if gpu else None


class Estimates:
    """The seconds a configuration (warm-up and timed dream) or a model load will take, from what
    has run so far: the slowest configuration of the same model and size, else the slowest per
    pixel of the model (or of any model) times the pixels; None before anything has run."""

    def __init__(self):
        self.dreams = []  # (model, pixels, seconds)
        self.loads = {}

    def dream(self, model, pixels):
        same = [s for m, p, s in self.dreams if (m, p) == (model, pixels)]
        if same:
            return max(same)
        rates = [s / p for m, p, s in self.dreams if m == model] or [
            s / p for _, p, s in self.dreams
        ]
        return max(rates) * pixels if rates else None

    def load(self, model):
        return self.loads.get(model, max(self.loads.values(), default=None))


def time_dreams(plan, clock, until, gpu):
    """A Row per configuration, measured or skipped, and a row per thing the plan leaves out."""
    import torch

    from dreamflow.dreamstep import Dreamer
    from helpers import pattern_array

    rows = []
    estimates = Estimates()
    frames = {size: pattern_array(size[1], size[0], seed=0) for size in plan.sizes}
    for model in MODELS:
        settings = dream_settings(model, plan)
        # channels_last outermost: one model load per setting of it
        for channels_last in (True, False):
            configurations = [
                (size, precision, cudnn)
                for size in plan.sizes
                for precision in plan.precisions
                for cudnn in plan.cudnn
            ]
            model_rows = [
                Row(
                    "dream",
                    model,
                    size_text(size),
                    precision,
                    on_off(channels_last),
                    on_off(cudnn),
                )
                for size, precision, cudnn in configurations
            ]
            rows += model_rows
            why = clock.fits(estimates.load(model), until)
            if why:
                for row in model_rows:
                    row.skip(f"{why} (loading the model)")
                continue
            start = time.perf_counter()
            dreamer = Dreamer(
                settings,
                threads=plan.threads,
                pretrained=model != "googlenet",
                channels_last=channels_last,
            )
            estimates.loads[model] = time.perf_counter() - start
            for row, (size, precision, cudnn) in zip(model_rows, configurations, strict=True):
                pixels = size[0] * size[1]
                why = clock.fits(estimates.dream(model, pixels), until)
                if why:
                    row.skip(why)
                    continue
                frame = frame_in_layout(frames[size], channels_last)
                warm_up, seconds, peak = timed_dream(variant(dreamer, precision, cudnn), frame, gpu)
                estimates.dreams.append((model, pixels, warm_up + seconds))
                row.seconds, row.time = seconds, f"{seconds:.3f} s"
                row.memory = "n/a" if peak is None else f"{peak / 2**20:.0f} MiB"
                row.note = f"warm-up {warm_up:.3f} s"
            del dreamer
            if gpu:
                torch.cuda.empty_cache()
    shipped = {
        (row.model, row.size): row.seconds
        for row in rows
        if (row.precision, row.channels_last, row.cudnn) == ("float32", "on", "off")
    }
    for row in rows:
        if row.seconds is not None and shipped[(row.model, row.size)]:
            row.ratio = f"{row.seconds / shipped[(row.model, row.size)]:.2f}"
    for columns, why in plan.left_out:
        rows.append(Row("dream", model="all", size="all", **columns).skip(why, word="not run"))
    return rows


# ---- (3) the real workflow against the warm floor ----


def served_count(directory):
    """(dream jobs that the model server dreamed, dream jobs) of a finished run, from their
    logs."""
    logs = list((directory / "work" / "clip" / "logs" / "dream").glob("*.log"))
    return sum("dreamed by the model server" in log.read_text() for log in logs), len(logs)


def warm_floor(plan, clock, frames_dir, dream, per_frame):
    """The floor's Row: the median per-frame time in one warm process, its first frame left
    out."""
    row = shipped_row("floor", plan, f"one warm process, {plan.floor_frames} frames")
    if not frames_dir.is_dir():
        return row.skip("needs the frames of the blend none run")
    # a process start, torch's import and a model load, then the frames
    why = clock.fits(10.0 + (plan.floor_frames + 1) * per_frame * 1.5)
    if why:
        return row.skip(why)
    try:
        times = warm_per_frame(frames_dir, plan.floor_frames + 1, dream=dream, timeout=clock.left())
    except subprocess.TimeoutExpired:
        return row.skip("stopped at the end of the budget", word="timed out")
    row.seconds = statistics.median(times[1:])
    row.time, row.ratio = f"{row.seconds:.3f} s/frame", "1.00"
    return row


def shipped_row(part, plan, note):
    """A Row of the shipped dream settings at the workflow's frame size."""
    return Row(
        part,
        "efficientnet_lite0",
        size_text(plan.workflow_size),
        "float32",
        channels_last="on",
        cudnn="off",
        note=note,
    )


def workflow_run(plan, clock, directory, blend, estimate, env, details):
    """A Row of one real run through the model server: its wall time per frame."""
    frames, label = plan.workflow_frames, "blend none"
    if blend == "constant":
        label = "blend constant, flow dis"
    row = shipped_row(
        "workflow", plan, f"{label}, {frames} frames, model server, dream.device {plan.device}"
    )
    why = clock.fits(estimate)
    if why:
        return row.skip(why)
    server_dir = Path(env["DREAMFLOW_SERVER_DIR"])
    write_project(
        directory,
        frames,
        blend=blend,
        dream={**plan.dream, "device": plan.device},
        size=size_text(plan.workflow_size),
    )
    try:
        seconds, _ = snakemake(
            directory,
            "results/clip/clip.mp4",
            env=env,
            cores=os.cpu_count(),
            timeout=clock.left(),
        )
    except subprocess.TimeoutExpired:
        return row.skip("stopped at the end of the budget", word="timed out")
    except SystemExit as error:  # snakemake() exits with the run's last lines
        details.append(f"{label}: {error}")
        return row.skip("snakemake failed (its output is below the table)", word="failed")
    finally:
        servers = server_pids(server_dir)
        stop_servers(server_dir)
    served, jobs = served_count(directory)
    row.seconds = seconds / frames
    row.time = f"{row.seconds:.3f} s/frame"
    row.note += f"; {served} of {jobs} frames by the server"
    if not servers:
        row.note += " (none was running at the end)"
    return row


def run_workflow(plan, clock, root, dream_seconds, details):
    """The warm floor's Row and those of the runs, blend none and blend constant (the shipped
    flow), with the runs' ratios to the floor."""
    frames = plan.workflow_frames
    env = {"DREAMFLOW_SERVER_DIR": str(root / "servers"), "DREAMFLOW_SERVER_IDLE": "10"}
    per_frame = dream_seconds or 1.0
    guess = RUN_FIXED_S + frames * (per_frame + JOB_OVERHEAD_S)
    unblended = workflow_run(plan, clock, root / "none", "none", guess, env, details)
    floor = warm_floor(
        plan,
        clock,
        root / "none" / "work" / "clip" / "frames",
        plan.dream | {"device": plan.device},
        per_frame,
    )
    if unblended.seconds is not None:
        # the fixed costs as measured, and a chain dreams one frame at a time, each after its
        # blend step
        guess = unblended.seconds * frames + frames * (
            (floor.seconds or per_frame) + JOB_OVERHEAD_S
        )
    blended = workflow_run(plan, clock, root / "constant", "constant", guess, env, details)
    for row in (unblended, blended):
        if row.seconds is not None and floor.seconds:
            row.ratio = f"{row.seconds / floor.seconds:.2f}"
    return [floor, unblended, blended], "failed" in (unblended.time, blended.time)


# ---- the table ----


def print_table(header, rows, details):
    for line in header:
        print(line)
    cells = [[title for _, title in COLUMNS]] + [
        [str(getattr(row, name)) for name, _ in COLUMNS] for row in rows
    ]
    widths = [max(len(line[index]) for line in cells) for index in range(len(COLUMNS) - 1)]
    for line in cells:
        padded = [f"{text:<{width}}" for text, width in zip(line[:-1], widths, strict=True)]
        print("  ".join([*padded, line[-1]]).rstrip())
    for detail in details:
        print()
        print(detail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=480, help="seconds for the whole check (default 480)"
    )
    args = parser.parse_args()
    clock = Clock(args.budget)

    import torch

    gpu = torch.cuda.is_available()
    plan = GPU_PLAN if gpu else CPU_PLAN
    details = []

    pytest_row, failed = run_cuda_tests(clock)
    dream_rows = time_dreams(plan, clock, clock.start + args.budget * (1 - WORKFLOW_SHARE), gpu)
    if gpu:
        torch.cuda.empty_cache()  # the model server of the workflow runs wants the memory
    # the estimates of the workflow: the shipped dream at the workflow's frame size
    dream_seconds = next(
        (
            row.seconds
            for row in dream_rows
            if (row.model, row.size, row.precision, row.channels_last, row.cudnn)
            == ("efficientnet_lite0", size_text(plan.workflow_size), "float32", "on", "off")
        ),
        None,
    )
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        workflow_rows, workflow_failed = run_workflow(plan, clock, root, dream_seconds, details)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    load = os.getloadavg()
    header = [
        f"dreamflow GPU check: budget {args.budget:.0f} s, took {clock.elapsed():.0f} s",
        f"torch {torch.__version__}; GPU: {torch.cuda.get_device_name() if gpu else 'none'}; "
        f"{os.cpu_count()} CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]
    if not gpu:
        header.append(NO_GPU)
    header += [
        "dream: one timed dream after a warm-up; ratio: to float32, channels_last on, "
        "cudnn_benchmark off (the shipped settings) of the same model and size",
        "channels_last on: as dreamflow dreams (the weights channels_last); off: the weights and "
        "the input image NCHW-contiguous",
        "floor and workflow: s/frame of the shipped dream; ratio: to the warm floor",
        "times are context, compare the ratios",
    ]
    print_table(header, [pytest_row, *dream_rows, *workflow_rows], details)
    return 1 if failed or workflow_failed else 0


if __name__ == "__main__":
    sys.exit(main())
