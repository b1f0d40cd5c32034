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
    """Hand the frame to this node's model server (see dreamflow.client); dream in-process without one."""
    from . import client

    settings = _settings(args.settings)
    request = {"frame": args.frame, "previous": args.previous, "number": args.number,
               "settings": args.settings, "output": args.output, "threads": args.threads}
    if client.request_dream(request):
        return
    from .dreamstep import Dreamer, dream_frame_file

    dreamer = Dreamer(settings["dream"], threads=args.threads)
    dream_frame_file(dreamer, args.frame, args.output, args.number, settings["blend"],
                     previous_path=args.previous, jpg_quality=settings["jpg_quality"],
                     zoom=settings.get("zoom"))
    print(f"dreamflow: dreamed in-process: {client.dreamer_identity()}", file=sys.stderr)


def cmd_serve(args):
    from . import client, server

    paths = client.server_paths(threads=True)  # the server of jobs run with --threads, as the workflow's are
    if args.status or args.stop:
        status = client.ping(paths.socket)
        if status is None:
            raise DreamflowError(f"no model server for this directory (socket {paths.socket})")
        if args.stop:
            client.stop(paths.socket)
        print(json.dumps(status, indent=2))
        return
    try:
        client.prepare_dir(paths)
    except client.Unavailable as error:
        raise DreamflowError(str(error)) from None
    idle = client.idle_seconds() if args.idle is None else args.idle
    server.serve(paths.socket, idle)


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


DREAM_OPTIONS = ("model", "weights", "layers", "octaves", "octave_scale", "iterations", "step_size",
                 "jitter", "seed", "device", "precision", "cudnn_benchmark", "guide", "start", "tile_size")


def _dream_settings(args):
    """Dream settings from the schema's defaults and the options given, validated like config.yaml."""
    from . import config as configuration

    schema = configuration.load_schema()
    dream_settings = configuration.fill_defaults({}, schema["$defs"]["dream"], schema)
    for key in DREAM_OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            dream_settings[key] = value
    if getattr(args, "layers", None):
        dream_settings["layers"] = [term for item in args.layers for term in _item_terms(item)]
    configuration.validate_section("dream", dream_settings, schema)
    if dream_settings["guide"] and not os.path.isfile(dream_settings["guide"]):
        raise DreamflowError(f"--guide: file not found: {dream_settings['guide']}")
    return configuration.resolve_dream(dream_settings)


def _item_terms(item):
    """'block8+block10:3' -> ['block8', 'block10:3']: '+' joins terms dreamed together."""
    return [term for term in item.split("+") if term]


def _start_array(args):
    """The image to dream: the input image (optionally resized) or, without one, a grey canvas for noise."""
    import numpy as np
    from PIL import Image

    from .images import read_rgb
    from .video import target_size

    if args.image is None:
        if args.start != "noise" or args.size is None:
            raise DreamflowError("give an input image, or --start noise with --size HxW")
        height, width = args.size
        return np.full((height, width, 3), 128, dtype=np.uint8)
    array = read_rgb(args.image)
    if args.width:
        size = target_size(array.shape[1], array.shape[0], args.width)
        array = np.asarray(Image.fromarray(array).resize(size, Image.LANCZOS))
    return array


def _image_stem(args):
    """The input's name without folder and suffix ('noise' without an input): starts output names."""
    return os.path.splitext(os.path.basename(args.image))[0] if args.image else "noise"


def _output_path(args, dream_settings):
    """-o FILE is used as given; -o DIR (or a path ending in /) gets a name that encodes the settings."""
    from .naming import dream_filename

    if args.output.endswith(os.sep) or os.path.isdir(args.output):
        return os.path.join(args.output, dream_filename(_image_stem(args), dream_settings))
    return args.output


def cmd_dream(args):
    from .dreamstep import Dreamer
    from .images import write_rgb

    dream_settings = _dream_settings(args)
    start = _start_array(args)
    dreamer = Dreamer(dream_settings, threads=args.threads)
    output = _output_path(args, dream_settings)
    write_rgb(dreamer.dream_array(dreamer.start_array(start)), output)
    print(output)


