"""The jobs of the frame steps, each everything one step of one frame needs, as one typed value:
FrameJob (dream a frame), BlendJob (make the image a chained frame starts from), FlowJob (the
optical flow of a pair of raw frames).

The workflow's command line is parsed into a job once; the same job goes over the model server's
socket as a JSON mapping and is checked again on arrival. Both the server and the in-process path
run it with the same function (see dreamflow.steps). Imports no torch and no numpy: the frame
jobs' thin clients import this.
"""

import json
import os

from . import __version__
from .errors import DreamflowError

# the key of the settings of dream and blend jobs that names the dreamflow version that wrote them.
# It is part of the settings text, Snakemake's params: a new version reruns the dreams and blends,
# whose results it may change, rather than mixing two versions' frames in one video.
VERSION_KEY = "dreamflow"


def settings_text(value):
    """Stable JSON text for settings: equal settings give equal strings (Snakemake's params
    check)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_REQUIRED = object()


class _Record:
    """A read-only value with the fields FIELDS names, in order, each with its default or
    _REQUIRED; built from positional or keyword arguments, equal when its fields are. A frozen
    dataclass, without the dataclasses import: it brings in inspect, a third of a frame job's
    start-up."""

    FIELDS = {}

    def __init__(self, *args, **kwargs):
        name = type(self).__name__
        if len(args) > len(self.FIELDS):
            raise TypeError(f"{name} takes at most {len(self.FIELDS)} arguments")
        values = dict(zip(self.FIELDS, args, strict=False))
        for key, value in kwargs.items():
            if key not in self.FIELDS or key in values:
                raise TypeError(f"{name} got an unexpected or repeated argument {key!r}")
            values[key] = value
        for key, default in self.FIELDS.items():
            if key not in values:
                if default is _REQUIRED:
                    raise TypeError(f"{name} is missing the argument {key!r}")
                values[key] = default
            object.__setattr__(self, key, values[key])
        self._check_fields()

    def _check_fields(self):
        """Raise DreamflowError for a field of the wrong kind."""

    def __setattr__(self, key, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other):
        return type(other) is type(self) and self.to_fields() == other.to_fields()

    __hash__ = None  # the settings fields are dicts

    def __repr__(self):
        fields = ", ".join(f"{key}={value!r}" for key, value in self.to_fields().items())
        return f"{type(self).__name__}({fields})"

    def to_fields(self):
        return {key: getattr(self, key) for key in self.FIELDS}

    def replace(self, **changes):
        """A copy with `changes` made."""
        return type(self)(**{**self.to_fields(), **changes})


def _mapping(value, origin, allowed, required=()):
    if not isinstance(value, dict):
        raise DreamflowError(f"{origin}: expected a mapping, not {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise DreamflowError(f"{origin}: unknown keys {', '.join(unknown)}")
    for key in required:
        if not isinstance(value.get(key), dict):
            raise DreamflowError(f"{origin}: '{key}' must be a mapping")
    return value


def _jpg_quality(value, origin):
    quality = value.get("jpg_quality", 95)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise DreamflowError(f"{origin}: 'jpg_quality' must be an integer from 1 to 100")
    return quality


def check_writer(version, origin):
    """Raise DreamflowError unless `version`, the dreamflow version that wrote settings, is this
    one: a host checkout and an image (or two installs) of different versions may read the same
    settings differently, or dream them differently."""
    if version == __version__:
        return
    written = (
        f"dreamflow {version}" if isinstance(version, str) else "a dreamflow that names no version"
    )
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    raise DreamflowError(
        f"{origin}: written by {written}, but this job runs dreamflow {__version__} (from "
        f"{here}): rebuild the image from the checkout that runs the workflow "
        f"(containers/README.md), or run the workflow from a checkout of dreamflow {__version__}"
    )


def _written_here(value, origin):
    """Check the writer's version first: settings of another version may have other keys."""
    if isinstance(value, dict):
        check_writer(value.get(VERSION_KEY), origin)


