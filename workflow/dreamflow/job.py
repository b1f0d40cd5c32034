"""The frame job: everything one dream of one frame needs, as one typed value.

The workflow's `dreamflow dream-frame` command line is parsed into a FrameJob once; the same job
goes over the model server's socket as a JSON mapping and is checked again on arrival. Both the
server and the in-process path run it with `dreamstep.run_job`. Imports no torch.
"""

import json
import os
from dataclasses import asdict, dataclass

from .errors import DreamflowError


def settings_text(value):
    """Stable JSON text for settings: equal settings give equal strings (Snakemake's params
    check)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class JobSettings:
    """What every dream job of one input runs with; changing encode settings changes none of it."""

    dream: dict
    blend: dict
    zoom: dict | None = None
    jpg_quality: int = 95

    @classmethod
    def from_text(cls, text, origin="--settings"):
        try:
            value = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise DreamflowError(f"{origin} is not valid JSON: {error}") from None
        return cls.from_mapping(value, origin)

    @classmethod
    def from_mapping(cls, value, origin="settings"):
        if not isinstance(value, dict):
            raise DreamflowError(f"{origin}: expected a mapping, not {type(value).__name__}")
        unknown = sorted(set(value) - {"dream", "blend", "zoom", "jpg_quality"})
        if unknown:
            raise DreamflowError(f"{origin}: unknown keys {', '.join(unknown)}")
        for key in ("dream", "blend"):
            if not isinstance(value.get(key), dict):
                raise DreamflowError(f"{origin}: '{key}' must be a mapping")
        zoom = value.get("zoom")
        if zoom is not None and not isinstance(zoom, dict):
            raise DreamflowError(f"{origin}: 'zoom' must be a mapping or null")
        quality = value.get("jpg_quality", 95)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise DreamflowError(f"{origin}: 'jpg_quality' must be an integer from 1 to 100")
        return cls(value["dream"], value["blend"], zoom, quality)

    def to_mapping(self):
        return asdict(self)

    def text(self):
        return settings_text(self.to_mapping())


def default_threads():
    """Threads for a job started without a count: $OMP_NUM_THREADS, else the CPUs this process may
    use."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return len(os.sched_getaffinity(0))


def _optional_path(value, key):
    if value is not None and (not isinstance(value, str) or not value):
        raise DreamflowError(f"frame job: '{key}' must be a path or null")
    return value


def _positive_int(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DreamflowError(f"frame job: '{key}' must be an integer of at least 1, not {value!r}")
    return value


@dataclass(frozen=True)
class FrameJob:
    """Dream frame `number` into `output`.

    `frame` is the raw frame (absent for zoom frames after the first); `previous` is dreamed frame
    N-1, which a blend mixes in or a zoom zooms. `threads` is the torch thread count the job runs
    with: results differ between thread counts, so every job names its own.
    """

    number: int
    output: str
    settings: JobSettings
    threads: int
    frame: str | None = None
    previous: str | None = None

    def __post_init__(self):
        _positive_int(self.number, "number")
        _positive_int(self.threads, "threads")
        if not isinstance(self.output, str) or not self.output:
            raise DreamflowError("frame job: 'output' must be a path")
        _optional_path(self.frame, "frame")
        _optional_path(self.previous, "previous")
        if not isinstance(self.settings, JobSettings):
            raise DreamflowError("frame job: 'settings' must be JobSettings")

    def to_message(self):
        """The job as a JSON-ready mapping, the form it takes on the server's socket."""
        return {
            "number": self.number,
            "output": self.output,
            "settings": self.settings.to_mapping(),
            "threads": self.threads,
            "frame": self.frame,
            "previous": self.previous,
        }

    @classmethod
    def from_message(cls, message):
        """A job from its socket form; anything malformed is a DreamflowError naming the field."""
        if not isinstance(message, dict):
            raise DreamflowError("frame job: expected a mapping")
        expected = {"number", "output", "settings", "threads", "frame", "previous"}
        unknown = sorted(set(message) - expected)
        if unknown:
            raise DreamflowError(f"frame job: unknown fields {', '.join(unknown)}")
        missing = sorted({"number", "output", "settings", "threads"} - set(message))
        if missing:
            raise DreamflowError(f"frame job: missing fields {', '.join(missing)}")
        settings = JobSettings.from_mapping(message["settings"], "frame job: settings")
        return cls(
            message["number"],
            message["output"],
            settings,
            message["threads"],
            message.get("frame"),
            message.get("previous"),
        )
