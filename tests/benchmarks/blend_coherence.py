"""How much temporal coherence does each blend variant buy? Prints one table per clip.

    .venv/bin/python tests/benchmarks/blend_coherence.py [--iterations N] [--octaves N]
        [--width PX] [--variant NAME:key=value,...] [--keep DIR] [--strip PATH]

Each clip (the bundled demo.mp4, a pan, and occlusion.mp4, a pan with a disc sliding across it: see
make_occlusion_clip.py) is dreamed by the real workflow once per variant, with the same dream
settings (config.yaml's, unless shrunk with --iterations, --octaves, --width):

    none            independent frames (blend.mode none)
    constant        factor 0.5, flow none: the previous dream stays where it was on the screen
    warped detail   factor 0.5, flow dis, carry detail: the dream's detail follows the picture
    warped frame    factor 0.5, flow dis, carry frame: the dreamed frame follows the picture

and each run's results/<clip>/coherence.json is read back. Its ratio, (E_warp dreamed - E_warp
raw) / strength^2, is the coherence figure that stays comparable when variants dream with
different strengths: lower is more coherent. A variant that wins on ratio but loses strength has
only dreamed less, hence the strength check beside the "times more coherent" figure.

--variant adds rows: its keys are dotted config keys laid over config.yaml, e.g.
--variant "detail 0.8:blend.mode=constant,blend.factor=0.8,blend.flow=dis,blend.carry=detail".
--strip writes a small JPEG of four occlusion frames: raw, constant and warped detail, one row each.

Not a test: with the default settings every run takes a minute or more on a 2-core CPU, and wall
times depend on the machine and its load. Runs go one after the other, so they never compete.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "workflow" / "resources" / "demo"
CLIPS = {"demo": DEMO / "demo.mp4", "occlusion": DEMO / "occlusion.mp4"}

VARIANTS = {
    "none": {"blend.mode": "none"},
    "constant": {"blend.mode": "constant", "blend.factor": 0.5, "blend.flow": "none"},
    "warped detail": {
        "blend.mode": "constant",
        "blend.factor": 0.5,
        "blend.flow": "dis",
        "blend.carry": "detail",
    },
    "warped frame": {
        "blend.mode": "constant",
        "blend.factor": 0.5,
        "blend.flow": "dis",
        "blend.carry": "frame",
    },
}
BASELINE = "constant"
STRIP_ROWS = ("raw", "constant", "warped detail")
STRIP_TILE_WIDTH = 200
STRIP_COLUMNS = 4


def parse_variant(text):
    """`NAME:key=value,...` -> (NAME, {dotted key: value}); values are read as YAML, so numbers,
    null and lists come out typed."""
    name, separator, assignments = text.partition(":")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:key=value,..., got '{text}'")
    overrides = {}
    for assignment in filter(None, (part.strip() for part in assignments.split(","))):
        key, equals, value = assignment.partition("=")
        if not equals or "." not in key:
            raise argparse.ArgumentTypeError(
                f"expected a dotted key=value such as blend.factor=0.8, got '{assignment}'"
            )
        overrides[key.strip()] = yaml.safe_load(value)
    return name.strip(), overrides


def set_dotted(config, key, value):
    *sections, last = key.split(".")
    for section in sections:
        config = config.setdefault(section, {})
    config[last] = value


def write_config(directory, clip, overrides):
    """config.yaml of one run: the project's own, with the clip as the only input and the
    variant's and the dream's overrides laid over it. The Snakefile reads config.yaml from its
    working directory, so the whole file goes there."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["inputs"] = {clip: {"path": str(CLIPS[clip])}}
    config["work_dir"] = "work"
    config["results_dir"] = "results"
    for key, value in overrides.items():
        set_dotted(config, key, value)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_workflow(directory, config_path, cores, env):
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(directory),
        "--configfile",
        str(config_path),
        "--cores",
        str(cores),
        "--quiet",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"the workflow failed in {directory} (exit status {result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return seconds


def number(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}g}"


