"""Tiny Synscapes and UrbanSyn datasets in their official layouts (real PNG / JSON files), written by tests.

The geometry is `dataset_writers`' (TOP stuff, LEFT and MIDDLE two instances of one thing class, RIGHT a
third region), with `FRAMES` numbered frames; the labels are those of `write_tiny_cityscapes`, written in
each dataset's own encoding:

    TOP = road, LEFT = car (instance 1), MIDDLE = car (instance 2), RIGHT = person (instance 3)

Usage: `from crossdata_writers import write_tiny_synscapes; root = write_tiny_synscapes(tmp_path)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dataset_writers import LEFT, MIDDLE, RIGHT, SIZE, TOP, _write_image, _write_png
from PIL import Image

FRAMES = (1, 2, 3)
# Cityscapes ids of the regions: (label id, train id)
ROAD, CAR, PERSON = (7, 0), (26, 13), (24, 11)


def _write_rgb_png(path: Path, ids: np.ndarray, alpha: bool = False) -> None:
    """Instance ids as an RGB(A) PNG, id = R + 256 G + 65536 B."""
    channels = [ids % 256, ids // 256 % 256, ids // 65536]
    if alpha:
        channels.append(np.full(ids.shape, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8)).save(path)


def _instance_ids() -> np.ndarray:
    """0 outside the instances; 3 instances with ids spread over the three channels."""
    ids = np.zeros(SIZE, dtype=np.int64)
    ids[LEFT], ids[MIDDLE], ids[RIGHT] = 1, 70000, 300  # 70000 has B = 1, 300 has G = 1
    return ids


def write_tiny_synscapes(root: str | Path, alpha: bool = True) -> Path:
    """img/rgb, img/class (label ids), img/instance (RGBA ids) and meta/<n>.json for frames 1..3.

    meta lists the three instances (car, car, person) and a fourth, 9, of class 28 (bus) that is not drawn
    (fully occluded) and a fifth, 500, of class 29 (caravan, not evaluated in Cityscapes).
    """
    root = Path(root)
    for n in FRAMES:
        _write_image(root / "img" / "rgb" / f"{n}.png", seed=n)
        label = np.zeros(SIZE, dtype=np.uint8)
        label[TOP], label[LEFT], label[MIDDLE], label[RIGHT] = ROAD[0], CAR[0], CAR[0], PERSON[0]
        _write_png(root / "img" / "class" / f"{n}.png", label)
        ids = _instance_ids()
        ids[0, :4] = 500  # a caravan, which Cityscapes does not evaluate
        _write_rgb_png(root / "img" / "instance" / f"{n}.png", ids, alpha=alpha)
        meta = {
            "camera": {"intrinsic": {"resx": SIZE[1], "resy": SIZE[0]}},
            "instance": {
                "class": {"1": CAR[0], "70000": CAR[0], "300": PERSON[0], "9": 28, "500": 29},
                "occluded": {"1": 0.0, "70000": 0.1, "300": 0.0, "9": 1.0, "500": 0.0},
            },
            "scene": {"num_cars": 2},
        }
        (root / "meta").mkdir(parents=True, exist_ok=True)
        (root / "meta" / f"{n}.json").write_text(json.dumps(meta))
    return root


def write_tiny_urbansyn(root: str | Path, rgb_panoptic: bool = True) -> Path:
    """rgb/rgb_<n>.png, ss/ss_<n>.png (train ids, 255 unlabeled), ss_color/ and panoptic/panoptic_<n>.png
    for frames 0001..0003. The panoptic PNG is RGB with one colour per instance (black elsewhere), or a
    16-bit single-channel PNG when `rgb_panoptic` is False. In `ss`, a corner of LEFT is labeled road: the
    instance's class is the majority (car). A stray pixel at row 0 of RIGHT is unlabeled (255)."""
    root = Path(root)
    for n in FRAMES:
        stem = f"{n:04d}"
        _write_image(root / "rgb" / f"rgb_{stem}.png", seed=n)
        ss = np.full(SIZE, 255, dtype=np.uint8)
        ss[TOP], ss[LEFT], ss[MIDDLE], ss[RIGHT] = ROAD[1], CAR[1], CAR[1], PERSON[1]
        ss[12:14, 0:3] = ROAD[1]  # a minority of LEFT's pixels
        ss[12, 31] = 255
        _write_png(root / "ss" / f"ss_{stem}.png", ss)
        _write_image(root / "ss_color" / f"ss_color_{stem}.png", seed=100 + n)  # not read
        ids = _instance_ids()
        if rgb_panoptic:
            _write_rgb_png(root / "panoptic" / f"panoptic_{stem}.png", ids)
        else:
            _write_png(root / "panoptic" / f"panoptic_{stem}.png", (ids % 65000).astype(np.uint16))
    return root
