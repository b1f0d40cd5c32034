"""Makes workflow/resources/demo/occlusion.mp4: a slow pan over the cat photo with a striped disc
sliding across in front of it.

The bundled demo clip only pans, so every pixel of one frame is somewhere in the next and a blend
chain never meets new picture. Here the disc covers the cat on its leading edge and uncovers it on
its trailing edge, every frame: a blend that carries the previous dream without minding the flow's
reliability leaves a ghost of the disc (or of the cat it hid) where the other now is. The disc is
striped so that the flow can follow it and the dream has texture to grow on.

    .venv/bin/python tests/benchmarks/make_occlusion_clip.py [-o PATH]

The frames are drawn here (numpy, PIL) and piped to ffmpeg as raw RGB, so the clip depends only on
chelsea.jpg and on this script; 2 s of 320x180 at 25 fps, H.264, no audio, under 50 KB.
"""

import argparse
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "workflow" / "resources" / "demo"

WIDTH, HEIGHT, FPS, FRAMES = 320, 180, 25, 50
PAN_X, PAN_Y = 1.0, 0.5  # background pan, pixels per frame: slow, as a camera drifts
DISC_RADIUS = 34
DISC_STEP = 6.5  # pixels per frame: fast against the background, so occlusion is plain to see
DISC_Y = 96
STRIPE_PERIOD = 22  # pixels between stripes: far more than a step, so the flow cannot alias
DISC_COLOURS = ((230, 70, 40), (250, 215, 60))


def background(photo, frame):
    """The photo panned by (PAN_X, PAN_Y) pixels per frame: a crop of a slightly enlarged copy, so
    the pan never runs off the picture."""
    x, y = frame * PAN_X, frame * PAN_Y
    crop = (x, y, x + WIDTH, y + HEIGHT)
    return np.asarray(
        photo.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC, box=crop), dtype=np.float32
    )


def disc(frame):
    """The disc's colour layer and its anti-aliased coverage (0..1) for `frame`.

    Diagonal stripes that move with the disc: its texture translates with it, as an object's does.
    """
    centre_x = -DISC_RADIUS + frame * DISC_STEP
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    dx, dy = xs - centre_x, ys - DISC_Y
    coverage = np.clip(DISC_RADIUS - np.hypot(dx, dy) + 0.5, 0.0, 1.0)
    stripe = (np.floor((dx + dy) / (STRIPE_PERIOD / 2)) % 2).astype(bool)
    colour = np.where(stripe[..., None], DISC_COLOURS[0], DISC_COLOURS[1]).astype(np.float32)
    return colour, coverage[..., None]


def frame_rgb(photo, frame):
    colour, coverage = disc(frame)
    mixed = background(photo, frame) * (1.0 - coverage) + colour * coverage
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEMO / "occlusion.mp4")
    args = parser.parse_args()

    photo = Image.open(DEMO / "chelsea.jpg").convert("RGB")
    # enlarged just enough to hold the whole pan
    needed_w = WIDTH + PAN_X * (FRAMES - 1) + 2
    needed_h = HEIGHT + PAN_Y * (FRAMES - 1) + 2
    scale = max(needed_w / photo.width, needed_h / photo.height)
    photo = photo.resize(
        (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS
    )

    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{WIDTH}x{HEIGHT}",
        "-r",
        str(FPS),
        "-i",
        "pipe:0",
        "-c:v",
        "libx264",
        "-preset",
        "veryslow",
        "-crf",
        "20",
        "-pix_fmt",
        "yuv420p",
        # one thread: the same bytes on every machine
        "-threads",
        "1",
        "-movflags",
        "+faststart",
        str(args.output),
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(command, stdin=subprocess.PIPE) as encoder:
        for frame in range(FRAMES):
            encoder.stdin.write(frame_rgb(photo, frame).tobytes())
        encoder.stdin.close()
    if encoder.returncode != 0:
        raise SystemExit(f"ffmpeg failed with exit status {encoder.returncode}")
    print(f"{args.output}: {FRAMES} frames, {args.output.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