def cmd_sweep(args):
    from . import config as configuration
    from .dreamstep import Dreamer
    from .images import write_rgb
    from .naming import dream_filename, terms_label
    from .sheet import contact_sheet

    dream_settings = _dream_settings(args)
    items = [_item_terms(item) for item in args.sweep_layers]
    # every item's layers are checked before the first (slow) dream
    configuration.validate_section("dream", {**dream_settings, "layers": [t for terms in items for t in terms]})
    start = _start_array(args)
    dreamer = Dreamer(dream_settings, threads=args.threads)
    os.makedirs(args.output, exist_ok=True)
    stem = _image_stem(args)
    images = []
    for terms in items:
        dreamed = dreamer.dream_array(dreamer.start_array(start), terms=terms)
        path = os.path.join(args.output, dream_filename(stem, {**dream_settings, "layers": terms}))
        write_rgb(dreamed, path)
        print(path)
        images.append(dreamed)
    sheet = os.path.join(args.output, f"{stem}_sweep.png")
    write_rgb(contact_sheet(images, [terms_label(terms) for terms in items], args.columns), sheet)
    print(sheet)


def cmd_contact_sheet(args):
    from .images import read_rgb, write_rgb
    from .sheet import contact_sheet

    if len(args.labels) != len(args.images):
        raise DreamflowError(f"{len(args.images)} images but {len(args.labels)} labels")
    write_rgb(contact_sheet([read_rgb(path) for path in args.images], args.labels, args.columns), args.output)


def cmd_layers(args):
    from .models import layer_shapes, spec

    defaults = spec(args.model).default_layers
    height, width = args.size
    for layer, shape in layer_shapes(args.model, height, width):
        size = " x ".join(map(str, shape)) if shape else f"(a {height}x{width} input is too small)"
        print(f"{layer}\t{size}" + ("\tdefault" if layer in defaults else ""))


