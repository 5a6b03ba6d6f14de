"""KITTI-360 2D labels: semantic ids as stored in the PNGs, train ids, and the instance classes.

From kitti360Scripts' `helpers/labels.py`. Instance PNGs store `semanticId * 1000 + instanceId`
(a value below 1000 is a region of that semantic id without instances). The official 2D instance
evaluation scores the labels with `hasInstances` and not `ignoreInInst`, except `bus` and `train`:
building, person, rider, car, truck, motorcycle, bicycle; garage instances count as building.
"""

from __future__ import annotations

import numpy as np

from fusionseg.structures import IGNORE_INDEX, DatasetInfo

# (name, semantic id, train id, has instances, ignore in instance evaluation, colour)
KITTI360_LABELS: tuple[tuple[str, int, int, bool, bool, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, False, True, (0, 0, 0)),
    ("ego vehicle", 1, 255, False, True, (0, 0, 0)),
    ("rectification border", 2, 255, False, True, (0, 0, 0)),
    ("out of roi", 3, 255, False, True, (0, 0, 0)),
    ("static", 4, 255, False, True, (0, 0, 0)),
    ("dynamic", 5, 255, False, True, (111, 74, 0)),
    ("ground", 6, 255, False, True, (81, 0, 81)),
    ("road", 7, 0, False, False, (128, 64, 128)),
    ("sidewalk", 8, 1, False, False, (244, 35, 232)),
    ("parking", 9, 255, False, True, (250, 170, 160)),
    ("rail track", 10, 255, False, True, (230, 150, 140)),
    ("building", 11, 2, True, False, (70, 70, 70)),
    ("wall", 12, 3, False, False, (102, 102, 156)),
    ("fence", 13, 4, False, False, (190, 153, 153)),
    ("guard rail", 14, 255, False, True, (180, 165, 180)),
    ("bridge", 15, 255, False, True, (150, 100, 100)),
    ("tunnel", 16, 255, False, True, (150, 120, 90)),
    ("pole", 17, 5, True, True, (153, 153, 153)),
    ("polegroup", 18, 255, False, True, (153, 153, 153)),
    ("traffic light", 19, 6, True, True, (250, 170, 30)),
    ("traffic sign", 20, 7, True, True, (220, 220, 0)),
    ("vegetation", 21, 8, False, False, (107, 142, 35)),
    ("terrain", 22, 9, False, False, (152, 251, 152)),
    ("sky", 23, 10, False, False, (70, 130, 180)),
    ("person", 24, 11, True, False, (220, 20, 60)),
    ("rider", 25, 12, True, False, (255, 0, 0)),
    ("car", 26, 13, True, False, (0, 0, 142)),
    ("truck", 27, 14, True, False, (0, 0, 70)),
    ("bus", 28, 15, True, False, (0, 60, 100)),
    ("caravan", 29, 255, True, True, (0, 0, 90)),
    ("trailer", 30, 255, True, True, (0, 0, 110)),
    ("train", 31, 16, True, False, (0, 80, 100)),
    ("motorcycle", 32, 17, True, False, (0, 0, 230)),
    ("bicycle", 33, 18, True, False, (119, 11, 32)),
    ("garage", 34, 2, True, True, (64, 128, 128)),
    ("gate", 35, 4, False, True, (190, 153, 153)),
    ("stop", 36, 255, True, True, (150, 120, 90)),
    ("smallpole", 37, 5, True, True, (153, 153, 153)),
    ("lamp", 38, 255, True, True, (0, 64, 64)),
    ("trash bin", 39, 255, True, True, (0, 128, 192)),
    ("vending machine", 40, 255, True, True, (128, 64, 0)),
    ("box", 41, 255, True, True, (64, 64, 128)),
    ("unknown construction", 42, 255, False, True, (102, 0, 0)),
    ("unknown vehicle", 43, 255, False, True, (51, 0, 51)),
    ("unknown object", 44, 255, False, True, (32, 32, 32)),
)
MAX_LABEL_ID = 44
INSTANCE_LABELS = tuple(r for r in KITTI360_LABELS if r[3] and not r[4] and r[0] not in ("bus", "train"))
# Train ids repeat (garage -> building, ...); each class takes the name of its first label.
SEMANTIC_LABELS = tuple(
    sorted({r[2]: r for r in reversed(KITTI360_LABELS) if r[2] != 255}.values(), key=lambda r: r[2])
)


def semantic_id_to_train_id() -> np.ndarray:
    """Lookup table (256,) uint8: semantic id -> train id (19 classes), `IGNORE_INDEX` otherwise."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for row in KITTI360_LABELS:
        lut[row[1]] = row[2]
    return lut


# The official evaluation (instances2dict.py) counts garage instances as building instances.
MERGED_INSTANCE_LABELS = {"garage": "building"}


def semantic_id_to_instance_class() -> dict[int, int]:
    """Semantic id -> contiguous id among the 7 evaluated instance classes (garage counted as building)."""
    mapping = {row[1]: i for i, row in enumerate(INSTANCE_LABELS)}
    by_name = {row[0]: row[1] for row in KITTI360_LABELS}
    for source, target in MERGED_INSTANCE_LABELS.items():
        mapping[by_name[source]] = mapping[by_name[target]]
    return mapping


def instance_void_ids() -> tuple[int, ...]:
    """Semantic ids whose pixels the official 2D instance evaluation treats as void (`ignoreInInst`), where an
    instance PNG stores them without an instance id (values below 1000)."""
    return tuple(row[1] for row in KITTI360_LABELS if row[4])


def kitti360_info(task: str) -> DatasetInfo:
    """19 train-id classes for semantic segmentation; the 7 evaluated instance classes for instance."""
    rows = INSTANCE_LABELS if task == "instance" else SEMANTIC_LABELS
    return DatasetInfo(
        name="kitti360",
        class_names=tuple(r[0] for r in rows),
        thing_classes=tuple(r[3] and not r[4] for r in rows),
        colors=tuple(r[5] for r in rows),
    )
