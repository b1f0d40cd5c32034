"""Layer sweeps: one image, or a video's frames at some times, dreamed once per item and laid out
on a labelled contact sheet.

`dreamflow sweep`, `dreamflow preview` and the workflow's sweep rules share the cell names, so all
write sweep/<cell>.png beside the sheet.
"""

from dataclasses import dataclass

from .naming import safe, terms_label


def item_terms(item):
    """One sweep item as a list of terms: a term, a list of terms, or 'a+b:3' from the command
    line."""
    if isinstance(item, str):
        return [term for term in item.split("+") if term]
    if isinstance(item, dict):
        return [item]
    return list(item)


def sweep_items(items):
    """{item name: terms}, numbered so that file names sort in the order given:
    '01-block8+block10-3'."""
    named = {}
    for index, item in enumerate(items, start=1):
        terms = item_terms(item)
        named[f"{index:02d}-{safe(terms_label(terms))}"] = terms
    return named


def item_dream_settings(dream_settings, terms):
    """The dream settings of one sweep item: its terms instead of the layers, and no schedule."""
    return {**dream_settings, "layers": terms, "layer_schedule": None}


def time_text(seconds):
    """A time as labels and file names show it: 10.0, 42.5."""
    return str(float(seconds))


@dataclass(frozen=True)
class Cell:
    """One image of a sweep: the item it dreams, at which time of a video (None for an image),
    and its label on the contact sheet."""

    item: str
    terms: list
    seconds: float | None
    label: str


def sweep_cells(layers, at=None):
    """{cell name: Cell} in the order of the contact sheet, whose names sort in that order. An
    image's cells are its items ('01-block8'); a video's are every item at every time, a row per
    time ('02-42.5s-01-block8', labelled 'block8 @ 42.5 s')."""
    items = sweep_items(layers)
    if at is None:
        return {item: Cell(item, terms, None, terms_label(terms)) for item, terms in items.items()}
    cells = {}
    for row, seconds in enumerate(at, start=1):
        time = time_text(seconds)
        for item, terms in items.items():
            label = f"{terms_label(terms)} @ {time} s"
            cells[f"{row:02d}-{time}s-{item}"] = Cell(item, terms, float(seconds), label)
    return cells


def sheet_columns(layers, at, columns):
    """Images per row of the sheet: a video's rows are its times, one column per item."""
    return len(layers) if at is not None else columns