def _size(text):
    """HxW, e.g. 224x224, as (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels, e.g. 224x224, not '{text}'")
    return int(parts[0]), int(parts[1])


def cmd_fetch_models(args):
    from .models import MODELS, TORCHVISION_MODELS, fetch_weights

    names = []
    for name in args.model:
        for model in (TORCHVISION_MODELS if name == "all" else [name]):
            if model not in names:
                names.append(model)
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise DreamflowError(f"unknown model '{unknown[0]}'; available models: {', '.join(sorted(MODELS))}, "
                             "or all (every torchvision model)")
    if (args.source or args.url) and len(names) > 1:
        raise DreamflowError("--from and --url give the weights of one model: name exactly one --model")
    for model in names:
        fetch_weights(model, url=args.url, source=args.source)


def cmd_models(args):
    from .models import MODELS

    for name in sorted(MODELS):
        print(f"{name}\t{MODELS[name].description}")


def _add_dream_options(parser):
    """The dream settings of config.yaml as options; each defaults to the schema's default."""
    from .models import MODELS

    parser.add_argument("--model", help=f"one of: {', '.join(sorted(MODELS))}")
    parser.add_argument("--weights", help="a local state-dict file for the model")
    parser.add_argument("--octaves", type=int)
    parser.add_argument("--octave-scale", dest="octave_scale", type=float)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--step-size", dest="step_size", type=float)
    parser.add_argument("--jitter", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", choices=["float32", "bfloat16", "float16"],
                        help="bfloat16/float16: autocast the forward pass (faster on GPUs)")
    parser.add_argument("--cudnn-benchmark", dest="cudnn_benchmark", action="store_true", default=None,
                        help="CUDA: let cuDNN pick its fastest algorithms (pixels may vary between runs)")
    parser.add_argument("--guide", help="guide image: pull the layers towards its features")
    parser.add_argument("--start", choices=["image", "noise"], help="dream from the image or from seeded noise")
    parser.add_argument("--size", type=_size, metavar="HxW", help="noise size when no image is given")
    parser.add_argument("--width", type=int, help="resize the input to this width first")
    parser.add_argument("--tile-size", dest="tile_size", type=int, help="dream in tiles of at most this size")
    parser.add_argument("--threads", type=int, default=None)


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

    frame = commands.add_parser("dream-frame", help="dream one frame of a sequence (used by the workflow)")
    frame.add_argument("--frame", help="the raw frame; absent for zoom frames after the first")
    frame.add_argument("--number", type=int, required=True, help="1-based frame number")
    frame.add_argument("--previous", help="dreamed frame N-1, blended in or zoomed when those are on")
    frame.add_argument("--settings", required=True,
                       help='JSON: {"dream": ..., "blend": ..., "zoom": ..., "jpg_quality": ...}')
    frame.add_argument("--threads", type=int, default=None)
    frame.add_argument("-o", "--output", required=True)
    frame.set_defaults(run=cmd_dream_frame)

    serve = commands.add_parser(
        "serve", help="run the model server of this directory in the foreground (dream-frame starts one "
                      "by itself), or show or stop it")
    serve.add_argument("--idle", type=float, help="seconds without requests before it exits "
                                                  "(default: $DREAMFLOW_SERVER_IDLE or 10)")
    serve.add_argument("--status", action="store_true", help="print the running server's status as JSON")
    serve.add_argument("--stop", action="store_true", help="ask the running server to exit once idle")
    serve.set_defaults(run=cmd_serve)

    encode = commands.add_parser("encode", help="encode dreamed frames into a video with the source audio")
    encode.add_argument("--probe", required=True)
    encode.add_argument("--settings", required=True, help='JSON: {"frames": ..., "encode": ...}')
    encode.add_argument("--frames-dir", required=True)
    encode.add_argument("--count", type=int, required=True)
    encode.add_argument("--threads", type=int, default=1)
    encode.add_argument("-o", "--output", required=True)
    encode.set_defaults(run=cmd_encode)

    single = commands.add_parser("dream", help="dream a single image (or noise)")
    single.add_argument("image", nargs="?", help="input image; omit it with --start noise --size HxW")
    single.add_argument("-o", "--output", required=True,
                        help="output file, or a folder: then the file name encodes the settings")
    single.add_argument("--layers", nargs="+", metavar="TERM",
                        help="layer, layer:channel; several are summed (default: the model's default)")
    _add_dream_options(single)
    single.set_defaults(run=cmd_dream)

    sweep = commands.add_parser("sweep", help="dream an image once per layer and make a labelled contact sheet")
    sweep.add_argument("image", nargs="?", help="input image; omit it with --start noise --size HxW")
    sweep.add_argument("-o", "--output", required=True, help="folder for the images and the contact sheet")
    sweep.add_argument("--layers", dest="sweep_layers", nargs="+", required=True, metavar="ITEM",
                       help="one dream per item; join terms dreamed together with +, e.g. block8+block10:3")
    sweep.add_argument("--columns", type=int, default=3, help="images per row of the contact sheet")
    _add_dream_options(sweep)
    sweep.set_defaults(run=cmd_sweep)

    sheet = commands.add_parser("contact-sheet", help="lay images out on a labelled grid")
    sheet.add_argument("images", nargs="+")
    sheet.add_argument("--labels", nargs="+", required=True)
    sheet.add_argument("--columns", type=int, default=3)
    sheet.add_argument("-o", "--output", required=True)
    sheet.set_defaults(run=cmd_contact_sheet)

    layers = commands.add_parser("layers", help="list a model's layers with their output shapes (C x H x W)")
    layers.add_argument("--model", default="efficientnet_lite0")
    layers.add_argument("--size", type=_size, default=(224, 224), metavar="HxW",
                        help="input height x width for the shapes (default 224x224)")
    layers.set_defaults(run=cmd_layers)

    fetch = commands.add_parser(
        "fetch-models", help="put torchvision models' ImageNet weights into the torch cache "
                             "($TORCH_HOME/hub/checkpoints), where jobs read them")
    fetch.add_argument("--model", action="append", required=True,
                       help="a model name, or all for every torchvision model; repeatable")
    origin = fetch.add_mutually_exclusive_group()
    origin.add_argument("--from", dest="source", metavar="FILE",
                        help="copy this local weights file instead of downloading")
    origin.add_argument("--url", help="download from this URL instead of torchvision's (file:// works)")
    fetch.set_defaults(run=cmd_fetch_models)

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
