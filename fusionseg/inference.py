"""One image in, a prediction and a picture out, from Python:

    from fusionseg.inference import Segmenter

    segmenter = Segmenter.from_checkpoint("runs/demo/checkpoints/best.ckpt")
    prediction, picture = segmenter.predict("photo.jpg")   # path, PIL image, HxWx3 array or 3xHxW tensor
    picture.save("photo_overlay.png")                     # class colours over the image
    prediction.semantic                                   # (H, W) class ids at the image's size

The image goes through the same steps as in `fusionseg predict` (evaluation resize, padding,
the module's post-processing); the dataset's class names and colours come from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fusionseg.callbacks.overlay import Palette, display_colors, overlay, prediction_maps
from fusionseg.data.base import SegItem
from fusionseg.data.collate import SegCollate
from fusionseg.data.io import read_image
from fusionseg.data.transforms import EvalTransform
from fusionseg.module import FusedSegModule
from fusionseg.structures import DatasetInfo, SegPrediction, SegTarget

ImageLike = str | Path | Image.Image | np.ndarray | Tensor


def as_image_tensor(image: ImageLike) -> Tensor:
    """`(3, H, W)` uint8 from a file path (EXIF orientation applied), a PIL image, an `(H, W, 3)` uint8
    array, or a `(3, H, W)` tensor (uint8, or float in `[0, 1]`)."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image array must be (H, W, 3), got shape {image.shape}")
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # a copy: PIL arrays are read-only
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be (3, H, W), got shape {tuple(image.shape)}")
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return image.to(torch.uint8)
    raise TypeError(f"predict takes a path, a PIL image, an array or a tensor, not {type(image).__name__}")


def _checkpoint_data(path: str | Path) -> dict[str, Any]:
    """The data module's hyperparameters stored in a checkpoint (dataset, task, eval size), if any."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return dict(checkpoint.get("datamodule_hyper_parameters") or {})


class Segmenter:
    """A trained model for single images: `predict(image) -> (SegPrediction, PIL picture)`.

    Args:
        module: a FusedSegModule with a plan (e.g. from `FusedSegModule.load_from_checkpoint`).
        info: the dataset's class names and colours (for the picture); None: a fixed palette.
        short_side: resize images so their shorter side has this many pixels first (as the data
            module's `eval_short_side`); None keeps their size.
        palette / alpha: colours of the picture (see `fusionseg.callbacks.overlay.display_colors`).
    """

    def __init__(self, module: FusedSegModule, info: DatasetInfo | None = None, short_side: int | None = None,
                 palette: Palette = "auto", alpha: float = 0.6) -> None:
        if module.needs_plan:
            raise ValueError("the module has no fusion plan yet; load a trained checkpoint (the plan is stored in it)")
        self.module = module.eval()
        self.info = info
        self.transform = EvalTransform(short_side)
        self.collate = SegCollate(pad_targets=False)
        self.colors = display_colors(module.num_classes, info, palette)
        self.alpha = alpha

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Segmenter:
        """Load a checkpoint written by `fusionseg fit`; the dataset's names and colours come with it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist (fit writes them to <run>/checkpoints/)")
        module = FusedSegModule.load_from_checkpoint(path, map_location="cpu").to(device)
        data = _checkpoint_data(path)
        info = None
        if "dataset" in data:
            from fusionseg.data import dataset_info

            info = dataset_info(data.get("val_dataset") or data["dataset"], data.get("task", module.task))
        kwargs.setdefault("short_side", data.get("eval_short_side"))
        return cls(module, info, **kwargs)

    @property
    def class_names(self) -> list[str]:
        if self.module.class_names:
            return list(self.module.class_names)
        return [f"class_{i}" for i in range(self.module.num_classes)]

    @torch.no_grad()
    def predict(self, image: ImageLike) -> tuple[SegPrediction, Image.Image]:
        """The prediction at the image's size, and the picture: class colours over the image, borders in white."""
        pixels = as_image_tensor(image)
        h, w = pixels.shape[-2:]
        empty = SegTarget(masks=torch.zeros(0, h, w, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.long))
        resized, target = self.transform(pixels, empty)
        batch = self.collate([SegItem(resized, target, "image", (h, w))])
        batch.images = batch.images.to(self.module.device)
        prediction = self.module.predictions(batch)[0]
        maps = prediction_maps(prediction)
        picture = overlay(pixels.float() / 255, maps.semantic, self.colors, self.alpha, maps.segments, class_outlines=True)
        return prediction, Image.fromarray(picture.numpy())
