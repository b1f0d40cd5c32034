"""Names that say how an image was made: labels for objective terms and parameter-encoding file
names."""

import re


def term_label(term):
    """'block10', 'block10:97', 'block10:97x0.5' for a string or {layer, channel, weight} term."""
    if isinstance(term, str):
        return term
    label = term["layer"] + (f":{term['channel']}" if term.get("channel") is not None else "")
    weight = term.get("weight", 1.0)
    return label if weight == 1.0 else f"{label}x{weight:g}"


def terms_label(terms):
    """A readable label for one term or a list of terms: 'block8+block10:3'."""
    if isinstance(terms, (str, dict)):
        terms = [terms]
    return "+".join(term_label(term) for term in terms)


def safe(text):
    """`text` reduced to characters that are safe in a file name on every system."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


def dream_filename(stem, dream_settings, suffix=".png"):
    """e.g. cat_efficientnet_lite0_block10_o3x1.4_i10_s1.5_j32_seed0.png: the settings, readable."""
    d = dream_settings
    parts = [
        stem,
        d["model"],
        terms_label(d["layers"]),
        f"o{d['octaves']}x{d['octave_scale']:g}",
        f"i{d['iterations']}",
        f"s{d['step_size']:g}",
        f"j{d['jitter']}",
        f"seed{d['seed']}",
    ]
    if d.get("start") == "noise":
        parts.append("noise")
    if d.get("guide"):
        parts.append("guide-" + re.sub(r"\.[^.]*$", "", d["guide"].split("/")[-1]))
    if d.get("precision", "float32") != "float32":
        parts.append(d["precision"])
    if d.get("tile_size"):
        parts.append(f"tile{d['tile_size']}")
    return safe("_".join(parts)) + suffix
