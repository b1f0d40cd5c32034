"""Contact sheets: several dreams side by side, each labelled with its layers (and time)."""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 18
GAP = 4
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def contact_sheet(images, labels, columns=3):
    """Lay out uint8 (H, W, 3) arrays on a grid, a label under each; returns a uint8 array."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    font = ImageFont.load_default()
    cell_height = max(image.shape[0] for image in images)
    # a cell is as wide as its label too: small frames would have theirs run into the next one
    label_width = max(math.ceil(font.getlength(label)) + 4 for label in labels)
    cell_width = max(label_width, *(image.shape[1] for image in images))
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    sheet = Image.new(
        "RGB",
        (GAP + columns * (cell_width + GAP), GAP + rows * (cell_height + LABEL_HEIGHT + GAP)),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        row, column = divmod(index, columns)
        left = GAP + column * (cell_width + GAP)
        top = GAP + row * (cell_height + LABEL_HEIGHT + GAP)
        sheet.paste(Image.fromarray(image), (left, top))
        draw.text((left + 2, top + cell_height + 3), label, fill=TEXT, font=font)
    return np.asarray(sheet)
