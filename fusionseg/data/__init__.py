"""Datasets in their official layouts, the procedural `synthetic` set, transforms and `SegDataModule`.

The names below are imported on first use, so that `fusionseg.data.io` or `fusionseg.data.labels` can be
used without loading Lightning (which `SegDataModule` needs).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ADE20KDataset": "fusionseg.data.ade20k",
    "COCODataset": "fusionseg.data.coco",
    "CityscapesDataset": "fusionseg.data.cityscapes",
    "CollatedBatch": "fusionseg.data.collate",
    "CorruptFileError": "fusionseg.data.errors",
    "DatasetLayoutError": "fusionseg.data.errors",
    "EvalTransform": "fusionseg.data.transforms",
    "KITTI360Dataset": "fusionseg.data.kitti360",
    "LabelRangeError": "fusionseg.data.errors",
    "LabelSpaceError": "fusionseg.data.crossdata",
    "READERS": "fusionseg.data.datamodule",
    "ReportingDataLoader": "fusionseg.data.collate",
    "SegCollate": "fusionseg.data.collate",
    "SegDataModule": "fusionseg.data.datamodule",
    "SegDataset": "fusionseg.data.base",
    "SegItem": "fusionseg.data.base",
    "SynscapesDataset": "fusionseg.data.synscapes",
    "SyntheticDataset": "fusionseg.data.synthetic",
    "TrainTransform": "fusionseg.data.transforms",
    "UrbanSynDataset": "fusionseg.data.urbansyn",
    "dataset_info": "fusionseg.data.datamodule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fusionseg.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
