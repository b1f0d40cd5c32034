"""Layer schedules: which objective terms frame N dreams with (pure; no torch).

A schedule is None (every frame uses the default terms) or a mapping:
  {"mode": "cycle", "layers": [a, b, c]}          frame k uses item (k - 1) % n, as DeepDreamVideo's
                                                  customloop: a, b, c, a, b, c, ...
  {"mode": "segments", "every": N, "layers": [...]}  frames 1..N use item 0, N+1..2N item 1, ...,
                                                  cycling after the last item; every defaults to 1
Each item is one term ("inception4c", "block10:97", {layer: ..., ...}) or a list of terms dreamed
together.
"""

MODES = ("cycle", "segments")


def check(schedule):
    """Raise ValueError describing what is wrong with `schedule` (None is a valid schedule)."""
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        raise ValueError(f"a layer schedule is a mapping with mode and layers, not {schedule!r}")
    mode = schedule.get("mode")
    if mode not in MODES:
        raise ValueError(f"unknown layer schedule mode {mode!r}; modes: {', '.join(MODES)}")
    items = schedule.get("layers")
    if not isinstance(items, list) or not items:
        raise ValueError("layer schedule 'layers' must be a non-empty list")
    if any(isinstance(item, (list, tuple)) and not item for item in items):
        raise ValueError("layer schedule 'layers' has an empty list of terms")
    if mode == "segments":
        every = schedule.get("every", 1)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"layer schedule 'every' must be an integer of at least 1, not {every!r}"
            )


def _as_terms(item):
    return list(item) if isinstance(item, (list, tuple)) else [item]


def layers_for_frame(schedule, frame_number, default_terms):
    """The list of terms for 1-based `frame_number`."""
    check(schedule)
    if frame_number < 1:
        raise ValueError(f"frame numbers start at 1, not {frame_number}")
    if schedule is None:
        return list(default_terms)
    items = schedule["layers"]
    if schedule["mode"] == "cycle":
        index = (frame_number - 1) % len(items)
    else:
        index = (frame_number - 1) // schedule.get("every", 1) % len(items)
    return _as_terms(items[index])


def all_term_lists(schedule, default_terms):
    """Every term list the schedule can pick, so all can be checked before the first frame."""
    check(schedule)
    if schedule is None:
        return [list(default_terms)]
    return [_as_terms(item) for item in schedule["layers"]]