def print_clip_table(clip, rows, settings):
    """The figures of every variant of one clip, then each flow variant against the baseline."""
    print(f"\n{clip}: {settings}")
    header = (
        "variant",
        "E_warp dreamed",
        "E_warp raw",
        "strength",
        "ratio",
        "ratio/const",
        "wall s",
    )
    table = [header]
    base = rows.get(BASELINE)
    for name, row in rows.items():
        figures = row["figures"]
        relative = None
        # a quotient of ratios means something only when both are positive
        if base and (base["figures"]["ratio"] or 0) > 0 and figures["ratio"] is not None:
            relative = figures["ratio"] / base["figures"]["ratio"]
        table.append(
            (
                name,
                number(figures["e_warp_dreamed"]),
                number(figures["e_warp_raw"]),
                number(figures["strength"]),
                number(figures["ratio"]),
                number(relative, 3),
                f"{row['seconds']:.0f}",
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for index, line in enumerate(table):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        print("  ".join(cells))
        if index == 0:
            print("  ".join("-" * width for width in widths))

    cuts = {name: row["figures"].get("scene_starts") for name, row in rows.items()}
    if any(cuts.values()):
        print(f"  scene cuts (pairs across them are not measured): {cuts}")
    if not base or base["figures"]["ratio"] is None:
        return
    base_ratio, base_strength = base["figures"]["ratio"], base["figures"]["strength"]
    for name, row in rows.items():
        if name in (BASELINE, "none"):
            continue
        ratio, strength = row["figures"]["ratio"], row["figures"]["strength"]
        # ratio <= 0: the dreamed video's warping error is at or below the raw video's, which a
        # weak or blurring dream can reach; "times more coherent" then has no meaning
        if ratio is None:
            times = "n/a"
        elif base_ratio <= 0:
            times = f"no quotient ({BASELINE}'s ratio {base_ratio:.3g} <= 0)"
        elif ratio <= 0:
            times = f"no quotient (ratio {ratio:.3g} <= 0: no error beyond the raw video's)"
        else:
            times = f"{base_ratio / ratio:.2f}x more coherent than {BASELINE}"
        verdict = "yes" if strength >= base_strength else "no"
        print(
            f"  {name}: {times}; strength {strength:.4f} >= {BASELINE}'s {base_strength:.4f}: "
            f"{verdict}"
        )


def frame_files(folder):
    return sorted(glob.glob(str(folder / "[0-9]*.png")) + glob.glob(str(folder / "[0-9]*.jpg")))


def write_strip(runs, clip, path):
    """Four frames of `clip` across, one row per STRIP_ROWS entry: the raw frames, then the dreams
    of the constant and warped detail runs. Frames come from the later part of the clip, where
    the moving object has crossed the picture and left uncovered background behind it."""
    from PIL import Image, ImageDraw, ImageFont

    raw = frame_files(runs["constant"] / "work" / clip / "frames")
    sources = {
        "raw": raw,
        **{name: frame_files(runs[name] / "work" / clip / "dreamed") for name in STRIP_ROWS[1:]},
    }
    count = min(len(files) for files in sources.values())
    picks = [
        round(count * (0.4 + 0.5 * column / (STRIP_COLUMNS - 1))) for column in range(STRIP_COLUMNS)
    ]
    picks = [min(max(pick, 1), count) for pick in picks]

    first = Image.open(raw[0])
    tile_w = STRIP_TILE_WIDTH
    tile_h = round(first.height * tile_w / first.width)
    label_w, header_h, gap = 84, 18, 2
    width = label_w + STRIP_COLUMNS * (tile_w + gap)
    height = header_h + len(STRIP_ROWS) * (tile_h + gap)
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    for column, pick in enumerate(picks):
        x = label_w + column * (tile_w + gap)
        draw.text((x + 4, 3), f"frame {pick}", fill=(40, 40, 40), font=font)
    for row, name in enumerate(STRIP_ROWS):
        y = header_h + row * (tile_h + gap)
        label = name.replace(" ", "\n", 1) if name != "raw" else "raw"
        draw.multiline_text((6, y + tile_h // 2 - 12), label, fill=(40, 40, 40), font=font)
        for column, pick in enumerate(picks):
            tile = Image.open(sources[name][pick - 1]).convert("RGB")
            tile = tile.resize((tile_w, tile_h), Image.Resampling.LANCZOS)
            strip.paste(tile, (label_w + column * (tile_w + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path, format="JPEG", quality=82, optimize=True, progressive=True)
    print(f"\nstrip: {path} ({path.stat().st_size / 1024:.0f} KiB), frames {picks}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", choices=list(CLIPS), default=list(CLIPS))
    parser.add_argument("--iterations", type=int, help="dream.iterations (default: config.yaml's)")
    parser.add_argument("--octaves", type=int, help="dream.octaves (default: config.yaml's)")
    parser.add_argument("--width", type=int, help="frames.width (default: the clip's)")
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="an extra row: dotted config keys over config.yaml (repeatable)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these variants (and the extra ones)"
    )
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default: 2)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the run folders in DIR")
    parser.add_argument("--strip", type=Path, metavar="PATH", help="write the occlusion strip")
    args = parser.parse_args()

    variants = dict(VARIANTS)
    if args.only:
        unknown = sorted(set(args.only) - set(VARIANTS))
        if unknown:
            parser.error(f"unknown variants {unknown}; built in: {list(VARIANTS)}")
        variants = {name: VARIANTS[name] for name in args.only}
    for name, overrides in args.variant:
        if name in variants:
            parser.error(f"variant '{name}' is already defined")
        variants[name] = overrides
    if args.strip and ("occlusion" not in args.clips or not set(STRIP_ROWS[1:]) <= set(variants)):
        parser.error(f"--strip needs the occlusion clip and the variants {list(STRIP_ROWS[1:])}")

    dream = {}
    if args.iterations is not None:
        dream["dream.iterations"] = args.iterations
    if args.octaves is not None:
        dream["dream.octaves"] = args.octaves
    if args.width is not None:
        dream["frames.width"] = args.width
    defaults = yaml.safe_load((REPO / "config.yaml").read_text())
    settings = (
        f"iterations {args.iterations or defaults['dream']['iterations']}, "
        f"octaves {args.octaves or defaults['dream']['octaves']}, "
        f"width {args.width or 'source'}, layers {defaults['dream']['layers']}, "
        f"model {defaults['dream']['model']}, --cores {args.cores}"
    )

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="blend-coherence-", dir=args.keep))
    else:
        root = Path(tempfile.mkdtemp(prefix="blend-coherence-"))
    # a private server directory: these runs' model servers are ours alone, and end with us
    server_dir = Path(tempfile.mkdtemp(prefix="dfsrv-"))
    env = {**os.environ, "DREAMFLOW_SERVER_DIR": str(server_dir), "DREAMFLOW_SERVER_IDLE": "5"}
    results, runs, started = {}, {}, time.perf_counter()
    try:
        for clip in args.clips:
            results[clip], runs[clip] = {}, {}
            for name, overrides in variants.items():
                directory = root / clip / name.replace(" ", "_").replace("/", "_")
                directory.mkdir(parents=True)
                config_path = write_config(directory, clip, {**overrides, **dream})
                print(f"running {clip} / {name} ...", file=sys.stderr, flush=True)
                seconds = run_workflow(directory, config_path, args.cores, env)
                figures = json.loads((directory / "results" / clip / "coherence.json").read_text())
                figures.pop("per_frame", None)
                results[clip][name] = {"figures": figures, "seconds": seconds}
                runs[clip][name] = directory
                print(f"  {seconds:.0f} s", file=sys.stderr, flush=True)
        for clip in args.clips:
            print_clip_table(clip, results[clip], settings)
        total = time.perf_counter() - started
        print(
            f"\n{sum(len(rows) for rows in results.values())} runs in {total / 60:.1f} min, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        if args.strip:
            write_strip(runs["occlusion"], "occlusion", args.strip)
        if args.keep:
            print(f"run folders: {root}")
    finally:
        for pid_file in glob.glob(str(server_dir / "*.pid")):
            try:
                os.kill(int(Path(pid_file).read_text().strip()), 15)
            except (ValueError, OSError):
                pass
        shutil.rmtree(server_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
