"""Peak memory of one dream step, untiled and tiled: does tiling bound memory by the tile size?

Not a test (pytest does not collect it). Run from the repository root:

    .venv/bin/python tests/benchmarks/peak_memory.py

Each case runs in a fresh subprocess: one dream step (octaves 1, iterations 1) of a noise image
with the embedded EfficientNet-Lite0 at layer block10. A warm-up step on a small image first loads
the code and thread pools the step uses (hundreds of MiB of library pages, faulted in or not
depending on what the machine evicted), then the peak resident set size is reset
(/proc/self/clear_refs); "model loaded" is the RSS just before the measured step, and what the step
itself adds is the peak minus that.
"""

import argparse
import json
import subprocess
import sys
import time

SIZES = ((1080, 1920), (2160, 3840))
TILE_SIZES = (None, 512)
LAYER = "block10"
WARM_UP_SIDE = 320  # pixels: a step on it loads what the measured step runs


def status_mib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def resident_mib():
    return status_mib("VmRSS")


def reset_peak():
    """Start the peak resident set size (VmHWM) over from the present RSS (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure_one_step(height, width, tile_size, threads):
    """Dream one step in this process and return its measurements."""
    import torch

    from dreamflow import engine, models, objectives

    torch.set_num_threads(threads)
    model = models.build("efficientnet_lite0")
    model.to(memory_format=torch.channels_last)  # as the Dreamer runs it
    objective = objectives.parse(LAYER)
    image = engine.noise_image(height, width, seed=0)
    params = engine.DreamParams(octaves=1, iterations=1, tile_size=tile_size)
    warm_up = WARM_UP_SIDE if tile_size is None else tile_size + engine.TILE_ALIGN
    engine.dream(model, objective, engine.noise_image(warm_up, warm_up, seed=1), params)
    reset_peak()
    loaded = resident_mib()
    start = time.perf_counter()
    engine.dream(model, objective, image, params)
    seconds = time.perf_counter() - start
    peak = status_mib("VmHWM")
    return {"loaded_mib": loaded, "peak_mib": peak, "seconds": seconds}


def run_case(height, width, tile_size, threads):
    command = [
        sys.executable,
        __file__,
        "--child",
        str(height),
        str(width),
        str(tile_size or 0),
        "--threads",
        str(threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(rows):
    header = (
        f"{'size':>10}  {'tiling':>8}  {'model loaded MiB':>16}  {'peak RSS MiB':>12}  "
        f"{'seconds':>8}  {'peak tiled/untiled':>18}"
    )
    print(header)
    print("-" * len(header))
    untiled_peak = {}
    for (height, width), tile_size, measured in rows:
        size = f"{width}x{height}"
        if tile_size is None:
            untiled_peak[size] = measured["peak_mib"]
            ratio = ""
        else:
            ratio = (
                f"{measured['peak_mib'] / untiled_peak[size]:.2f}" if size in untiled_peak else "?"
            )
        tiling = "off" if tile_size is None else str(tile_size)
        print(
            f"{size:>10}  {tiling:>8}  {measured['loaded_mib']:>16.0f}  "
            f"{measured['peak_mib']:>12.0f}  {measured['seconds']:>8.1f}  {ratio:>18}",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--child",
        nargs=3,
        type=int,
        metavar=("HEIGHT", "WIDTH", "TILE"),
        help="internal: measure one case in this process (TILE 0 = no tiling)",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        height, width, tile_size = args.child
        print(json.dumps(measure_one_step(height, width, tile_size or None, args.threads)))
        return
    rows = []
    for size in SIZES:
        for tile_size in TILE_SIZES:
            print(
                f"measuring {size[1]}x{size[0]}, tiling {tile_size or 'off'} ...",
                file=sys.stderr,
                flush=True,
            )
            rows.append((size, tile_size, run_case(*size, tile_size, args.threads)))
    print(
        f"one dream step (octaves 1, iterations 1), efficientnet_lite0 {LAYER}, "
        f"{args.threads} threads"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
