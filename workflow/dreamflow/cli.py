"""The `dreamflow` command: a thin layer over the package, used by the workflow's rules and by
people.

Errors a user can fix are printed as one line, without a traceback, with exit status 1.
"""

import argparse
import json
import os
import sys

from . import __version__
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


def cmd_download(args):
    from . import remote

    remote.download(args.url, args.output)


def cmd_extract(args):
    from . import video

    count = video.extract(
        _read_json(args.probe), _settings(args.settings), args.output, args.threads
    )
    print(f"extracted {count} frames to {args.output}", file=sys.stderr)


def _run_job(op, job, in_process):
    """Hand a job to this node's model server (see dreamflow.serving); run it in-process without
    one."""
    from .serving import client, protocol

    if client.request(op, job):
        return
    in_process(job)
    print(
        f"dreamflow: {client.DONE[op]} in-process: {protocol.dreamer_identity()}", file=sys.stderr
    )


def cmd_dream_frame(args):
    from .job import FrameJob, JobSettings, default_threads
    from .models import check_workflow_cache

    job = FrameJob(
        args.number,
        args.output,
        JobSettings.from_text(args.settings),
        args.threads or default_threads(),
        frame=args.frame,
        previous=args.previous,
        prepared=args.prepared,
    )
    dream = job.settings.dream
    if isinstance(dream, dict) and not dream.get("weights"):  # the schema check comes later
        check_workflow_cache(dream.get("model"))

    def in_process(job):
        from .dreamstep import dream_in_process

        dream_in_process(job)

    _run_job("dream", job, in_process)


def cmd_blend(args):
    from .job import BlendJob, BlendSettings

    job = BlendJob(
        args.number,
        args.output,
        BlendSettings.from_text(args.settings),
        args.frame,
        args.previous,
        previous_frame=args.previous_frame,
        flow=args.flow,
    )

    def in_process(job):
        from .blend import run_blend
        from .config import validate_job_settings

        validate_job_settings(job.settings)
        run_blend(job)

    _run_job("blend", job, in_process)


def cmd_flow(args):
    from .job import FlowJob, check_writer
    from .models import check_workflow_cache

    if args.written_by is not None:
        check_writer(args.written_by, "--written-by")
    check_workflow_cache(args.method)

    job = FlowJob(
        args.output, args.frame, args.previous_frame, args.method, args.threads, args.device
    )

    def in_process(job):
        from .blend import run_flow

        run_flow(job)

    _run_job("flow", job, in_process)


def cmd_crossfade(args):
    from .blend import crossfade
    from .images import read_rgb, write_rgb

    if not 0.0 <= args.weight <= 1.0:
        raise DreamflowError(f"--weight: {args.weight} is not between 0 and 1")
    old, new = read_rgb(args.old), read_rgb(args.new)
    if old.shape != new.shape:
        raise DreamflowError(f"{args.old} and {args.new} differ in size; delete both and rerun")
    write_rgb(crossfade(old, new, args.weight), args.output, jpg_quality=args.jpg_quality)


def cmd_publish(args):
    from .images import publish

    publish(args.input, args.output)


def cmd_coherence(args):
    from . import coherence
    from .chains import parse_ranges
    from .frames import frame_name
    from .scenes import read_scenes

    if (args.dreamed_dir is None) == (args.frames_dir is None):
        raise DreamflowError("give the dreamed frames as DREAMED_DIR or --frames-dir, once")
    dreamed_dir = args.dreamed_dir or args.frames_dir
    seams = {}
    if args.seams:
        if not args.seams_dir:
            raise DreamflowError("--seams needs --seams-dir")
        suffix = os.path.splitext(coherence.frame_paths(dreamed_dir, 1)[0])[1]
        try:
            numbers = parse_ranges(args.seams)
        except ValueError:
            raise DreamflowError(
                f"--seams: expected ranges like 27-30, not {args.seams!r}"
            ) from None
        seams = {n: os.path.join(args.seams_dir, frame_name(n) + suffix) for n in numbers}
    coherence.run_cli(
        args.raw_dir,
        dreamed_dir,
        args.output,
        args.plot,
        scene_starts=read_scenes(args.scenes)["cuts"] if args.scenes else (),
        method=args.method,
        count=args.count,
        seams=seams,
    )


