"""Cityscapes labels: label ids as stored in `*_labelIds.png`, their train ids and the thing classes.

The table of cityscapesScripts' `helpers/labels.py` (ids 0..33; `license plate` (-1) never appears
in the PNGs). Training and evaluation use the 19 train ids; the 8 classes with instances that are
evaluated (person .. bicycle) are the things.
"""

from __future__ import annotations

import numpy as np

from fusionseg.structures import IGNORE_INDEX, DatasetInfo

# (name, label id, train id, has instances, colour)
CITYSCAPES_LABELS: tuple[tuple[str, int, int, bool, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, False, (0, 0, 0)),
    ("ego vehicle", 1, 255, False, (0, 0, 0)),
    ("rectification border", 2, 255, False, (0, 0, 0)),
    ("out of roi", 3, 255, False, (0, 0, 0)),
    ("static", 4, 255, False, (0, 0, 0)),
    ("dynamic", 5, 255, False, (111, 74, 0)),
    ("ground", 6, 255, False, (81, 0, 81)),
    ("road", 7, 0, False, (128, 64, 128)),
    ("sidewalk", 8, 1, False, (244, 35, 232)),
    ("parking", 9, 255, False, (250, 170, 160)),
    ("rail track", 10, 255, False, (230, 150, 140)),
    ("building", 11, 2, False, (70, 70, 70)),
    ("wall", 12, 3, False, (102, 102, 156)),
    ("fence", 13, 4, False, (190, 153, 153)),
    ("guard rail", 14, 255, False, (180, 165, 180)),
    ("bridge", 15, 255, False, (150, 100, 100)),
    ("tunnel", 16, 255, False, (150, 120, 90)),
    ("pole", 17, 5, False, (153, 153, 153)),
    ("polegroup", 18, 255, False, (153, 153, 153)),
    ("traffic light", 19, 6, False, (250, 170, 30)),
    ("traffic sign", 20, 7, False, (220, 220, 0)),
    ("vegetation", 21, 8, False, (107, 142, 35)),
    ("terrain", 22, 9, False, (152, 251, 152)),
    ("sky", 23, 10, False, (70, 130, 180)),
    ("person", 24, 11, True, (220, 20, 60)),
    ("rider", 25, 12, True, (255, 0, 0)),
    ("car", 26, 13, True, (0, 0, 142)),
    ("truck", 27, 14, True, (0, 0, 70)),
    ("bus", 28, 15, True, (0, 60, 100)),
    ("caravan", 29, 255, True, (0, 0, 90)),
    ("trailer", 30, 255, True, (0, 0, 110)),
    ("train", 31, 16, True, (0, 80, 100)),
    ("motorcycle", 32, 17, True, (0, 0, 230)),
    ("bicycle", 33, 18, True, (119, 11, 32)),
)
MAX_LABEL_ID = 33
TRAIN_LABELS = sorted((row for row in CITYSCAPES_LABELS if row[2] != 255), key=lambda r: r[2])
THING_LABEL_IDS: tuple[int, ...] = tuple(r[1] for r in TRAIN_LABELS if r[3])  # person .. bicycle


def label_id_to_train_id() -> np.ndarray:
    """Lookup table (256,) uint8: label id -> train id, `IGNORE_INDEX` for ignored ids."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for _, label_id, train_id, _, _ in CITYSCAPES_LABELS:
        lut[label_id] = train_id
    return lut


def label_id_to_instance_class() -> dict[int, int]:
    """Label id -> contiguous id among the 8 thing classes (the instance task's classes)."""
    return {label_id: i for i, label_id in enumerate(THING_LABEL_IDS)}


def cityscapes_info(task: str) -> DatasetInfo:
    """19 train-id classes (things flagged) for semantic/panoptic; the 8 thing classes for instance."""
    rows = [r for r in TRAIN_LABELS if r[3]] if task == "instance" else TRAIN_LABELS
    return DatasetInfo(
        name="cityscapes",
        class_names=tuple(r[0] for r in rows),
        thing_classes=tuple(r[3] for r in rows),
        colors=tuple(r[4] for r in rows),
    )
