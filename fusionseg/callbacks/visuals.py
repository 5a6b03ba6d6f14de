"""Pictures of a run on a fixed set of validation images, and the custom-scalars layout.

At the start of training and after every validation, on the first `num_images` validation images:

- image `visuals/predictions`: a titled grid, one row per image: image | ground truth | prediction,
  in class colours with a legend of the classes shown, borders between classes in white;
- images `visuals/pca/<master|aux|fused>`: a titled grid, one row per image: the image, then the PCA
  colour map of the features at every stride (the aux's injection stride marked on `fused`);
- scalars SC and EF per stride of the master's, the aux's and the fused features, the mean over these
  images, so they can be followed during training. In TensorBoard each role is a run of its own
  (`<version>/master`, `<version>/aux`, `<version>/fused`) with tags `features/<sc|ef>/os<s>`, so one
  chart per metric and stride draws the three as differently coloured, named lines; other loggers get
  `features/<sc|ef>/<role>/os<s>`. Strides whose maps are smaller than `MIN_MAP_SIDE` on these images
  are not measured (a value there would mislead) and the layout's chart title says so.

Pictures reach every logger (`fusionseg.callbacks.tensorboard.log_image`: TensorBoard, else files);
the custom-scalars layout is TensorBoard's. Only global rank 0 draws; the module runs outside the DDP
wrapper, without collectives.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from typing_extensions import override

from fusionseg.callbacks.overlay import Palette, display_colors, overlay, prediction_maps, resize_image, target_semantic
from fusionseg.callbacks.tensorboard import (
    custom_scalars_layout,
    feature_run_tag,
    feature_tag,
    flush,
    log_image,
    tensorboard_writer,
)
from fusionseg.evaluation import HEADLINE_METRIC
from fusionseg.evaluation.table import SUMMARY_COLUMNS
from fusionseg.grids import titled_grid
from fusionseg.profiling import MIN_MAP_SIDE, per_image_metrics
from fusionseg.structures import IGNORE_INDEX, SegBatch
from fusionseg.visualize import pca_rgb

# Display height of one image row: TensorBoard shrinks pictures to cards about 350 px wide, so the grids
# stay near that width (3 columns of predictions, 5 of PCA maps) for their text to stay legible.
PREDICTION_ROW_HEIGHT = 128
PCA_ROW_HEIGHT = 96
PCA_NOTE = "PCA: the features' first three principal components as RGB (similar colour = similar features)."


def _uint8(image: Tensor) -> Tensor:
    return (image.float().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu()


def unmeasured_strides(strides: list[int], image_sizes: list[tuple[int, int]], min_side: int = MIN_MAP_SIDE
                       ) -> dict[int, str]:
    """Strides whose feature maps are shorter than `min_side` on the smallest image, with the reason."""
    short = min(min(int(h), int(w)) for h, w in image_sizes)
    return {s: f"maps {-(-short // s)} px < {min_side} px" for s in strides if -(-short // s) < min_side}


class TensorBoardVisuals(Callback):
    """Predictions, feature PCA maps and fused-feature SC/EF on fixed validation images, in TensorBoard.

    Args:
        num_images: how many validation images (the first ones of the validation set).
        predictions / pca_maps / feature_metrics: which of the three to log.
        alpha: opacity of the class colours over the image.
        palette: class colours (`auto`: the dataset's, unless its images are drawn in them, as the
            synthetic demo's are; see `fusionseg.callbacks.overlay.display_colors`).
    """

    def __init__(self, num_images: int = 4, predictions: bool = True, pca_maps: bool = True,
                 feature_metrics: bool = True, alpha: float = 0.6, palette: Palette = "auto") -> None:
        if num_images < 1:
            raise ValueError(f"num_images={num_images} must be >= 1")
        self.num_images = num_images
        self.predictions, self.pca_maps, self.feature_metrics = predictions, pca_maps, feature_metrics
        self.alpha = alpha
        self.palette = palette
        self._batch: SegBatch | None = None
        self._unmeasured: dict[int, str] = {}
        self._role_writers: dict[str, SummaryWriter] = {}

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or not trainer.loggers:
            return
        source = trainer.datamodule if trainer.datamodule is not None else pl_module
        loader = source.val_dataloader()
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        dataset = loader.dataset
        count = min(self.num_images, len(dataset))
        if count == 0:
            raise ValueError("TensorBoardVisuals: the validation set is empty")
        self._batch = loader.collate_fn([dataset[i] for i in range(count)])
        strides = sorted(pl_module.master.pyramid)
        self._unmeasured = unmeasured_strides(strides, self._batch.image_sizes)
        writer = tensorboard_writer(trainer)
        if writer is not None:
            task = getattr(pl_module, "task", "")
            layout = custom_scalars_layout(tuple(strides), HEADLINE_METRIC.get(task), self._unmeasured,
                                           validation=SUMMARY_COLUMNS.get(task))
            writer.add_custom_scalars(layout)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._log(trainer, pl_module)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for writer in self._role_writers.values():
            writer.close()
        self._role_writers = {}

    @torch.no_grad()
    def _log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or self._batch is None or pl_module.needs_plan:
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
            self._log_predictions(trainer, pl_module, batch, preds, step)
        if self.pca_maps:
            for role, feats in pyramids.items():
                self._log_pca(trainer, pl_module, role, feats, batch, step)
        if self.feature_metrics:  # the aux too: it may be fine-tuned (freeze_aux=false), and a line reads better
            for role, feats in pyramids.items():
                self._log_feature_metrics(trainer, role, feats, images, batch, step)
        flush(trainer)
        for writer in self._role_writers.values():
            writer.flush()

    def _log_predictions(self, trainer: Trainer, pl_module: LightningModule, batch: SegBatch, preds: list,
                         step: int) -> None:
        info = getattr(trainer.datamodule, "info", None)
        colors = display_colors(pl_module.num_classes, info, self.palette)
        names = list(pl_module.class_names or [f"class {i}" for i in range(pl_module.num_classes)])
        rows, shown = [], set()
        for i, pred in enumerate(preds):
            h, w = batch.image_sizes[i]
            size = tuple(batch.orig_sizes[i])
            image = resize_image(batch.images[i, :, :h, :w].cpu(), size)
            maps = prediction_maps(pred)
            truth_map = target_semantic(batch.targets[i], size)
            shown |= set(truth_map.unique().tolist()) | set(maps.semantic.unique().tolist())
            truth = overlay(image, truth_map, colors, self.alpha, class_outlines=True)
            guess = overlay(image, maps.semantic, colors, self.alpha, maps.segments, class_outlines=True)
            rows.append([_uint8(image), truth, guess])
        legend = [(names[k], tuple(colors[k].tolist())) for k in sorted(shown) if 0 <= k < len(names)]
        notes = "White lines: borders between classes (or segments)."
        if IGNORE_INDEX in shown:
            notes += " No colour: unlabelled, or nothing predicted."
        grid = titled_grid(rows, ["image", "ground truth", "prediction"], row_height=PREDICTION_ROW_HEIGHT,
                           title=f"Validation images at step {step}: class colours over the image",
                           legend_entries=legend, notes=notes)
        log_image(trainer, "visuals/predictions", grid, step)

    def _log_pca(self, trainer: Trainer, pl_module: LightningModule, role: str, feats: dict[int, Tensor],
                 batch: SegBatch, step: int) -> None:
        rows = []
        for i, (h, w) in enumerate(batch.image_sizes):
            row = [_uint8(batch.images[i, :, :h, :w])]
            for stride, feat in sorted(feats.items()):
                crop = feat[i : i + 1, :, : -(-h // stride), : -(-w // stride)].float()
                row.append((torch.from_numpy(pca_rgb(crop)[0]) * 255).round().to(torch.uint8))
            rows.append(row)
        h, w = batch.image_sizes[0]
        injected = set(pl_module.plan.strides) if pl_module.plan is not None and role == "fused" else set()
        titles = ["image"] + [f"OS {s}\n{-(-h // s)}x{-(-w // s)}" + ("\naux in" if s in injected else "")
                              for s in sorted(feats)]
        encoder = {"master": pl_module.master_spec, "aux": pl_module.aux_spec}.get(role)
        what = f"{role} ({encoder.name})" if encoder is not None else "fused (master with the aux injected)"
        grid = titled_grid(rows, titles, title=f"{what} features at step {step}", notes=PCA_NOTE,
                           row_height=PCA_ROW_HEIGHT)
        log_image(trainer, f"visuals/pca/{role}", grid, step)

    def _log_feature_metrics(self, trainer: Trainer, role: str, feats: dict[int, Tensor], images: Tensor,
                             batch: SegBatch, step: int) -> None:
        measured = {s: f for s, f in feats.items() if s not in self._unmeasured}
        values = per_image_metrics(measured, images, batch.image_sizes, seed=0, extras=False)  # SC/EF only
        means = {(metric, stride): float(np.mean(metrics[metric].cpu().numpy()))
                 for stride, metrics in values.items() for metric in ("sc", "ef")}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # the role is the run: one coloured, named line per role
                writer = self._role_writer(logger, role)
                for (metric, stride), value in means.items():
                    writer.add_scalar(feature_run_tag(metric, stride), value, step)
            else:
                logger.log_metrics({feature_tag(m, role, s): v for (m, s), v in means.items()}, step)

    def _role_writer(self, logger: TensorBoardLogger, role: str) -> SummaryWriter:
        """The writer of the run `<version>/<role>` beside the logger's own."""
        if role not in self._role_writers:
            self._role_writers[role] = SummaryWriter(os.path.join(logger.log_dir, role))
        return self._role_writers[role]