def cmd_scenes(args):
    from . import scenes

    scenes.run_cli(args.frames, args.format, args.settings, args.output)


def cmd_serve(args):
    from .serving import client, paths, protocol

    socket_path = args.socket
    if socket_path is None:
        server_paths = paths.server_paths()
        socket_path = server_paths.socket
    if args.status or args.stop:
        status = protocol.ping(socket_path)
        if status is None:
            raise DreamflowError(f"no model server for this directory (socket {socket_path})")
        if args.stop:
            client.stop(socket_path)
        print(json.dumps(status, indent=2))
        return
    if args.socket is None:
        try:
            paths.prepare_dir(server_paths)
        except protocol.Unavailable as error:
            raise DreamflowError(str(error)) from None
    if args.models is not None and args.models < 1:
        raise DreamflowError(f"--models: {args.models} is below 1")
    from .serving import server

    if args.device_slots is not None and args.device_slots < 1:
        raise DreamflowError(f"--device-slots: {args.device_slots} is below 1")
    idle = client.idle_seconds() if args.idle is None else args.idle
    slots = client.device_slots() if args.device_slots is None else args.device_slots
    server.serve(socket_path, idle, args.models, slots)


def cmd_status(args):
    from .progress import status_lines

    # a --configfile is read from where the command runs, as Snakemake reads it
    configfile = os.path.abspath(args.configfile) if args.configfile else "config.yaml"
    try:
        os.chdir(args.directory)
    except OSError as error:
        raise DreamflowError(f"--directory {args.directory}: {error.strerror}") from None
    for line in status_lines(configfile):
        print(line)


def _final_frames(args, suffix):
    """The output frames 1..count: dreamed frames, except overlap frames (--seams), which are the
    crossfades in --seams-dir."""
    from .chains import parse_ranges
    from .frames import frame_name

    try:
        seams = set(parse_ranges(args.seams))
    except ValueError:
        raise DreamflowError(
            f"--seams: expected ranges like 27-30,53-56, not {args.seams!r}"
        ) from None
    if seams and not args.seams_dir:
        raise DreamflowError("--seams needs --seams-dir")
    return [
        os.path.join(args.seams_dir if n in seams else args.frames_dir, frame_name(n) + suffix)
        for n in range(1, args.count + 1)
    ]


def _add_final_frames_options(parser):
    parser.add_argument("--frames-dir", required=True, help="the dreamed frames")
    parser.add_argument("--count", type=int, required=True, help="frames 1..COUNT")
    parser.add_argument("--seams-dir", help="the crossfaded overlap frames of long chains")
    parser.add_argument(
        "--seams", default="", help="overlap frames taken from --seams-dir, e.g. 27-30,53-56"
    )


def cmd_encode(args):
    from . import video

    settings = _settings(args.settings)
    frame_paths = _final_frames(args, "." + settings["frames"]["format"])
    missing = [p for p in frame_paths if not os.path.isfile(p)]
    if missing:
        raise DreamflowError(f"{len(missing)} dreamed frames are missing, first: {missing[0]}")
    video.encode(
        _read_json(args.probe),
        settings["frames"],
        settings["encode"],
        frame_paths,
        args.output,
        args.threads,
    )


def _dream_settings(args, extra_layers=()):
    """Dream settings from the schema's defaults and the options given, validated like config.yaml.

    `extra_layers`: terms that must be valid too (a sweep's items), checked before any dream."""
    from . import config as configuration
    from .sweep import item_terms

    dream_settings = configuration.section_defaults("dream")
    for key in dream_settings:
        value = getattr(args, key, None)
        if value is not None:
            dream_settings[key] = value
    if getattr(args, "layers", None):
        dream_settings["layers"] = [term for item in args.layers for term in item_terms(item)]
    configuration.validate_section("dream", dream_settings)
    if extra_layers:
        configuration.validate_section("dream", {**dream_settings, "layers": list(extra_layers)})
    if dream_settings["guide"] and not os.path.isfile(dream_settings["guide"]):
        raise DreamflowError(f"--guide: file not found: {dream_settings['guide']}")
    return configuration.resolve_dream(dream_settings)


