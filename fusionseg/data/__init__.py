"""Datasets in their official layouts, the procedural `synthetic` set, transforms and `SegDataModule`."""

from fusionseg.data.ade20k import ADE20KDataset
from fusionseg.data.base import SegDataset, SegItem
from fusionseg.data.cityscapes import CityscapesDataset
from fusionseg.data.coco import COCODataset
from fusionseg.data.collate import CollatedBatch, ReportingDataLoader, SegCollate
from fusionseg.data.datamodule import READERS, SegDataModule, dataset_info
from fusionseg.data.errors import CorruptFileError, DatasetLayoutError, LabelRangeError
from fusionseg.data.kitti360 import KITTI360Dataset
from fusionseg.data.synthetic import SyntheticDataset
from fusionseg.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "ADE20KDataset",
    "COCODataset",
    "CityscapesDataset",
    "CollatedBatch",
    "CorruptFileError",
    "DatasetLayoutError",
    "EvalTransform",
    "KITTI360Dataset",
    "LabelRangeError",
    "READERS",
    "ReportingDataLoader",
    "SegCollate",
    "SegDataModule",
    "SegDataset",
    "SegItem",
    "SyntheticDataset",
    "TrainTransform",
    "dataset_info",
]