class _Settings(_Record):
    """The text forms shared by the settings of every job: parsed from JSON, written as stable
    JSON."""

    UNUSED_KEYS = {}  # section -> keys of the config section that jobs neither need nor get

    @classmethod
    def from_text(cls, text, origin="--settings"):
        try:
            value = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise DreamflowError(f"{origin} is not valid JSON: {error}") from None
        return cls.from_mapping(value, origin)

    def to_mapping(self):
        return self.to_fields()

    def text(self):
        return settings_text(self.to_mapping())


class JobSettings(_Settings):
    """What every dream job of one input runs with: `dream` (the dream section), `zoom` (the
    zoom section or None) and `jpg_quality`. Blend settings are not part of it: the blend step
    makes the image a chained frame starts from, so changing them reruns the blends, and the
    dreams only through the files that changed."""

    FIELDS = {"dream": _REQUIRED, "zoom": None, "jpg_quality": 95, VERSION_KEY: __version__}

    @classmethod
    def from_mapping(cls, value, origin="settings"):
        _written_here(value, origin)
        _mapping(value, origin, cls.FIELDS, required=("dream",))
        zoom = value.get("zoom")
        if zoom is not None and not isinstance(zoom, dict):
            raise DreamflowError(f"{origin}: 'zoom' must be a mapping or null")
        return cls(value["dream"], zoom, _jpg_quality(value, origin))

    def sections(self):
        """The config sections in these settings, for the schema check."""
        return {"dream": self.dream, "zoom": self.zoom}


class BlendSettings(_Settings):
    """What every blend job of one input runs with: `blend` (the blend section), and the dream's
    `start` and `seed` (a noise start blends the previous dream into noise), and `jpg_quality`."""

    # the chain keys shape the DAG, not a start image: changing them reruns no blend by itself
    UNUSED_KEYS = {"blend": ("max_chain", "overlap")}
    FIELDS = {
        "blend": _REQUIRED,
        "start": "image",
        "seed": 0,
        "jpg_quality": 95,
        VERSION_KEY: __version__,
    }

    @classmethod
    def from_mapping(cls, value, origin="settings"):
        _written_here(value, origin)
        _mapping(value, origin, cls.FIELDS, required=("blend",))
        start = value.get("start", "image")
        if start not in ("image", "noise"):
            raise DreamflowError(f"{origin}: 'start' must be image or noise, not {start!r}")
        seed = value.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DreamflowError(f"{origin}: 'seed' must be an integer of at least 0")
        return cls(value["blend"], start, seed, _jpg_quality(value, origin))

    def sections(self):
        return {"blend": self.blend}


# the flow section's methods; flow.py computes them (it needs numpy, which this module avoids)
FLOW_METHODS = ("dis", "farneback", "raft_small", "raft_large")