def _start_array(args):
    """The image to dream: the input image (optionally resized) or, without one, a grey canvas for
    noise."""
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
    """The input's name without folder and suffix ('noise' without an input): starts output
    names."""
    return os.path.splitext(os.path.basename(args.image))[0] if args.image else "noise"


def _output_path(args, dream_settings):
    """-o FILE is used as given; -o DIR (or a path ending in /) gets a name that encodes the
    settings."""
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


def _dream_sweep(args, dream_settings, cells, starts, columns, sheet):
    """Dream every sweep cell from its start image (`starts`: {the cell's seconds: array}),
    writing <output>/sweep/<cell>.png, then the contact sheet `sheet`."""
    from .dreamstep import Dreamer
    from .images import write_rgb
    from .sheet import contact_sheet
    from .sweep import item_dream_settings

    dreamed = {}
    for item in dict.fromkeys(cell.item for cell in cells.values()):
        # one model at a time; the settings the workflow's sweep jobs run with, so both give the
        # same image
        mine = {name: cell for name, cell in cells.items() if cell.item == item}
        terms = next(iter(mine.values())).terms
        dreamer = Dreamer(item_dream_settings(dream_settings, terms), args.threads)
        for name, cell in mine.items():
            dreamed[name] = dreamer.dream_array(dreamer.start_array(starts[cell.seconds]))
            path = os.path.join(args.output, "sweep", f"{name}.png")
            write_rgb(dreamed[name], path)
            print(path)
    images = [dreamed[name] for name in cells]
    write_rgb(contact_sheet(images, [cell.label for cell in cells.values()], columns), sheet)
    print(sheet)


def _sweep_settings(args, cells):
    """The dream settings of a sweep; every item's layers are checked before the first (slow)
    dream."""
    return _dream_settings(args, [term for cell in cells.values() for term in cell.terms])


def cmd_sweep(args):
    from .sweep import sweep_cells

    cells = sweep_cells(args.sweep_layers)
    dream_settings = _sweep_settings(args, cells)
    sheet = os.path.join(args.output, f"{_image_stem(args)}_sweep.png")
    _dream_sweep(args, dream_settings, cells, {None: _start_array(args)}, args.columns, sheet)


def cmd_preview(args):
    import tempfile

    from . import config as configuration
    from . import video
    from .images import read_rgb
    from .preview import grab_frame
    from .sweep import sheet_columns, sweep_cells, time_text

    cells = sweep_cells(args.sweep_layers, args.at)
    dream_settings = _sweep_settings(args, cells)
    probed = video.probe(args.video)
    if probed["kind"] != "video":
        kind = {"image": "an image", "folder": "a folder"}[probed["kind"]]
        raise DreamflowError(f"not a video: {args.video} is {kind} (dreamflow sweep sweeps images)")
    # the frames settings of the workflow's defaults, so both grab the same frame
    frames = {**configuration.section_defaults("frames"), "width": args.width}
    starts = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seconds in dict.fromkeys(float(seconds) for seconds in args.at):
            path = os.path.join(scratch, f"{time_text(seconds)}s.png")
            grab_frame(probed, seconds, frames, path)
            starts[seconds] = read_rgb(path)
    stem = os.path.splitext(os.path.basename(args.video))[0]
    sheet = os.path.join(args.output, f"{stem}_preview.png")
    columns = sheet_columns(args.sweep_layers, args.at, None)
    _dream_sweep(args, dream_settings, cells, starts, columns, sheet)


def cmd_grab_frame(args):
    from .preview import grab_frame

    grab_frame(_read_json(args.probe), args.at, _settings(args.settings), args.output, args.key)


def cmd_contact_sheet(args):
    from .images import read_rgb, write_rgb
    from .sheet import contact_sheet

    if len(args.labels) != len(args.images):
        raise DreamflowError(f"{len(args.images)} images but {len(args.labels)} labels")
    write_rgb(
        contact_sheet([read_rgb(path) for path in args.images], args.labels, args.columns),
        args.output,
    )


def cmd_pairs(args):
    from .images import write_rgb
    from .pairs import before_after

    write_rgb(before_after(args.raw, args.dreamed, args.labels), args.output, jpg_quality=90)


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
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH in pixels, e.g. 224x224, not '{text}'"
        )
    return int(parts[0]), int(parts[1])


