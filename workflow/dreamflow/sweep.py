"""Layer sweeps: one image dreamed once per item, laid out on a labelled contact sheet.

`dreamflow sweep` and the workflow's sweep rules share the item names, so both write
sweep/<item>.png beside <name>_sweep.png.
"""

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


def sheet_labels(named_items):
    return [terms_label(terms) for terms in named_items.values()]
