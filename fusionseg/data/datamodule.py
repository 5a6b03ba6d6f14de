"""`SegDataModule`: one LightningDataModule for every dataset and task, configured by typed arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule

from fusionseg.data.ade20k import ADE20KDataset
from fusionseg.data.base import SegDataset, Transform
from fusionseg.data.cityscapes import CityscapesDataset
from fusionseg.data.coco import COCODataset
from fusionseg.data.collate import ReportingDataLoader, SegCollate
from fusionseg.data.crossdata import check_same_label_space
from fusionseg.data.folder import ImageFolderDataset
from fusionseg.data.kitti360 import KITTI360Dataset
from fusionseg.data.labels.ade20k import ade20k_info
from fusionseg.data.labels.cityscapes import cityscapes_info
from fusionseg.data.labels.cityscapes_synthetic import synscapes_info, urbansyn_info
from fusionseg.data.labels.coco import coco_info
from fusionseg.data.labels.kitti360 import kitti360_info
from fusionseg.data.resumable import ResumableReportingDataLoader
from fusionseg.data.synscapes import SynscapesDataset
from fusionseg.data.synthetic import SyntheticDataset, synthetic_info
from fusionseg.data.transforms import EvalTransform, TrainTransform
from fusionseg.data.urbansyn import UrbanSynDataset
from fusionseg.structures import DatasetInfo

DatasetName = Literal["synthetic", "ade20k", "cityscapes", "coco", "kitti360", "synscapes", "urbansyn"]
TaskName = Literal["semantic", "instance", "panoptic"]

READERS: dict[str, type[SegDataset]] = {
    "ade20k": ADE20KDataset,
    "cityscapes": CityscapesDataset,
    "coco": COCODataset,
    "kitti360": KITTI360Dataset,
    "synscapes": SynscapesDataset,
    "synthetic": SyntheticDataset,
    "urbansyn": UrbanSynDataset,
}
_INFO = {
    "ade20k": ade20k_info,
    "cityscapes": cityscapes_info,
    "coco": coco_info,
    "kitti360": kitti360_info,
    "synscapes": synscapes_info,
    "synthetic": synthetic_info,
    "urbansyn": urbansyn_info,
}


def dataset_info(dataset: str, task: str) -> DatasetInfo:
    """Class names, thing flags and colours of `dataset` for `task`, without touching the disk."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(READERS)}")
    if task not in READERS[dataset].tasks:
        raise ValueError(f"dataset {dataset!r} supports tasks {READERS[dataset].tasks}, not {task!r}")
    return _INFO[dataset](task)


# The least value of each numeric argument (None: not given); TrainTransform checks crop_size and scale_range.
_MINIMUM = {"batch_size": 1, "eval_batch_size": 1, "num_workers": 0, "color_jitter": 0, "eval_short_side": 1,
            "eval_max_size": 1, "scale_base": 1, "scale_step": 1e-9, "max_size": 1, "synthetic_train_images": 1,
            "synthetic_val_images": 1, "synthetic_image_size": 16}


def check_numbers(args: Mapping[str, Any]) -> None:
    """A ValueError naming every `--data.<key>` below its least value, before any work starts."""
    bad = [f"--data.{k} {args[k]!r} (must be >= {least})" for k, least in _MINIMUM.items()
           if args.get(k) is not None and not args[k] >= least]
    if bad:
        raise ValueError("SegDataModule: invalid value(s): " + "; ".join(bad))