def cmd_fetch_models(args):
    from .models import FLOW_WEIGHTS, MODELS, TORCHVISION_MODELS, fetch_weights

    names = []
    for name in args.model:
        for model in TORCHVISION_MODELS if name == "all" else [name]:
            if model not in names:
                names.append(model)
    unknown = [name for name in names if name not in MODELS and name not in FLOW_WEIGHTS]
    if unknown:
        raise DreamflowError(
            f"unknown model '{unknown[0]}'; available models: {', '.join(sorted(MODELS))}, "
            f"{', '.join(FLOW_WEIGHTS)} (optical flow), or all (every torchvision model)"
        )
    if (args.source or args.url) and len(names) > 1:
        raise DreamflowError(
            "--from and --url give the weights of one model: name exactly one --model"
        )
    for model in names:
        fetch_weights(model, url=args.url, source=args.source)


def cmd_models(args):
    from .models import MODELS

    for name in sorted(MODELS):
        print(f"{name}\t{MODELS[name].description}")


def cmd_doctor(args):
    from .gpu import doctor_lines

    for line in doctor_lines():
        print(line)


SCHEMA_TYPES = {"integer": int, "number": float, "string": str}


def _add_dream_options(parser, layers=True):
    """The dream settings of config.yaml as options, made from the config schema: same names,
    types, choices and help; each defaults to the schema's default."""
    from . import config as configuration

    for key, spec in configuration.section_schema("dream")["properties"].items():
        if key == "layer_schedule" or (key == "layers" and not layers):
            continue  # a schedule needs frames; a sweep's --layers are its items
        option = "--" + key.replace("_", "-")
        help_text = " ".join(spec.get("description", "").split())
        if key == "layers":
            parser.add_argument(option, nargs="+", metavar="TERM", help=help_text)
            continue
        kinds = spec.get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if "boolean" in kinds:
            parser.add_argument(option, dest=key, action="store_true", default=None, help=help_text)
        elif "enum" in spec:
            parser.add_argument(option, dest=key, choices=spec["enum"], help=help_text)
        else:
            kind = next(SCHEMA_TYPES[k] for k in kinds if k in SCHEMA_TYPES)
            parser.add_argument(option, dest=key, type=kind, help=help_text)
    parser.add_argument(
        "--size", type=_size, metavar="HxW", help="noise size when no image is given"
    )
    parser.add_argument("--width", type=int, help="resize the input to this width first")
    parser.add_argument("--threads", type=int, default=None)


def _add_sweep_options(parser):
    """The output folder and the layer items of a sweep (`sweep`, `preview`)."""
    parser.add_argument(
        "-o", "--output", required=True, help="folder for the images and the contact sheet"
    )
    parser.add_argument(
        "--layers",
        dest="sweep_layers",
        nargs="+",
        required=True,
        metavar="ITEM",
        help="one dream per item; join terms dreamed together with +, e.g. block8+block10:3",
    )


COMMANDS = (
    "probe",
    "download",
    "extract",
    "dream-frame",
    "blend",
    "flow",
    "crossfade",
    "scenes",
    "coherence",
    "serve",
    "status",
    "encode",
    "publish",
    "dream",
    "sweep",
    "preview",
    "grab-frame",
    "contact-sheet",
    "pairs",
    "layers",
    "fetch-models",
    "models",
    "doctor",
)


