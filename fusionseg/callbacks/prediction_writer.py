"""`fusionseg predict`: every prediction written as a palette label PNG and a colour overlay."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor

from fusionseg.callbacks.overlay import (
    Palette,
    class_colors,
    display_colors,
    overlay,
    pil_palette,
    prediction_maps,
    resize_image,
)
from fusionseg.structures import IGNORE_INDEX, SegBatch, SegPrediction

VOID_16BIT = 65535


def save_label_png(path: Path, labels: Tensor, num_classes: int, colors: Tensor | None = None) -> None:
    """Class ids per pixel: 8-bit with 255 = void for up to 255 classes, else 16-bit with 65535 = void.

    With `colors` (8-bit only) the PNG is a palette image (PIL mode "P"): its pixel values are still the
    class ids (`np.asarray(Image.open(path))`), and image viewers show them in the class colours. Without,
    it is greyscale (mode "L"), which looks black for small ids.
    """
    array = labels.cpu().numpy()
    if num_classes < IGNORE_INDEX:
        picture = Image.fromarray(array.clip(0, 255).astype(np.uint8))  # 2-D uint8: mode "L"
        if colors is not None:
            picture = picture.convert("P")  # same values, now indices into the palette
            picture.putpalette(pil_palette(colors))
        picture.save(path)
    else:
        array = np.where(array == IGNORE_INDEX, VOID_16BIT, array)
        Image.fromarray(array.astype(np.uint16)).save(path)


class SegPredictionWriter(BasePredictionWriter):
    """Writes each predicted image under `output_dir` (default `<default_root_dir>/predictions`):

    - `labels/<id>.png`: class per pixel, a palette PNG in the dataset's class colours (8-bit, 255 =
      nothing predicted, black); `raw_ids=True` writes plain greyscale ids instead; 16-bit, 65535 =
      nothing, for 255 classes or more;
    - `overlays/<id>.png`: class colours blended over the image, class borders (or, for instance and
      panoptic predictions, segment outlines) in white. `palette="auto"` uses the dataset's colours
      unless its images are drawn in them (the synthetic demo), then distinct vivid ones;
    - instance and panoptic: `segments/<id>.png` (16-bit segment index, 0 = none) and `segments/<id>.json`
      (`[{id, label, score}]`, with `class_names`).

    Instance masks with a score below `score_threshold` are not drawn. `<id>` is the image id, e.g. the
    path under the predicted folder, so the output mirrors its layout. When predicting ends, rank 0
    prints where the files are.
    """

    def __init__(self, output_dir: str | None = None, alpha: float = 0.6, score_threshold: float = 0.5,
                 raw_ids: bool = False, palette: Palette = "auto") -> None:
        super().__init__(write_interval="batch")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1]")
        self.output_dir = output_dir
        self.alpha = alpha
        self.score_threshold = score_threshold
        self.raw_ids = raw_ids
        self.palette = palette
        self.written: list[Path] = []
        self.skipped: list[str] = []  # unreadable images (`--data.skip_corrupt true`), in order of appearance
        self._done: set[str] = set()
        self._colors: Tensor | None = None
        self._label_colors: Tensor | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        self.output_dir = self.output_dir or os.path.join(trainer.default_root_dir, "predictions")
        info = getattr(trainer.datamodule, "info", None)
        self._colors = display_colors(pl_module.num_classes, info, self.palette)
        self._label_colors = None if self.raw_ids else class_colors(pl_module.num_classes, info)
        self.written, self.skipped, self._done = [], [], set()

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Sequence[SegPrediction],
                           batch_indices: Sequence[int] | None, batch: SegBatch, batch_idx: int,
                           dataloader_idx: int) -> None:
        assert self._colors is not None and self.output_dir is not None
        root = Path(self.output_dir)
        names = getattr(pl_module, "class_names", None)
        self.skipped.extend(p for p in getattr(batch, "skipped", ()) if p not in self.skipped)
        for i, pred in enumerate(prediction):
            image_id = str(batch.image_ids[i])
            if image_id in self._done:
                continue  # an unreadable image's stand-in (skip_corrupt): written at its own place already
            self._done.add(image_id)
            h, w = batch.image_sizes[i]
            image = resize_image(batch.images[i, :, :h, :w].cpu(), tuple(batch.orig_sizes[i]))
            maps = prediction_maps(pred, self.score_threshold)
            self._save(root / "labels" / f"{image_id}.png",
                       lambda p: save_label_png(p, maps.semantic, pl_module.num_classes, self._label_colors))
            picture = overlay(image, maps.semantic, self._colors, self.alpha, maps.segments, class_outlines=True)
            self._save(root / "overlays" / f"{image_id}.png", lambda p: Image.fromarray(picture.numpy()).save(p))
            if maps.segments is not None:
                segs = maps.segments.numpy().astype(np.uint16)
                self._save(root / "segments" / f"{image_id}.png", lambda p: Image.fromarray(segs).save(p))
                info: list[dict[str, Any]] = [
                    {**s, "class_name": names[int(s["label"])]} if names else dict(s) for s in maps.segment_info
                ]
                self._save(root / "segments" / f"{image_id}.json", lambda p: p.write_text(json.dumps(info, indent=1)))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or self.output_dir is None:
            return
        parts = {Path(p).relative_to(self.output_dir).parts[0] for p in self.written}
        count = sum(Path(p).relative_to(self.output_dir).parts[0] == "overlays" for p in self.written)
        what = [f"labels/ ({'greyscale class ids' if self.raw_ids else 'class ids as palette PNGs'})",
                "overlays/ (class colours over the image)"]
        if "segments" in parts:
            what.append("segments/ (segment ids + JSON with class and score)")
        images = f"{count} images" if trainer.world_size == 1 else f"{count} images on this process of {trainer.world_size}"
        # The command's answer, on stdout like the results tables of validate/test.
        if self.skipped:
            what.append(f"skipped {len(self.skipped)} unreadable image(s): " + ", ".join(self.skipped[:10])
                        + (" ..." if len(self.skipped) > 10 else ""))
        print(f"\npredict: wrote {images} to {self.output_dir}\n  " + "\n  ".join(what), flush=True)

    def _save(self, path: Path, write: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        self.written.append(path)
