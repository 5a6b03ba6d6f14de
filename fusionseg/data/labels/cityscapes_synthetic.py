"""Label spaces of the synthetic street-scene datasets annotated in Cityscapes' convention.

Both datasets are read into Cityscapes' training classes (19 semantic train ids; the 8 thing classes for
instance segmentation), so a model trained on them is evaluated on Cityscapes without any remapping:

* Synscapes stores Cityscapes *label ids* (0..33) in `img/class/<n>.png` ("The class annotations follows the
  Cityscapes convention", synscapes.on.liu.se/features.html; 7dlabs/synscapes-utils
  `scripts/generate-rgb-segmentation-map.py` colours the PNG values with the 34 Cityscapes label colours), and
  the class of each instance as a label id in `meta/<n>.json` (`instance.class`; synscapes-utils uses ids 24,
  25, 26, 27, 28, 31, 32, 33 = person .. bicycle).
* UrbanSyn stores Cityscapes *train ids* (0..18) in `ss/ss_<n>.png` (its Hugging Face README: "grayscale (value =
  Class ID) ... We follow the 19 training classes defined on Cityscapes", a table of name, trainId, colour).
  Values outside 0..18 are read as unlabeled; the README's value for unlabeled pixels could not be read here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fusionseg.data.labels.cityscapes import TRAIN_LABELS, cityscapes_info, label_id_to_instance_class
from fusionseg.structures import IGNORE_INDEX, DatasetInfo

NUM_TRAIN_IDS = len(TRAIN_LABELS)  # 19
# Train id -> contiguous instance class (person .. bicycle = train ids 11..18 -> 0..7).
THING_TRAIN_IDS: tuple[int, ...] = tuple(r[2] for r in TRAIN_LABELS if r[3])


def synscapes_info(task: str) -> DatasetInfo:
    """Cityscapes' classes for `task` (19 train ids, or the 8 things for instance), named "synscapes"."""
    return dataclasses.replace(cityscapes_info(task), name="synscapes")


def urbansyn_info(task: str) -> DatasetInfo:
    """Cityscapes' classes for `task` (19 train ids, or the 8 things for instance), named "urbansyn"."""
    return dataclasses.replace(cityscapes_info(task), name="urbansyn")


def synscapes_instance_class() -> dict[int, int]:
    """Cityscapes label id (as in Synscapes' `meta/<n>.json`) -> instance class 0..7; others are not instances."""
    return label_id_to_instance_class()


def train_id_to_train_id() -> np.ndarray:
    """Lookup table (256,) uint8 for UrbanSyn's `ss` PNGs: 0..18 kept, everything else `IGNORE_INDEX`."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:NUM_TRAIN_IDS] = np.arange(NUM_TRAIN_IDS, dtype=np.uint8)
    return lut


def train_id_to_instance_class() -> dict[int, int]:
    """Cityscapes train id -> instance class 0..7 (person .. bicycle)."""
    return {train_id: i for i, train_id in enumerate(THING_TRAIN_IDS)}