def default_threads():
    """Threads for a job started without a count: $OMP_NUM_THREADS, else the CPUs this process may
    use."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return len(os.sched_getaffinity(0))


def _optional_path(value, key, kind):
    if value is not None and (not isinstance(value, str) or not value):
        raise DreamflowError(f"{kind}: '{key}' must be a path or null")
    return value


def _positive_int(value, key, kind):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DreamflowError(f"{kind}: '{key}' must be an integer of at least 1, not {value!r}")
    return value


class _Message(_Record):
    """A job's socket form: a JSON mapping of its fields, checked field by field on arrival."""

    KIND = "job"
    SETTINGS = None  # the settings class of the `settings` field, if the job has one

    def to_message(self):
        """The job as a JSON-ready mapping, the form it takes on the server's socket."""
        message = self.to_fields()
        if self.SETTINGS:
            message["settings"] = self.settings.to_mapping()
        return message

    @classmethod
    def from_message(cls, message):
        """A job from its socket form; anything malformed is a DreamflowError naming the field."""
        if not isinstance(message, dict):
            raise DreamflowError(f"{cls.KIND}: expected a mapping")
        unknown = sorted(set(message) - set(cls.FIELDS))
        if unknown:
            raise DreamflowError(f"{cls.KIND}: unknown fields {', '.join(unknown)}")
        required = {key for key, default in cls.FIELDS.items() if default is _REQUIRED}
        missing = sorted(required - set(message))
        if missing:
            raise DreamflowError(f"{cls.KIND}: missing fields {', '.join(missing)}")
        values = dict(message)
        if cls.SETTINGS:
            values["settings"] = cls.SETTINGS.from_mapping(
                message["settings"], f"{cls.KIND}: settings"
            )
        return cls(**values)

    def _check(self, paths=(), numbers=(), optional_paths=()):
        for key in numbers:
            _positive_int(getattr(self, key), key, self.KIND)
        for key in paths:
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise DreamflowError(f"{self.KIND}: '{key}' must be a path")
        for key in optional_paths:
            _optional_path(getattr(self, key), key, self.KIND)
        if self.SETTINGS and not isinstance(self.settings, self.SETTINGS):
            raise DreamflowError(f"{self.KIND}: 'settings' must be {self.SETTINGS.__name__}")


class FrameJob(_Message):
    """Dream frame `number` into `output`.

    `frame` is the image to dream: the raw frame, or the blend step's start image when `prepared`
    (then dreamed as it is: a noise start is already in it); absent for zoom frames after the
    first, which dream `previous` (dreamed frame N-1) zoomed. `threads` is the torch thread count
    the job runs with: results differ between thread counts, so every job names its own.
    """

    KIND = "frame job"
    SETTINGS = JobSettings

    FIELDS = {
        "number": _REQUIRED,
        "output": _REQUIRED,
        "settings": _REQUIRED,
        "threads": _REQUIRED,
        "frame": None,
        "previous": None,
        "prepared": False,
    }

    def _check_fields(self):
        self._check(("output",), ("number", "threads"), ("frame", "previous"))
        if not isinstance(self.prepared, bool):
            raise DreamflowError(f"{self.KIND}: 'prepared' must be true or false")


class BlendJob(_Message):
    """Make the image that frame `number` of a chain starts from, into `output`: raw `frame`
    plus the dream of its predecessor, `previous`; with a flow, carried along the `flow` file of
    the pair (`previous_frame`, `frame`) of raw frames."""

    KIND = "blend job"
    SETTINGS = BlendSettings

    FIELDS = {
        "number": _REQUIRED,
        "output": _REQUIRED,
        "settings": _REQUIRED,
        "frame": _REQUIRED,
        "previous": _REQUIRED,
        "previous_frame": None,
        "flow": None,
    }

    def _check_fields(self):
        self._check(("output", "frame", "previous"), ("number",), ("previous_frame", "flow"))
        if self.settings.blend.get("flow", "none") != "none" and not (
            self.previous_frame and self.flow
        ):
            raise DreamflowError(
                f"{self.KIND}: blend.flow {self.settings.blend['flow']} needs 'previous_frame' "
                "and 'flow'"
            )


class FlowJob(_Message):
    """The optical flow of raw `frame` back to raw `previous_frame`, and its reliability mask,
    into the flow file `output`."""

    KIND = "flow job"

    FIELDS = {
        "output": _REQUIRED,
        "frame": _REQUIRED,
        "previous_frame": _REQUIRED,
        "method": _REQUIRED,
        "threads": 1,
        "device": "auto",
    }

    def _check_fields(self):
        self._check(("output", "frame", "previous_frame"), ("threads",))
        if self.method not in FLOW_METHODS:
            raise DreamflowError(
                f"{self.KIND}: 'method' must be one of {', '.join(FLOW_METHODS)}, not "
                f"{self.method!r}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise DreamflowError(f"{self.KIND}: 'device' must be auto, cpu or cuda")