def build_parser(command=None):
    """The parser of every command, or of `command` alone when it names one (COMMANDS). The dream
    options (read from the config schema) are added only to the commands that take them:
    dream-frame runs once per frame, and reading the schema would add the YAML and jsonschema
    imports to every frame job."""
    with_dream_options = command in (None, "dream", "sweep", "preview")

    def wanted(name):
        # a frame job's command is parsed once per frame: build only its own parser
        return command not in COMMANDS or name == command

    parser = argparse.ArgumentParser(
        prog="dreamflow", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--version", action="version", version=f"dreamflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    if wanted("probe"):
        probe = commands.add_parser(
            "probe", help="describe an input (video, image folder or image) as JSON"
        )
        probe.add_argument("input")
        probe.add_argument("-o", "--output", required=True)
        probe.set_defaults(run=cmd_probe)

    if wanted("download"):
        download = commands.add_parser(
            "download", help="download an http(s) URL input to a file (used by the workflow)"
        )
        download.add_argument("url")
        download.add_argument("-o", "--output", required=True)
        download.set_defaults(run=cmd_download)

    if wanted("extract"):
        extract = commands.add_parser(
            "extract", help="extract frames as 000001.png ... into a folder"
        )
        extract.add_argument("--probe", required=True, help="JSON written by `dreamflow probe`")
        extract.add_argument("--settings", required=True, help="the frames settings as JSON")
        extract.add_argument("--threads", type=int, default=1)
        extract.add_argument("-o", "--output", required=True, help="folder to create")
        extract.set_defaults(run=cmd_extract)

    if wanted("dream-frame"):
        frame = commands.add_parser(
            "dream-frame", help="dream one frame of a sequence (used by the workflow)"
        )
        frame.add_argument("--frame", help="the raw frame; absent for zoom frames after the first")
        frame.add_argument("--number", type=int, required=True, help="1-based frame number")
        frame.add_argument("--previous", help="dreamed frame N-1, which a zoom animation zooms")
        frame.add_argument(
            "--prepared",
            action="store_true",
            help="--frame is a blend step's start image: dream it as it is (no noise start)",
        )
        frame.add_argument(
            "--settings",
            required=True,
            help='JSON: {"dream": ..., "zoom": ..., "jpg_quality": ...}',
        )
        frame.add_argument("--threads", type=int, default=None)
        frame.add_argument("-o", "--output", required=True)
        frame.set_defaults(run=cmd_dream_frame)

    if wanted("blend"):
        blend = commands.add_parser(
            "blend", help="make the start image of a chained frame (used by the workflow)"
        )
        blend.add_argument("--frame", required=True, help="raw frame N")
        blend.add_argument("--previous", required=True, help="the dream frame N continues")
        blend.add_argument("--previous-frame", help="raw frame N-1 (with a flow)")
        blend.add_argument("--flow", help="the flow file of the raw pair N-1, N (with a flow)")
        blend.add_argument("--number", type=int, required=True, help="1-based frame number")
        blend.add_argument(
            "--settings", required=True, help='JSON: {"blend": ..., "start": ..., "seed": ...}'
        )
        blend.add_argument("-o", "--output", required=True)
        blend.set_defaults(run=cmd_blend)

    if wanted("flow"):
        flow = commands.add_parser(
            "flow", help="optical flow of raw frame N back to N-1, with its reliability mask"
        )
        flow.add_argument("--frame", required=True, help="raw frame N")
        flow.add_argument("--previous-frame", required=True, help="raw frame N-1")
        flow.add_argument(
            "--method", default="dis", help="dis, farneback, raft_small or raft_large"
        )
        flow.add_argument("--device", default="auto", help="auto, cpu or cuda (RAFT)")
        flow.add_argument("--threads", type=int, default=1)
        flow.add_argument(
            "--written-by",
            metavar="VERSION",
            help="the version of the dreamflow that made this job: refused if not this one",
        )
        flow.add_argument("-o", "--output", required=True, help="the flow file (.npz)")
        flow.set_defaults(run=cmd_flow)

    if wanted("crossfade"):
        fade = commands.add_parser(
            "crossfade", help="mix two dreams of an overlap frame (used by the workflow)"
        )
        fade.add_argument("old", help="the old segment's dream")
        fade.add_argument("new", help="the new segment's dream")
        fade.add_argument("--weight", type=float, required=True, help="share of NEW, 0..1")
        fade.add_argument("--jpg-quality", type=int, default=95)
        fade.add_argument("-o", "--output", required=True)
        fade.set_defaults(run=cmd_crossfade)

    if wanted("scenes"):
        scenes = commands.add_parser(
            "scenes", help="find the scene cuts of extracted frames (used by the workflow)"
        )
        scenes.add_argument("--frames", required=True, help="folder of 000001.png ...")
        scenes.add_argument("--format", default="png", choices=["png", "jpg"])
        scenes.add_argument(
            "--settings", required=True, help='JSON: {"cuts": ..., "threshold": ...}'
        )
        scenes.add_argument("-o", "--output", required=True, help="scenes.json")
        scenes.set_defaults(run=cmd_scenes)

    if wanted("coherence"):
        measure = commands.add_parser(
            "coherence",
            help="how coherent a dreamed video is: warping error of the dreamed and the raw frames "
            "along the raw frames' optical flow, and the dream strength",
        )
        measure.add_argument("raw_dir", help="the raw frames, 000001.png ...")
        measure.add_argument("dreamed_dir", nargs="?", help="the dreamed frames, 000001.png ...")
        measure.add_argument("--frames-dir", help="the dreamed frames (instead of DREAMED_DIR)")
        measure.add_argument("--count", type=int, help="only frames 1..COUNT")
        measure.add_argument("--seams-dir", help="crossfaded overlap frames of long chains")
        measure.add_argument(
            "--seams", default="", help="overlap frames from --seams-dir, e.g. 27-30"
        )
        measure.add_argument("--scenes", help="scenes.json: pairs across a scene cut are skipped")
        measure.add_argument("--method", default="dis", help="optical flow: dis or farneback")
        measure.add_argument("-o", "--output", help="write the figures as JSON")
        measure.add_argument("--plot", help="write a per-frame plot (PNG)")
        measure.set_defaults(run=cmd_coherence)

    if wanted("serve"):
        serve = commands.add_parser(
            "serve",
            help="run the model server of this directory in the foreground (dream-frame starts one "
            "by itself), or show or stop it",
        )
        serve.add_argument(
            "--idle",
            type=float,
            help="seconds without requests before it exits (default: $DREAMFLOW_SERVER_IDLE or 10)",
        )
        serve.add_argument(
            "--status", action="store_true", help="print the running server's status as JSON"
        )
        serve.add_argument(
            "--stop", action="store_true", help="ask the running server to exit once idle"
        )
        serve.add_argument(
            "--socket",
            help="this socket instead of this directory's (dream-frame starts servers so)",
        )
        serve.add_argument("--models", type=int, help="loaded models kept (default: 2)")
        serve.add_argument(
            "--device-slots",
            type=int,
            help="dreams on one GPU at once, whatever the number of clients "
            "(default: $DREAMFLOW_SERVER_DEVICE_SLOTS or 2)",
        )
        serve.set_defaults(run=cmd_serve)

    if wanted("status"):
        status = commands.add_parser(
            "status",
            help="per input: frames extracted, dreamed and left, the recent seconds per frame and "
            "the time left, read from a run's files (while it runs, or after it stopped)",
        )
        status.add_argument(
            "--configfile", help="the workflow's config (default: config.yaml in --directory)"
        )
        status.add_argument("--directory", default=".", help="the workflow directory (default: .)")
        status.set_defaults(run=cmd_status)

    if wanted("encode"):
        encode = commands.add_parser(
            "encode", help="encode dreamed frames into a video with the source audio"
        )
        encode.add_argument("--probe", required=True)
        encode.add_argument(
            "--settings", required=True, help='JSON: {"frames": ..., "encode": ...}'
        )
        _add_final_frames_options(encode)
        encode.add_argument("--threads", type=int, default=1)
        encode.add_argument("-o", "--output", required=True)
        encode.set_defaults(run=cmd_encode)

    if wanted("publish"):
        publish = commands.add_parser(
            "publish", help="copy a finished file into place atomically (used by the workflow)"
        )
        publish.add_argument("input")
        publish.add_argument("-o", "--output", required=True)
        publish.set_defaults(run=cmd_publish)

    if wanted("dream"):
        single = commands.add_parser("dream", help="dream a single image (or noise)")
        single.add_argument(
            "image", nargs="?", help="input image; omit it with --start noise --size HxW"
        )
        single.add_argument(
            "-o",
            "--output",
            required=True,
            help="output file, or a folder: then the file name encodes the settings",
        )
        if with_dream_options:
            _add_dream_options(single)
        single.set_defaults(run=cmd_dream)

    if wanted("sweep"):
        sweep = commands.add_parser(
            "sweep", help="dream an image once per layer and make a labelled contact sheet"
        )
        sweep.add_argument(
            "image", nargs="?", help="input image; omit it with --start noise --size HxW"
        )
        _add_sweep_options(sweep)
        sweep.add_argument(
            "--columns", type=int, default=3, help="images per row of the contact sheet"
        )
        if with_dream_options:
            _add_dream_options(sweep, layers=False)
        sweep.set_defaults(run=cmd_sweep)

    if wanted("preview"):
        preview = commands.add_parser(
            "preview",
            help="dream a video's frames at some times once per layer, on one labelled contact "
            "sheet (a row per time)",
        )
        preview.add_argument("video", help="input video")
        preview.add_argument(
            "--at", nargs="+", type=float, required=True, metavar="SECONDS", help="frame times"
        )
        _add_sweep_options(preview)
        if with_dream_options:
            _add_dream_options(preview, layers=False)
        preview.set_defaults(run=cmd_preview)

    if wanted("grab-frame"):
        grab = commands.add_parser(
            "grab-frame", help="the frame of a video at a time (used by the workflow's sweeps)"
        )
        grab.add_argument("--probe", required=True, help="the video's probe.json")
        grab.add_argument("--at", type=float, required=True, metavar="SECONDS")
        grab.add_argument("--settings", required=True, help="the frames settings, as JSON")
        grab.add_argument("--key", default="--at", help="what an error names for the time")
        grab.add_argument("-o", "--output", required=True)
        grab.set_defaults(run=cmd_grab_frame)

    if wanted("contact-sheet"):
        sheet = commands.add_parser("contact-sheet", help="lay images out on a labelled grid")
        sheet.add_argument("images", nargs="+")
        sheet.add_argument("--labels", nargs="+", required=True)
        sheet.add_argument("--columns", type=int, default=3)
        sheet.add_argument("-o", "--output", required=True)
        sheet.set_defaults(run=cmd_contact_sheet)

    if wanted("pairs"):
        pairs = commands.add_parser(
            "pairs", help="raw frames beside their dreams, a pair per row (used by the workflow)"
        )
        pairs.add_argument("--raw", nargs="+", required=True, help="the raw frames")
        pairs.add_argument("--dreamed", nargs="+", required=True, help="their dreams, in order")
        pairs.add_argument("--labels", nargs="+", required=True, help="a label per pair")
        pairs.add_argument("-o", "--output", required=True, help="the picture (.png or .jpg)")
        pairs.set_defaults(run=cmd_pairs)

    if wanted("layers"):
        layers = commands.add_parser(
            "layers", help="list a model's layers with their output shapes (C x H x W)"
        )
        layers.add_argument("--model", default="efficientnet_lite0")
        layers.add_argument(
            "--size",
            type=_size,
            default=(224, 224),
            metavar="HxW",
            help="input height x width for the shapes (default 224x224)",
        )
        layers.set_defaults(run=cmd_layers)

    if wanted("fetch-models"):
        fetch = commands.add_parser(
            "fetch-models",
            help="put torchvision models' ImageNet weights, or RAFT's optical flow weights, into "
            "the torch cache ($TORCH_HOME/hub/checkpoints), where jobs read them",
        )
        fetch.add_argument(
            "--model",
            action="append",
            required=True,
            help="a model name, or all for every torchvision model; repeatable",
        )
        origin = fetch.add_mutually_exclusive_group()
        origin.add_argument(
            "--from",
            dest="source",
            metavar="FILE",
            help="copy this local weights file instead of downloading",
        )
        origin.add_argument(
            "--url", help="download from this URL instead of torchvision's (file:// works)"
        )
        fetch.set_defaults(run=cmd_fetch_models)

    if wanted("models"):
        models = commands.add_parser("models", help="list the available models")
        models.set_defaults(run=cmd_models)

    if wanted("doctor"):
        doctor = commands.add_parser(
            "doctor",
            help="the torch build, the CUDA it was made for and the driver that needs, whether "
            "CUDA is usable here and why not, the GPUs nvidia-smi lists",
        )
        doctor.set_defaults(run=cmd_doctor)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        args.run(args)
    except DreamflowError as error:
        # a message listing several problems has one per line; join them to keep one line
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"dreamflow: error: {message}", file=sys.stderr)
        return 1
    except OSError as error:
        # what the package did not foresee still names the file: a full disk, a lost mount
        where = f"{error.filename}: " if error.filename else ""
        print(f"dreamflow: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
