"""Config validation, defaults and per-input settings. Imports no torch: the Snakefile uses it."""

import copy
import difflib
import functools
import os
from pathlib import Path

import jsonschema
import yaml

from . import remote
from .errors import DreamflowError
from .frames import IMAGE_SUFFIXES, natural_key
from .models import check_layers, resolve_layers
from .objectives import parse as parse_objective

# workflow/schemas/config.schema.yaml, through the package's link to it, so that an installed
# package (a container image, a wheel) has its own copy
SCHEMA_PATH = Path(__file__).parent / "config.schema.yaml"
SECTIONS = ("dream", "blend", "scenes", "frames", "encode")


@functools.cache
def _parsed_schema(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_schema(path=SCHEMA_PATH):
    """The config schema, parsed once per process (settings_for asks once per input): read it, never
    modify it."""
    return _parsed_schema(str(path))


def _resolve(schema, root):
    while "$ref" in schema:
        ref = schema["$ref"]
        node = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance, schema, root):
    """Fill in defaults of declared properties, recursively.

    Only `properties` are followed, never `additionalProperties`, so the per-input override
    sections stay sparse: an override holds just what the user wrote.
    """
    schema = _resolve(schema, root)
    for key, subschema in schema.get("properties", {}).items():
        subschema = _resolve(subschema, root)
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if isinstance(instance.get(key), dict):
            fill_defaults(instance[key], subschema, root)
    return instance


def _key_path(error, prefix=""):
    parts = ([prefix] if prefix else []) + [str(part) for part in error.absolute_path]
    return ".".join(parts) or "(top level)"


def _describe(error, prefix=""):
    """One readable line per schema violation, naming the config key."""
    key = _key_path(error, prefix)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            parts.append(f"unknown key '{name}'{hint}")
        if allowed:
            return f"config key {key}: {', '.join(parts)}; allowed keys: {', '.join(allowed)}"
        return f"config key {key}: {', '.join(parts)}"
    if error.validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"config key {key}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "required":
        return f"config key {key}: {error.message}"
    if error.validator == "oneOf":
        expected = " or ".join(_expected(alternative) for alternative in error.validator_value)
        return f"config key {key}: {error.instance!r} is not allowed; expected {expected}"
    return f"config key {key}: {error.message}"


def _expected(schema):
    """A schema alternative in words, e.g. 'an integer >= 1', "'auto'", 'null', 'terms'."""
    if "const" in schema:
        return repr(schema["const"])
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return {"terms": "a layer term or a list of terms", "term": "a layer term"}.get(name, name)
    kinds = schema.get("type", "a value")
    words = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "null": "null",
        "boolean": "true or false",
        "object": "a mapping",
        "array": "a list",
    }
    text = " or ".join(
        words.get(kind, kind) for kind in ([kinds] if isinstance(kinds, str) else kinds)
    )
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    return text