class SegDataModule(LightningDataModule):
    """Training and evaluation data for one task: one dataset, or a training and an evaluation dataset (`val_dataset`).

    Training (`TrainTransform`, Mask2Former's recipes): random resize (`resize: short_side`, the short side
    `scale * scale_base` with `scale` in `scale_range`, chosen every `scale_step` when set, long side at most
    `max_size`; or `resize: lsj`, large-scale jitter), a `crop_size` crop (an int: square; `[height, width]`),
    flip, colour augmentation (`color_aug`: `jitter`, `ssd` or `none`); batches padded to a multiple of 32,
    targets padded alike. Evaluation: the image optionally resized to `eval_short_side` with the long side at
    most `eval_max_size` (detectron2's test-time resize), targets at the original size. `info` (classes,
    thing ids) is available right after construction. `dataset="synthetic"` needs no files (`synthetic_*` options); the others read
    the official layout under `root`. `skip_corrupt=True` replaces unreadable files by the next readable
    item and logs how many and which at the end of each epoch. `predict_root`: predict on an image file, a
    folder of images or a glob instead of the test split. The training loader resumes mid-epoch from a
    checkpoint (see `resumable`).

    Cross-dataset: `val_dataset` / `val_root` name the dataset that validation, test and predict read (default:
    `dataset` / `root`), e.g. train on `synscapes` and evaluate on `cityscapes`. The two must have the same
    label space (`LabelSpaceError` otherwise); `info`, which the model receives, is the evaluation dataset's,
    so the evaluation follows its rules. `train_info` is the training dataset's.
    """

    def __init__(
        self,
        dataset: DatasetName = "synthetic",
        root: str | None = None,
        task: TaskName = "semantic",
        crop_size: int | tuple[int, int] = 512,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 4,
        scale_range: tuple[float, float] = (0.5, 2.0),
        color_jitter: float = 0.3,
        eval_short_side: int | None = None,
        resize: Literal["short_side", "lsj"] = "short_side",
        scale_base: int | None = None,
        scale_step: float | None = None,
        max_size: int | None = None,
        color_aug: Literal["none", "jitter", "ssd"] = "jitter",
        eval_max_size: int | None = None,
        skip_corrupt: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        synthetic_train_images: int = 512,
        synthetic_val_images: int = 64,
        synthetic_image_size: int = 256,
        synthetic_seed: int = 0,
        predict_root: str | None = None,
        val_dataset: DatasetName | None = None,
        val_root: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_numbers(self.hparams)
        self.train_info = dataset_info(dataset, task)
        self.val_dataset = val_dataset or dataset
        # Another dataset lives under another root; the same dataset defaults to the training root.
        self.val_root = val_root if val_root is not None or self.val_dataset != dataset else root
        self.info = dataset_info(self.val_dataset, task)
        check_same_label_space(self.train_info, self.info)
        self.dataset, self.root, self.task = dataset, root, task
        self.crop_size, self.batch_size, self.eval_batch_size = crop_size, batch_size, eval_batch_size
        self.num_workers, self.skip_corrupt = num_workers, skip_corrupt
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split or val_split
        self.train_transform = TrainTransform(
            crop_size, tuple(scale_range), color_jitter=color_jitter, resize=resize, scale_base=scale_base,
            scale_step=scale_step, max_size=max_size, color_aug=color_aug,
        )
        self.eval_transform = EvalTransform(eval_short_side, eval_max_size)
        self.train_set: SegDataset | None = None
        self.val_set: SegDataset | None = None
        self.test_set: SegDataset | None = None
        self.predict_set: SegDataset | None = None

    def build_dataset(
        self, split: str, transform: Transform | None, dataset: str | None = None, root: str | None = None
    ) -> SegDataset:
        """The reader of `dataset` (default: the training dataset, at `root`) for `split`, with `transform`
        (None: the image as read, in [0, 1])."""
        dataset, root = (self.dataset, self.root) if dataset is None else (dataset, root)
        if dataset == "synthetic":
            hp = self.hparams
            count = hp.synthetic_train_images if split == self.train_split else hp.synthetic_val_images
            return SyntheticDataset(
                count, hp.synthetic_image_size, hp.synthetic_seed, split=split, task=self.task, transform=transform
            )
        reader = READERS[dataset]
        return reader(root, split=split, task=self.task, transform=transform, skip_corrupt=self.skip_corrupt)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            self.train_set = self.build_dataset(self.train_split, self.train_transform)
        if stage in ("fit", "validate", None) and self.val_set is None:
            self.val_set = self.build_dataset(self.val_split, self.eval_transform, *self._eval_source)
        if stage == "predict" and self.hparams.predict_root is not None:
            if self.predict_set is None:
                self.predict_set = ImageFolderDataset(self.hparams.predict_root, self.info, self.eval_transform,
                                                      skip_corrupt=self.skip_corrupt)
        elif stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = self.build_dataset(self.test_split, self.eval_transform, *self._eval_source)

    @property
    def _eval_source(self) -> tuple[str, str | None]:
        """The dataset and root that validation, test and predict read."""
        if self.val_root is None and self.val_dataset not in (self.dataset, "synthetic"):
            raise ValueError(
                f"SegDataModule: val_dataset={self.val_dataset!r} differs from dataset={self.dataset!r}, so it "
                f"needs its own folder: pass val_root=PATH (data.val_root in a config)"
            )
        return self.val_dataset, self.val_root

    def _loader(self, dataset: SegDataset | None, stage: str, train: bool) -> ReportingDataLoader:
        if dataset is None:
            raise RuntimeError(f"SegDataModule: call setup() before asking for the {stage} dataloader")
        loader_class = ResumableReportingDataLoader if train else ReportingDataLoader
        return loader_class(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=SegCollate(pad_targets=train),
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            stage=stage,
        )

    def train_dataloader(self) -> ReportingDataLoader:
        return self._loader(self.train_set, "train", train=True)

    def val_dataloader(self) -> ReportingDataLoader:
        return self._loader(self.val_set, "validate", train=False)

    def test_dataloader(self) -> ReportingDataLoader:
        return self._loader(self.test_set, "test", train=False)

    def predict_dataloader(self) -> ReportingDataLoader:
        dataset = self.predict_set if self.predict_set is not None else self.test_set
        return self._loader(dataset, "predict", train=False)
