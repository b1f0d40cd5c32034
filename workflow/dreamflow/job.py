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
from dataclasses import MISSING, asdict, dataclass, fields

from .errors import DreamflowError


def settings_text(value):
    """Stable JSON text for settings: equal settings give equal strings (Snakemake's params
    check)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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


class _Settings:
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
        return asdict(self)

    def text(self):
        return settings_text(self.to_mapping())


@dataclass(frozen=True)
class JobSettings(_Settings):
    """What every dream job of one input runs with. Blend settings are not part of it: the blend
    step makes the image a chained frame starts from, so changing them reruns the blends, and
    the dreams only through the files that changed."""

    dream: dict
    zoom: dict | None = None
    jpg_quality: int = 95

    @classmethod
    def from_mapping(cls, value, origin="settings"):
        _mapping(value, origin, ("dream", "zoom", "jpg_quality"), required=("dream",))
        zoom = value.get("zoom")
        if zoom is not None and not isinstance(zoom, dict):
            raise DreamflowError(f"{origin}: 'zoom' must be a mapping or null")
        return cls(value["dream"], zoom, _jpg_quality(value, origin))

    def sections(self):
        """The config sections in these settings, for the schema check."""
        return {"dream": self.dream, "zoom": self.zoom}


@dataclass(frozen=True)
class BlendSettings(_Settings):
    """What every blend job of one input runs with: the blend section, and the dream's start and
    seed (a noise start blends the previous dream into noise)."""

    # the chain keys shape the DAG, not a start image: changing them reruns no blend by itself
    UNUSED_KEYS = {"blend": ("max_chain", "overlap")}

    blend: dict
    start: str = "image"
    seed: int = 0
    jpg_quality: int = 95

    @classmethod
    def from_mapping(cls, value, origin="settings"):
        _mapping(value, origin, ("blend", "start", "seed", "jpg_quality"), required=("blend",))
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


class _Message:
    """A job's socket form: a JSON mapping of its fields, checked field by field on arrival."""

    KIND = "job"
    SETTINGS = None  # the settings class of the `settings` field, if the job has one

    def to_message(self):
        """The job as a JSON-ready mapping, the form it takes on the server's socket."""
        message = {item.name: getattr(self, item.name) for item in fields(self)}
        if self.SETTINGS:
            message["settings"] = self.settings.to_mapping()
        return message

    @classmethod
    def from_message(cls, message):
        """A job from its socket form; anything malformed is a DreamflowError naming the field."""
        if not isinstance(message, dict):
            raise DreamflowError(f"{cls.KIND}: expected a mapping")
        unknown = sorted(set(message) - {item.name for item in fields(cls)})
        if unknown:
            raise DreamflowError(f"{cls.KIND}: unknown fields {', '.join(unknown)}")
        required = {item.name for item in fields(cls) if item.default is MISSING}
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


@dataclass(frozen=True)
class FrameJob(_Message):
    """Dream frame `number` into `output`.

    `frame` is the image to dream: the raw frame, or the blend step's start image when `prepared`
    (then dreamed as it is: a noise start is already in it); absent for zoom frames after the
    first, which dream `previous` (dreamed frame N-1) zoomed. `threads` is the torch thread count
    the job runs with: results differ between thread counts, so every job names its own.
    """

    KIND = "frame job"
    SETTINGS = JobSettings

    number: int
    output: str
    settings: JobSettings
    threads: int
    frame: str | None = None
    previous: str | None = None
    prepared: bool = False

    def __post_init__(self):
        self._check(("output",), ("number", "threads"), ("frame", "previous"))
        if not isinstance(self.prepared, bool):
            raise DreamflowError(f"{self.KIND}: 'prepared' must be true or false")


@dataclass(frozen=True)
class BlendJob(_Message):
    """Make the image that frame `number` of a chain starts from, into `output`: raw `frame`
    plus the dream of its predecessor, `previous`; with a flow, carried along the `flow` file of
    the pair (`previous_frame`, `frame`) of raw frames."""

    KIND = "blend job"
    SETTINGS = BlendSettings

    number: int
    output: str
    settings: BlendSettings
    frame: str
    previous: str
    previous_frame: str | None = None
    flow: str | None = None

    def __post_init__(self):
        self._check(("output", "frame", "previous"), ("number",), ("previous_frame", "flow"))
        if self.settings.blend.get("flow", "none") != "none" and not (
            self.previous_frame and self.flow
        ):
            raise DreamflowError(
                f"{self.KIND}: blend.flow {self.settings.blend['flow']} needs 'previous_frame' "
                "and 'flow'"
            )


@dataclass(frozen=True)
class FlowJob(_Message):
    """The optical flow of raw `frame` back to raw `previous_frame`, and its reliability mask,
    into the flow file `output`."""

    KIND = "flow job"

    output: str
    frame: str
    previous_frame: str
    method: str
    threads: int = 1
    device: str = "auto"

    def __post_init__(self):
        self._check(("output", "frame", "previous_frame"), ("threads",))
        if self.method not in FLOW_METHODS:
            raise DreamflowError(
                f"{self.KIND}: 'method' must be one of {', '.join(FLOW_METHODS)}, not "
                f"{self.method!r}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise DreamflowError(f"{self.KIND}: 'device' must be auto, cpu or cuda")