def check_config_file(path):
    """A YAML syntax error in the config file as one line with its line and column (Snakemake's
    own message says only that the file is not valid YAML). A missing file is Snakemake's to
    report."""
    try:
        with open(path) as handle:
            yaml.safe_load(handle)
    except FileNotFoundError:
        return
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DreamflowError(
            f"{path}{where}: not valid YAML: {error.problem or error.context}"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise DreamflowError(f"{path}: not valid YAML: {error}") from None


def validate(config, schema=None):
    """Fill defaults and validate; raise DreamflowError listing every problem, one per line."""
    schema = schema or load_schema()
    if not isinstance(config, dict):
        raise DreamflowError("config: expected a mapping of keys to values at the top level")
    config = fill_defaults(copy.deepcopy(config), schema, schema)
    _raise_errors(config, schema)
    _check_container(config["container"])
    global_settings = {section: config[section] for section in SECTIONS}
    _check_settings("", {**global_settings, "dream": resolve_dream(config["dream"])})
    for name, entry in config["inputs"].items():
        if any(section in entry for section in SECTIONS):
            _check_settings(f"inputs.{name}.", settings_for(config, name))
    return config


def _raise_errors(instance, schema, prefix=""):
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        raise DreamflowError("\n".join(_describe(e, prefix) for e in errors))


def section_schema(section):
    """The schema of one section (dream, blend, frames, encode, zoom, sweep), self-contained."""
    schema = load_schema()
    return {**schema["$defs"][section], "$defs": schema["$defs"]}


def section_defaults(section):
    """A section's settings with every default of the schema filled in."""
    schema = load_schema()
    return fill_defaults({}, schema["$defs"][section], schema)


def validate_section(section, values):
    """Validate one section (e.g. the dream settings of a single-image run) against its schema."""
    _raise_errors(values, section_schema(section), prefix=section)
    _check_section_layers(section, values)


def _check_section_layers(section, values):
    """The layers of a dream section, which has passed its schema, against its model's."""
    if section != "dream":
        return
    try:
        check_layers(
            values["model"],
            parse_objective(resolve_layers(values["model"], values["layers"])).layers,
        )
    except DreamflowError as error:
        raise DreamflowError(f"dream.layers: {error}") from None


def validate_job_settings(settings):
    """A job's settings (JobSettings, BlendSettings) checked as config.yaml's are: a job may come
    from anywhere. Its sections are complete (the plan fills in every default), so a missing key
    is an error too."""
    for section, values in settings.sections().items():
        if values is None:  # zoom off
            continue
        schema = section_schema(section)
        _raise_errors(values, schema, prefix=section)  # wrong values first: they say the most
        unused = settings.UNUSED_KEYS.get(section, ())
        missing = sorted(set(schema["properties"]) - set(values) - set(unused))
        if missing:
            raise DreamflowError(f"config key {section}: missing {', '.join(missing)}")
        _check_section_layers(section, values)


def settings_for(config, name):
    """The effective dream/blend/frames/encode settings of one input: globals, then its
    overrides."""
    entry = config["inputs"][name]
    settings = {section: {**config[section], **entry.get(section, {})} for section in SECTIONS}
    settings["dream"] = resolve_dream(settings["dream"])
    schema = load_schema()
    for section in ("zoom", "sweep"):
        settings[section] = (
            fill_defaults(copy.deepcopy(entry[section]), schema["$defs"][section], schema)
            if section in entry
            else None
        )
    return settings


def resolve_dream(dream_settings):
    """Dream settings with the model's default layers filled in, so jobs see explicit values."""
    resolved = {
        **dream_settings,
        "layers": resolve_layers(dream_settings["model"], dream_settings["layers"]),
    }
    if resolved.get("layer_schedule"):
        resolved["layer_schedule"] = {"every": 1, **resolved["layer_schedule"]}
    return resolved


def _check_settings(prefix, settings):
    """Checks across keys that the schema cannot express; `prefix` locates the settings in the
    config."""
    frames, blend, dream = settings["frames"], settings["blend"], settings["dream"]
    for a, b in (("start", "start_time"), ("end", "end_time")):
        if frames[a] is not None and frames[b] is not None:
            raise DreamflowError(f"config key {prefix}frames: set {a} or {b}, not both")
    if (
        frames["start"] is not None
        and frames["end"] is not None
        and frames["end"] < frames["start"]
    ):
        raise DreamflowError(
            f"config key {prefix}frames.end: {frames['end']} is before start {frames['start']}"
        )
    if (
        frames["start_time"] is not None
        and frames["end_time"] is not None
        and frames["end_time"] <= frames["start_time"]
    ):
        raise DreamflowError(f"config key {prefix}frames.end_time: must be after start_time")
    if blend["low"] > blend["high"]:
        raise DreamflowError(
            f"config key {prefix}blend.low: {blend['low']} is above blend.high {blend['high']}"
        )
    if blend["max_chain"] is not None and blend["max_chain"] <= 2 * blend["overlap"]:
        raise DreamflowError(
            f"config key {prefix}blend.max_chain: {blend['max_chain']} must be more than twice "
            f"blend.overlap ({blend['overlap']}), so that no frame is in three segments"
        )
    _check_terms(f"{prefix}dream.layers", dream["model"], dream["layers"])
    if dream["layer_schedule"]:
        for item in dream["layer_schedule"]["layers"]:
            _check_terms(f"{prefix}dream.layer_schedule.layers", dream["model"], item)
    for key in ("weights", "guide"):
        if dream[key] is not None and not os.path.isfile(dream[key]):
            raise DreamflowError(f"config key {prefix}dream.{key}: file not found: {dream[key]}")


CONTAINER_FORMS = "a local Apptainer image file ending in .sif, or a docker:// URI"


def _check_container(image):
    """The forms Snakemake's --sdm apptainer runs: a local image file or a URI it can pull."""
    if image is None:
        return
    if any(character.isspace() for character in image):
        raise DreamflowError(
            f"config key container: {image!r} contains whitespace; expected {CONTAINER_FORMS}"
        )
    if image.startswith("docker://"):
        if image == "docker://":
            raise DreamflowError(
                f"config key container: 'docker://' names no image; expected {CONTAINER_FORMS}"
            )
        return
    if "://" in image or not image.endswith(".sif"):
        raise DreamflowError(f"config key container: {image!r} is not {CONTAINER_FORMS}")
    if not os.path.isfile(image):
        raise DreamflowError(f"config key container: file not found: {image}")


def _check_terms(key, model, terms):
    try:
        check_layers(model, parse_objective(terms).layers)
    except DreamflowError as error:
        raise DreamflowError(f"config key {key}: {error}") from None


def unambiguous_path(path):
    """`path`, read as a file name by every command it is passed to: a relative path starting with
    '-' would be taken for an option, and one with a ':' before its first '/' for a protocol
    (ffmpeg's 'name:...')."""
    first = path.split("/", 1)[0]
    if os.path.isabs(path) or not (path.startswith("-") or ":" in first):
        return path
    return os.path.join(".", path)


def input_kind(path):
    """'folder', 'image' or 'video', checking that the path exists and is readable; a URL is
    checked without the network, its kind told by its suffix (see dreamflow.remote)."""
    if remote.is_url(path):
        remote.check_url(path)
        return "image" if remote.suffix(path) in IMAGE_SUFFIXES else "video"
    if not os.path.exists(path):
        raise DreamflowError(f"input not found: {path}")
    if os.path.isdir(path):
        if not folder_images(path):
            raise DreamflowError(
                f"input folder has no images ({', '.join(IMAGE_SUFFIXES)}): {path}"
            )
        return "folder"
    if not os.access(path, os.R_OK):
        raise DreamflowError(f"input is not readable: {path}")
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "video"


def folder_images(folder):
    """Image files of a folder in natural order (img2 before img10); hidden files are skipped."""
    names = [
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file()
        and not entry.name.startswith(".")
        and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
    ]
    return [os.path.join(folder, name) for name in sorted(names, key=natural_key)]


def _is_within(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_one_line(key, path):
    """A path must be one line: a line break or other control character would split error
    messages, logs and shell output."""
    if any(ord(character) < 32 or ord(character) == 127 for character in path):
        raise DreamflowError(
            f"config key {key}: {path!r} contains a line break or another control character: "
            "rename the file"
        )


def _check_not_an_output(key, path, config):
    """Inputs are never outputs: a file inside work_dir or results_dir (symlinks followed) could be
    written by a rule, or removed with the work folder."""
    for folder_key in ("work_dir", "results_dir"):
        if _is_within(path, config[folder_key]):
            resolved = os.path.realpath(path)
            link = f" (a link to {resolved})" if resolved != os.path.abspath(path) else ""
            raise DreamflowError(
                f"config key {key}: {path}{link} is inside {folder_key} ({config[folder_key]}), "
                "where the workflow writes: copy it elsewhere and name the copy"
            )


def _files_read(config, name, entry):
    """The config keys and paths of what an input's jobs read: the input, its guide image and
    weights file."""
    dream = settings_for(config, name)["dream"]
    yield f"inputs.{name}.path", entry["path"]
    for key in ("guide", "weights"):
        if dream.get(key):
            where = f"inputs.{name}.dream" if key in entry.get("dream", {}) else "dream"
            yield f"{where}.{key}", dream[key]


def _check_sweep(name, entry, kind):
    """A sweep's `at` against its input's kind: times are required for a video, and mean
    nothing for an image; the times themselves are checked against the video's length by the
    job that grabs each frame, once the video is probed."""
    key = f"config key inputs.{name}.sweep"
    sweep = entry["sweep"]
    if kind == "folder":
        raise DreamflowError(
            f"{key}: needs a single image or a video as path, but {entry['path']} is a folder"
        )
    if kind == "image" and "at" in sweep:
        raise DreamflowError(f"{key}.at: times are for a video, but {entry['path']} is an image")
    if kind == "video" and "at" not in sweep:
        raise DreamflowError(
            f"{key}.at: missing: the times in seconds of the frames of {entry['path']} to sweep"
        )
    if kind == "video" and "columns" in sweep:
        raise DreamflowError(
            f"{key}.columns: a video's sheet has a row per time and a column per item"
        )


def check_inputs(config):
    """Check every input path before any job runs; returns {name: kind}."""
    for folder_key in ("work_dir", "results_dir"):
        _check_one_line(folder_key, config[folder_key])
    kinds = {}
    for name, entry in config["inputs"].items():
        for key, path in _files_read(config, name, entry):
            _check_one_line(key, path)
            if not remote.is_url(path):
                _check_not_an_output(key, path, config)
        try:
            kinds[name] = input_kind(entry["path"])
        except DreamflowError as error:
            raise DreamflowError(f"config key inputs.{name}.path: {error}") from None
        if "zoom" in entry and kinds[name] != "image":
            raise DreamflowError(
                f"config key inputs.{name}.zoom: needs a single image as path, "
                f"but {entry['path']} is a {kinds[name]}"
            )
        if "zoom" in entry and "sweep" in entry:
            raise DreamflowError(f"config key inputs.{name}: set zoom or sweep, not both")
        if "sweep" in entry:
            _check_sweep(name, entry, kinds[name])
            for item in entry["sweep"]["layers"]:
                _check_terms(
                    f"inputs.{name}.sweep.layers",
                    settings_for(config, name)["dream"]["model"],
                    item,
                )
    return kinds
