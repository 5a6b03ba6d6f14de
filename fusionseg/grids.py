"""Pictures laid out to be read without a caption: grids with column titles, a title, notes and a colour legend.

Everything is drawn with PIL on a white background, so a grid reads the same in TensorBoard, in a
file viewer and on a code host. Cells are `(H, W, 3)` uint8 arrays (or tensors); each row is scaled
to `row_height` with nearest neighbours, which keeps label colours crisp.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
BACKGROUND: RGB = (255, 255, 255)
INK: RGB = (25, 25, 25)
MUTED: RGB = (90, 90, 90)


@lru_cache(maxsize=8)
def font(size: int = 14) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's bundled font at `size` px (a fixed small bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def text_size(text: str, size: int = 14) -> tuple[int, int]:
    """`(width, height)` in pixels of `text` (several lines allowed) in `font(size)`."""
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=font(size), spacing=2)
    return box[2] - box[0], box[3]


def as_uint8(picture: Any) -> np.ndarray:
    """An `(H, W, 3)` uint8 array from an array or tensor (`(H, W)` greyscale is repeated to RGB)."""
    array = np.asarray(picture.cpu() if hasattr(picture, "cpu") else picture)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return array


def fit_height(picture: Any, height: int) -> np.ndarray:
    """The picture `height` pixels high, aspect kept (nearest neighbours)."""
    array = as_uint8(picture)
    h, w = array.shape[:2]
    if h == height:
        return array
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(array).resize((width, height), Image.NEAREST))


def _wrap(entries: Sequence[tuple[str, RGB]], width: int, size: int) -> list[list[tuple[str, RGB, int]]]:
    lines: list[list[tuple[str, RGB, int]]] = [[]]
    used = 0
    for name, color in entries:
        w = size + 4 + text_size(name, size)[0] + 14  # swatch, gap, name, space to the next entry
        if lines[-1] and used + w > width:
            lines.append([])
            used = 0
        lines[-1].append((name, color, w))
        used += w
    return lines


def wrap_text(text: str, width: int, size: int) -> str:
    """`text` with line breaks added between words so no line is wider than `width` pixels."""
    lines = []
    for paragraph in text.splitlines():
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and text_size(candidate, size)[0] > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return "\n".join(lines)


def legend(entries: Sequence[tuple[str, RGB]], width: int, size: int = 13) -> np.ndarray:
    """Colour swatches with their names, wrapped into lines of at most `width` pixels: `(h, width, 3)` uint8."""
    lines = _wrap(entries, width, size) if entries else []
    line_height = size + 8
    canvas = Image.new("RGB", (width, max(1, line_height * len(lines))), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        x, y = 0, row * line_height + 3
        for name, color, w in line:
            draw.rectangle((x, y, x + size, y + size), fill=tuple(color), outline=INK)
            draw.text((x + size + 4, y - 1), name, fill=INK, font=font(size))
            x += w
    return np.asarray(canvas)


def titled_grid(
    rows: Sequence[Sequence[Any]],
    column_titles: Sequence[str] | None = None,
    title: str | None = None,
    notes: str | None = None,
    legend_entries: Sequence[tuple[str, RGB]] | None = None,
    row_height: int = 160,
    gap: int = 6,
    title_size: int | None = None,
    label_size: int | None = None,
) -> np.ndarray:
    """Pictures in rows (each scaled to `row_height`), column titles above, a title on top, then the
    colour legend and notes (wrapped to the width) below: `(H, W, 3)` uint8 on white.

    Column `j` is as wide as its widest cell; rows may have fewer cells than there are titles. Text
    sizes default to a fixed share of the grid's width, so they stay legible where a viewer shrinks the
    picture to fit (TensorBoard's image cards do).
    """
    if not rows or not any(rows):
        raise ValueError("titled_grid needs at least one row with a picture")
    cells = [[fit_height(c, row_height) for c in row] for row in rows]
    columns = max(len(row) for row in cells)
    col_width = [max(row[j].shape[1] for row in cells if j < len(row)) for j in range(columns)]
    label_size = label_size or max(14, round((sum(col_width) + gap * columns) / 30))
    title_size = title_size or label_size + 2
    if column_titles is not None:
        col_width = [max(w, text_size(t, label_size)[0] + 4) if j < len(column_titles) else w
                     for j, (w, t) in enumerate(zip(col_width, [*column_titles, *[""] * columns]))]
    width = sum(col_width) + gap * (columns + 1)
    if title:
        width = max(width, text_size(title, title_size)[0] + 2 * gap)
    title_h = text_size(title, title_size)[1] + gap if title else 0
    header_h = max(text_size(t, label_size)[1] for t in column_titles) + gap if column_titles else 0
    key = legend(legend_entries, width - 2 * gap, size=label_size) if legend_entries else None
    notes = wrap_text(notes, width - 2 * gap, label_size - 1) if notes else None
    notes_h = text_size(notes, label_size - 1)[1] + gap if notes else 0
    grid_h = len(cells) * (row_height + gap)
    height = gap + title_h + header_h + grid_h + (key.shape[0] + gap if key is not None else 0) + notes_h + gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = gap
    if title:
        draw.text((gap, y), title, fill=INK, font=font(title_size))
        y += title_h
    lefts = [gap + sum(col_width[:j]) + gap * j for j in range(columns)]
    if column_titles:
        for j, text in enumerate(column_titles[:columns]):
            w = text_size(text, label_size)[0]
            draw.multiline_text((lefts[j] + (col_width[j] - w) // 2, y), text, fill=INK, font=font(label_size),
                                spacing=2, align="center")
        y += header_h
    for row in cells:
        for j, cell in enumerate(row):
            canvas.paste(Image.fromarray(cell), (lefts[j] + (col_width[j] - cell.shape[1]) // 2, y))
        y += row_height + gap
    if key is not None:
        canvas.paste(Image.fromarray(key), (gap, y))
        y += key.shape[0] + gap
    if notes:
        draw.multiline_text((gap, y), notes, fill=MUTED, font=font(label_size - 1), spacing=2)
    return np.asarray(canvas)
