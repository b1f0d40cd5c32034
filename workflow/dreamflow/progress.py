"""How far a run has got, and how long the rest should take: `dreamflow status`.

Everything comes from the files a run leaves (the extracted frames, the dreams, probe.json,
scenes.json) and the mtimes of its dreams and job logs, never from Snakemake: it reads a run in
progress and a run left half-done alike. Imports no torch, and nothing of Snakemake.
"""

import os
import time
from dataclasses import dataclass

from .chains import LEAD_SUFFIX
from .errors import DreamflowError
from .frames import count_frames, frame_name

RECENT = 20  # the newest dreams the pace is measured over
IDLE_SECONDS = 300  # no dream written or started for this long: the run is not dreaming


def seconds_per_frame(mtimes, recent=RECENT):
    """The recent pace from the mtimes of dreamed files: the span of the newest `recent` over the
    intervals between them, so that chains dreamed side by side count together; None with fewer
    than two."""
    newest = sorted(mtimes)[-recent:]
    if len(newest) < 2:
        return None
    return (newest[-1] - newest[0]) / (len(newest) - 1)


def duration_text(seconds):
    """'12 s', '3 min 36 s', '2 h 5 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def time_left_text(left, pace, last_activity, now):
    """What to say of the time left: done, idle (nothing written or started for IDLE_SECONDS, or
    for three frames' time where frames are slower than that), or an estimate."""
    if left == 0:
        return "done"
    quiet = max(IDLE_SECONDS, 3 * pace) if pace is not None else IDLE_SECONDS
    if last_activity is not None and now - last_activity > quiet:
        return "idle"
    if pace is None:
        return "no estimate yet"
    return f"about {duration_text(left * pace)} left"


@dataclass
class InputProgress:
    name: str
    total: int | None  # frames to dream; None when not even probed
    approximate: bool  # total from the input's header, before extraction
    extracted: bool
    dreamed: int
    mtimes: list  # of the dreamed files
    last_activity: float | None  # newest mtime of a dream or a dream job's log

    @property
    def left(self):
        return None if self.total is None else max(0, self.total - self.dreamed)

    @property
    def pace(self):
        return seconds_per_frame(self.mtimes)


def _mtimes(folder, names=None):
    """{name: mtime} of the files of `folder` (those named in `names`, when given)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return {}
    found = {}
    for entry in entries:
        if names is None or entry.name in names:
            try:
                found[entry.name] = entry.stat().st_mtime
            except OSError:
                continue  # removed meanwhile
    return found


def _last_activity(mtimes, logs_folder):
    """The newest of the dreams and of the job logs, which a job creates as it starts."""
    return max([*mtimes.values(), *_mtimes(logs_folder).values()], default=None)


def _estimated_total(plan):
    """Frames an input will give, before its extraction, from probe.json; None without one."""
    import json

    from . import video

    try:
        with open(plan.layout.probe.format(name=plan.name)) as handle:
            probed = json.load(handle)
        extraction = video.plan(probed, plan.settings["frames"])
        return round(video.planned_frames(probed, extraction))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _seams(plan, count):
    """Overlap frames, whose output needs two dreams: known once the scenes are."""
    from .scenes import read_scenes

    path = plan.layout.scenes.format(name=plan.name)
    if not (plan.blends and os.path.exists(path)):
        return set()
    try:
        scenes = read_scenes(path)
    except DreamflowError:
        return set()
    return set(plan.chains(count, scenes["cuts"]).seams)


def input_progress(plan):
    """The progress of one InputPlan, read from its files."""
    logs = plan.layout.logs_folder(plan.name)
    if plan.sweep:  # one dream per item
        paths = [plan.sweep_image(item) for item in plan.sweep]
        mtimes = _mtimes(os.path.dirname(paths[0]), {os.path.basename(p) for p in paths})
        activity = _last_activity(mtimes, os.path.join(logs, "sweep"))
        return InputProgress(
            plan.name, len(paths), False, True, len(mtimes), list(mtimes.values()), activity
        )
    logs = os.path.join(logs, "dream")
    frames = plan.layout.frames.format(name=plan.name)
    if not os.path.isdir(frames):  # the extraction makes it in one step, once done
        total = plan.zoom_frames or _estimated_total(plan)
        approximate = total is not None and not plan.zoom_frames
        return InputProgress(plan.name, total, approximate, False, 0, [], _last_activity({}, logs))
    total = plan.frame_count(count_frames(frames, plan.frame_format))
    suffix = "." + plan.frame_format
    seams = _seams(plan, total)
    names = {frame_name(n) + suffix for n in range(1, total + 1)}
    names |= {frame_name(n) + LEAD_SUFFIX + suffix for n in seams}
    mtimes = _mtimes(os.path.dirname(plan.dreamed_frame(1)), names)
    dreamed = sum(
        frame_name(n) + suffix in mtimes
        and (n not in seams or frame_name(n) + LEAD_SUFFIX + suffix in mtimes)
        for n in range(1, total + 1)
    )
    return InputProgress(
        plan.name, total, False, True, dreamed, list(mtimes.values()), _last_activity(mtimes, logs)
    )


def _row(name, total, dreamed, left, about, pace, note):
    def count(value):
        return "?" if value is None else f"{about}{value}"

    shown = "-" if pace is None else f"{pace:.1f} s/frame"
    return [name, "frames", count(total), "dreamed", str(dreamed), "left", count(left), shown, note]


def _input_row(progress, now):
    about = "~" if progress.approximate else ""
    if not progress.extracted:
        note = "not extracted yet"
        if progress.approximate:
            note += " (frame count estimated from probe.json)"
    elif progress.left is None:
        note = ""
    else:
        note = time_left_text(progress.left, progress.pace, progress.last_activity, now)
    return _row(
        progress.name, progress.total, progress.dreamed, progress.left, about, progress.pace, note
    )


def _total_row(progresses, now):
    """The sums, and the pace of every input's dreams together: inputs dreamed side by side or one
    after another alike."""
    known = [p for p in progresses if p.total is not None]
    about = "~" if any(p.approximate for p in progresses) else ""
    left = sum(p.left for p in known)
    pace = seconds_per_frame([t for p in progresses for t in p.mtimes])
    activity = [p.last_activity for p in progresses if p.last_activity is not None]
    note = time_left_text(left, pace, max(activity, default=None), now)
    row = _row(
        "total",
        sum(p.total for p in known),
        sum(p.dreamed for p in progresses),
        left,
        about,
        pace,
        note,
    )
    if len(known) < len(progresses):  # frames of inputs not probed yet come on top
        row[2] += "+?"
        row[6] += "+?"
        row[8] = "no estimate yet" if left == 0 else f"{note}, more for the inputs not probed yet"
    return row


def report_lines(progresses, now=None):
    """One aligned line per input and a total line."""
    now = time.time() if now is None else now
    rows = [_input_row(progress, now) for progress in progresses]
    rows.append(_total_row(progresses, now))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in (2, 4, 6, 7) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def load_plan(configfile):
    """The Plan of the workflow in the current directory, read as the Snakefile reads it."""
    import yaml

    from .config import check_config_file
    from .plan import Plan

    if not os.path.isfile(configfile):
        raise DreamflowError(f"config file not found: {configfile}")
    check_config_file(configfile)
    try:
        with open(configfile) as handle:
            config = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError) as error:
        raise DreamflowError(f"{configfile}: cannot read: {error}") from None
    try:
        return Plan(config, cores=os.cpu_count() or 1)
    except DreamflowError as error:
        raise DreamflowError(f"{configfile}: {error}") from None


def status_lines(configfile):
    plan = load_plan(configfile)
    return report_lines([input_progress(input_plan) for input_plan in plan])
