"""TensorBoard pictures of a run on a fixed set of validation images, and the custom-scalars layout.

At the start of training and after every validation, on the first `num_images` validation images:

- image `visuals/predictions`: one row per image: input | ground truth | prediction (class colours);
- images `visuals/pca/<master|aux|fused>`: one row per image: input, then the PCA colour map of the
  features at every stride;
- scalars `features/<sc|ef>/<master|fused>/os<s>` (and `aux` at the start: it is frozen), the mean over
  these images, so SC and EF of the fused pyramid can be followed during training.

At setup it writes the custom-scalars layout (`fusionseg.callbacks.tensorboard.custom_scalars_layout`).
Only global rank 0 draws; the module runs outside the DDP wrapper, without collectives.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from fusionseg.callbacks.overlay import class_colors, overlay, prediction_maps, resize_image, target_semantic
from fusionseg.callbacks.tensorboard import custom_scalars_layout, feature_tag, tensorboard_writer
from fusionseg.profiling import per_image_metrics
from fusionseg.structures import SegBatch
from fusionseg.visualize import pca_rgb

ROW_HEIGHT = 160  # display height of one image row in the grids


def _to_row_height(picture: Tensor, height: int = ROW_HEIGHT) -> Tensor:
    """`(H, W, 3)` uint8 -> the same picture `height` pixels high (nearest, keeps label colours crisp)."""
    h, w = picture.shape[:2]
    width = max(1, round(w * height / h))
    chw = picture.permute(2, 0, 1)[None].float()
    return F.interpolate(chw, size=(height, width), mode="nearest")[0].permute(1, 2, 0).to(torch.uint8)


def stack_rows(rows: list[list[Tensor]], gap: int = 4) -> np.ndarray:
    """Pictures side by side per row, rows one under the other, padded black: `(H, W, 3)` uint8."""
    lines = []
    for row in rows:
        cells = [_to_row_height(c) for c in row]
        spaced = [t for c in cells for t in (c, torch.zeros(ROW_HEIGHT, gap, 3, dtype=torch.uint8))][:-1]
        lines.append(torch.cat(spaced, dim=1))
    width = max(line.shape[1] for line in lines)
    padded = [F.pad(line, (0, 0, 0, width - line.shape[1])) for line in lines]
    spaced = [t for p in padded for t in (p, torch.zeros(gap, width, 3, dtype=torch.uint8))][:-1]
    return torch.cat(spaced, dim=0).numpy()


def _uint8(image: Tensor) -> Tensor:
    return (image.float().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu()


class TensorBoardVisuals(Callback):
    """Predictions, feature PCA maps and fused-feature SC/EF on fixed validation images, in TensorBoard.

    Args:
        num_images: how many validation images (the first ones of the validation set).
        predictions / pca_maps / feature_metrics: which of the three to log.
        alpha: opacity of the class colours over the image.
    """

    def __init__(self, num_images: int = 4, predictions: bool = True, pca_maps: bool = True,
                 feature_metrics: bool = True, alpha: float = 0.5) -> None:
        if num_images < 1:
            raise ValueError(f"num_images={num_images} must be >= 1")
        self.num_images = num_images
        self.predictions, self.pca_maps, self.feature_metrics = predictions, pca_maps, feature_metrics
        self.alpha = alpha
        self._batch: SegBatch | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        writer = tensorboard_writer(trainer)
        if stage != "fit" or writer is None:
            return
        strides = tuple(sorted(pl_module.master.pyramid))
        writer.add_custom_scalars(custom_scalars_layout(strides))
        source = trainer.datamodule if trainer.datamodule is not None else pl_module
        loader = source.val_dataloader()
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        dataset = loader.dataset
        count = min(self.num_images, len(dataset))
        if count == 0:
            raise ValueError("TensorBoardVisuals: the validation set is empty")
        self._batch = loader.collate_fn([dataset[i] for i in range(count)])

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(trainer, pl_module, with_aux=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._log(trainer, pl_module, with_aux=False)

    @torch.no_grad()
    def _log(self, trainer: Trainer, pl_module: LightningModule, with_aux: bool) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or self._batch is None or pl_module.pyramid is None:
            return
        step = trainer.global_step
        batch = self._batch
        images = batch.images.to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with trainer.precision_plugin.forward_context():
                parts = pl_module.pyramid.parts(images)
                preds = pl_module.predictions(replace(batch, images=images)) if self.predictions else None
        finally:
            pl_module.train(was_training)
        pyramids = {"master": parts.master, "fused": parts.fused}
        if parts.aux is not None:
            pyramids["aux"] = parts.aux
        if preds is not None:
            self._log_predictions(writer, pl_module, batch, preds, step)
        if self.pca_maps:
            for role, feats in pyramids.items():
                self._log_pca(writer, role, feats, batch, step)
        if self.feature_metrics:
            for role, feats in pyramids.items():
                if role != "aux" or with_aux:
                    self._log_feature_metrics(writer, role, feats, images, batch, step)
        writer.flush()

    def _log_predictions(self, writer: SummaryWriter, pl_module: LightningModule, batch: SegBatch,
                         preds: list, step: int) -> None:
        colors = class_colors(pl_module.num_classes, getattr(pl_module.trainer.datamodule, "info", None))
        rows = []
        for i, pred in enumerate(preds):
            h, w = batch.image_sizes[i]
            size = tuple(batch.orig_sizes[i])
            image = resize_image(batch.images[i, :, :h, :w].cpu(), size)
            maps = prediction_maps(pred)
            truth = overlay(image, target_semantic(batch.targets[i], size), colors, self.alpha)
            guess = overlay(image, maps.semantic, colors, self.alpha, maps.segments)
            rows.append([_uint8(image), truth, guess])
        writer.add_image("visuals/predictions", stack_rows(rows), step, dataformats="HWC")

    def _log_pca(self, writer: SummaryWriter, role: str, feats: dict[int, Tensor], batch: SegBatch, step: int
                 ) -> None:
        rows = []
        for i, (h, w) in enumerate(batch.image_sizes):
            row = [_uint8(batch.images[i, :, :h, :w])]
            for stride, feat in sorted(feats.items()):
                crop = feat[i : i + 1, :, : -(-h // stride), : -(-w // stride)].float()
                rgb = torch.from_numpy(pca_rgb(crop)[0])
                row.append((rgb * 255).round().to(torch.uint8))
            rows.append(row)
        writer.add_image(f"visuals/pca/{role}", stack_rows(rows), step, dataformats="HWC")

    def _log_feature_metrics(self, writer: SummaryWriter, role: str, feats: dict[int, Tensor], images: Tensor,
                             batch: SegBatch, step: int) -> None:
        values = per_image_metrics(feats, images, batch.image_sizes, seed=0)
        for stride, metrics in values.items():
            for metric in ("sc", "ef"):
                writer.add_scalar(feature_tag(metric, role, stride), float(metrics[metric].mean()), step)
