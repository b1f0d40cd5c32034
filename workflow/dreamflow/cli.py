"""The `dreamflow` command: a thin layer over the package, used by the workflow's rules and by people.

Errors a user can fix are printed as one line, without a traceback, with exit status 1.
"""

import argparse
import json
import os
import sys

from .errors import DreamflowError


def _settings(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DreamflowError(f"--settings is not valid JSON: {error}") from None


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DreamflowError(f"file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DreamflowError(f"{path} is not valid JSON: {error}") from None


def cmd_probe(args):
    from . import video

    video.write_probe(args.input, args.output)


def cmd_extract(args):
    from . import video

    count = video.extract(_read_json(args.probe), _settings(args.settings), args.output, args.threads)
    print(f"extracted {count} frames to {args.output}", file=sys.stderr)


def cmd_dream_frame(args):
    from .dreamstep import Dreamer, dream_frame_file

    settings = _settings(args.settings)
    dreamer = Dreamer(settings["dream"], threads=args.threads)
    dream_frame_file(dreamer, args.frame, args.output, args.number, settings["blend"],
                     previous_path=args.previous, jpg_quality=settings["jpg_quality"])


def cmd_encode(args):
    from . import video
    from .frames import frame_name

    settings = _settings(args.settings)
    suffix = "." + settings["frames"]["format"]
    frame_paths = [os.path.join(args.frames_dir, frame_name(n) + suffix) for n in range(1, args.count + 1)]
    missing = [p for p in frame_paths if not os.path.isfile(p)]
    if missing:
        raise DreamflowError(f"{len(missing)} dreamed frames are missing, first: {missing[0]}")
    video.encode(_read_json(args.probe), settings["frames"], settings["encode"], frame_paths,
                 args.output, args.threads)


def cmd_dream(args):
    from . import config as configuration
    from .dreamstep import Dreamer
    from .images import read_rgb, write_rgb

    schema = configuration.load_schema()
    dream_settings = configuration.fill_defaults({}, schema["$defs"]["dream"], schema)
    for key in ("model", "weights", "layers", "octaves", "octave_scale", "iterations", "step_size",
                "jitter", "seed", "device"):
        value = getattr(args, key)
        if value is not None:
            dream_settings[key] = value
    configuration.validate_section("dream", dream_settings, schema)
    dreamer = Dreamer(configuration.resolve_dream(dream_settings), threads=args.threads)
    write_rgb(dreamer.dream_array(read_rgb(args.image)), args.output)
    print(args.output)


def cmd_layers(args):
    from .models import spec

    for layer in spec(args.model).layers:
        print(layer)


def cmd_models(args):
    from .models import MODELS

    for name in sorted(MODELS):
        print(f"{name}\t{MODELS[name].description}")


def build_parser():
    parser = argparse.ArgumentParser(prog="dreamflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    probe = commands.add_parser("probe", help="describe an input (video, image folder or image) as JSON")
    probe.add_argument("input")
    probe.add_argument("-o", "--output", required=True)
    probe.set_defaults(run=cmd_probe)

    extract = commands.add_parser("extract", help="extract frames as 000001.png ... into a folder")
    extract.add_argument("--probe", required=True, help="JSON written by `dreamflow probe`")
    extract.add_argument("--settings", required=True, help="the frames settings as JSON")
    extract.add_argument("--threads", type=int, default=1)
    extract.add_argument("-o", "--output", required=True, help="folder to create")
    extract.set_defaults(run=cmd_extract)

    frame = commands.add_parser("dream-frame", help="dream one frame of a sequence")
    frame.add_argument("frame")
    frame.add_argument("--number", type=int, required=True, help="1-based frame number")
    frame.add_argument("--previous", help="dreamed frame N-1, blended in when blending is on")
    frame.add_argument("--settings", required=True, help='JSON: {"dream": ..., "blend": ..., "jpg_quality": ...}')
    frame.add_argument("--threads", type=int, default=None)
    frame.add_argument("-o", "--output", required=True)
    frame.set_defaults(run=cmd_dream_frame)

    encode = commands.add_parser("encode", help="encode dreamed frames into a video with the source audio")
    encode.add_argument("--probe", required=True)
    encode.add_argument("--settings", required=True, help='JSON: {"frames": ..., "encode": ...}')
    encode.add_argument("--frames-dir", required=True)
    encode.add_argument("--count", type=int, required=True)
    encode.add_argument("--threads", type=int, default=1)
    encode.add_argument("-o", "--output", required=True)
    encode.set_defaults(run=cmd_encode)

    single = commands.add_parser("dream", help="dream a single image")
    single.add_argument("image")
    single.add_argument("-o", "--output", required=True)
    single.add_argument("--model")
    single.add_argument("--weights")
    single.add_argument("--layers", nargs="+")
    single.add_argument("--octaves", type=int)
    single.add_argument("--octave-scale", dest="octave_scale", type=float)
    single.add_argument("--iterations", type=int)
    single.add_argument("--step-size", dest="step_size", type=float)
    single.add_argument("--jitter", type=int)
    single.add_argument("--seed", type=int)
    single.add_argument("--device", choices=["auto", "cpu", "cuda"])
    single.add_argument("--threads", type=int, default=None)
    single.set_defaults(run=cmd_dream)

    layers = commands.add_parser("layers", help="list a model's layer names")
    layers.add_argument("--model", default="efficientnet_lite0")
    layers.set_defaults(run=cmd_layers)

    models = commands.add_parser("models", help="list the available models")
    models.set_defaults(run=cmd_models)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except DreamflowError as error:
        # a message listing several problems has one per line; join them to keep one line
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"dreamflow: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
