"""SegDataModule: info before setup, batches for training and evaluation, and life inside a Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from dataset_writers import SIZE, write_tiny_ade20k
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from fusionseg.data import CollatedBatch, ReportingDataLoader, SegDataModule
from fusionseg.structures import SegBatch


def small(**kwargs) -> SegDataModule:
    options = dict(crop_size=48, batch_size=3, num_workers=0, synthetic_train_images=5, synthetic_val_images=2,
                   synthetic_image_size=40)
    return SegDataModule(**{**options, **kwargs})


def test_info_is_ready_after_init_without_touching_the_disk() -> None:
    data = SegDataModule(dataset="coco", root="/does/not/exist", task="panoptic")
    assert data.info.num_classes == 133 and len(data.info.thing_ids) == 80
    assert data.info.class_names[0] == "person"
    assert SegDataModule(dataset="cityscapes", task="instance").info.num_classes == 8
    assert SegDataModule().info.name == "synthetic"


def test_unsupported_choices_are_refused_with_the_options() -> None:
    with pytest.raises(ValueError, match="supports tasks"):
        SegDataModule(dataset="kitti360", task="panoptic")
    with pytest.raises(ValueError, match="choose one of"):
        SegDataModule(dataset="imagenet")  # type: ignore[arg-type]


def test_training_batches_are_cropped_padded_and_aligned() -> None:
    data = small(task="panoptic")
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert [len(b.image_ids) for b in batches] == [3, 2]
    batch = batches[0]
    assert isinstance(batch, SegBatch) and batch.images.shape == (3, 3, 64, 64)  # 48 padded to 64
    assert batch.image_sizes == [(48, 48)] * 3 and batch.orig_sizes == [(40, 40)] * 3
    for target in batch.targets:
        assert target.masks.shape[-2:] == (64, 64) and not target.masks[:, 48:].any()
        assert target.labels.max() < data.info.num_classes


def test_evaluation_batches_keep_targets_at_the_original_size() -> None:
    data = small(task="semantic", eval_batch_size=2, eval_short_side=30)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (2, 3, 32, 32) and batch.image_sizes == [(30, 30)] * 2
    assert batch.orig_sizes == [(40, 40)] * 2 and all(t.masks.shape[-2:] == (40, 40) for t in batch.targets)


def test_official_layout_through_the_datamodule(tmp_path: Path) -> None:
    root = write_tiny_ade20k(tmp_path)
    data = SegDataModule("ade20k", str(root), task="panoptic", crop_size=32, batch_size=2, num_workers=0)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    assert batch.orig_sizes == [SIZE] and batch.image_ids == ["ADE_val_00000003"]


def test_loader_survives_lightnings_sampler_replacement() -> None:
    data = small()
    data.setup("fit")
    loader = data.train_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=True)
    replaced = _update_dataloader(loader, sampler)
    assert isinstance(replaced, ReportingDataLoader) and replaced.stage == "train"
    assert replaced.sampler is sampler and isinstance(next(iter(replaced)), CollatedBatch)


class _MeanModel(pl.LightningModule):
    """The smallest module that consumes SegBatches: it learns the mean pixel value."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, ...]] = []

    def training_step(self, batch: SegBatch, batch_idx: int) -> torch.Tensor:
        self.seen.append(tuple(batch.images.shape))
        assert len(batch.targets) == batch.images.shape[0]
        return (batch.images.mean() - self.mean) ** 2

    def validation_step(self, batch: SegBatch, batch_idx: int) -> None:
        assert batch.targets[0].masks.shape[-2:] == batch.orig_sizes[0]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_trainer_runs_on_the_datamodule() -> None:
    model = _MeanModel()
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=small(task="instance"))
    assert model.seen == [(3, 3, 64, 64), (2, 3, 64, 64)]
