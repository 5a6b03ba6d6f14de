"""Reading images, label PNGs and JSON files; a failure names the file that caused it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from fusionseg.data.errors import CorruptFileError, LabelRangeError


def read_image(path: str | Path) -> Tensor:
    """An RGB image as a `(3, H, W)` uint8 tensor, upright (EXIF orientation applied, as annotation tools show it)."""
    try:
        with Image.open(path) as im:
            array = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise CorruptFileError(path, f"{type(err).__name__}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_label(path: str | Path, rgb: bool = False) -> np.ndarray:
    """A label PNG as stored: `(H, W)` integers (8- or 16-bit), or `(H, W, 3)` uint8 when `rgb`."""
    try:
        with Image.open(path) as im:
            im.load()
            if rgb:
                array = np.asarray(im.convert("RGB"))
            elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(im).astype(np.int32)
            elif im.mode in ("L", "P"):
                array = np.asarray(im)
            else:
                raise ValueError(f"expected a single-channel label image, got mode {im.mode!r}")
    except (OSError, ValueError, SyntaxError) as err:
        raise CorruptFileError(path, f"{type(err).__name__}: {err}") from err
    return array


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours to segment ids: `R + 256 * G + 256**2 * B`."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def read_json(path: str | Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CorruptFileError(path, f"{type(err).__name__}: {err}") from err


def check_label_range(label: np.ndarray, max_value: int, path: str | Path, allowed: tuple[int, ...] = ()) -> None:
    """Fail with the file and the offending values if `label` holds values above `max_value`."""
    if label.size and int(label.max()) > max_value:
        values = np.unique(label[label > max_value])
        values = [v for v in values.tolist() if v not in allowed]
        if values:
            allowed_text = "".join(f", {a}" for a in allowed)
            raise LabelRangeError(path, values, f"0..{max_value}{allowed_text}")
