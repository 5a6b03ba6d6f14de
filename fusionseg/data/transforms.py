"""Joint image + mask transforms (torchvision.transforms.v2, tv_tensors keep them aligned), with Mask2Former's recipes.

Training resizes in one of two ways, then crops `crop_size` (an int for a square, or `(height, width)`):

- `resize="short_side"` (Mask2Former's ADE20K and Cityscapes mappers, detectron2's `ResizeShortestEdge`):
  the short side becomes `scale * scale_base`, the long side at most `max_size`. With `scale_step`
  the scale is chosen among `scale_range[0], scale_range[0] + step, ..., scale_range[1]`, as
  Mask2Former's `MIN_SIZE_TRAIN: [int(x * 0.1 * 1024) for x in range(5, 21)]` with `"choice"` sampling;
  without, it is uniform in `scale_range`.
- `resize="lsj"` (large-scale jitter, Mask2Former's COCO mappers, detectron2's `ResizeScale`): the image is
  scaled to fit inside a `scale_base` square times `scale ~ U(scale_range)`, i.e. the long side sets the scale.

Then a random crop, padded with 0 where the scaled image is smaller (outside every mask, so the loss
ignores it), a horizontal flip, and colour augmentation: `color_aug="ssd"` (detectron2's
`ColorAugSSDTransform`, which Mask2Former uses for ADE20K and Cityscapes), `"jitter"` (torchvision's
ColorJitter at `color_jitter`) or `"none"` (Mask2Former's COCO recipe).

Evaluation resizes as detectron2's `ResizeShortestEdge(short_side, max_size)` does at test time (COCO:
800/1333, Cityscapes: 1024/2048, i.e. full resolution, ADE20K: 512/2048); targets stay at the original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fusionseg.structures import SegTarget

ResizeMode = Literal["short_side", "lsj"]
ColorAug = Literal["none", "jitter", "ssd"]
# detectron2's ColorAugSSDTransform defaults (brightness delta and hue delta in 0-255 and OpenCV's 0-180 units).
SSD_BRIGHTNESS = 32 / 255
SSD_CONTRAST = (0.5, 1.5)
SSD_SATURATION = (0.5, 1.5)
SSD_HUE = 18 / 180


def crop_hw(crop_size: int | Sequence[int]) -> tuple[int, int]:
    """`(height, width)` of a crop given as an int (square) or `[height, width]`."""
    size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(int(s) for s in crop_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"crop_size must be an int or [height, width] of positive ints, got {crop_size!r}")
    return size[0], size[1]


def choice_sizes(base: int, scale_range: tuple[float, float], step: float) -> list[int]:
    """Mask2Former's `[int(x * step * base) for x in range(lo / step, hi / step + 1)]` short sides."""
    first, last = round(scale_range[0] / step), round(scale_range[1] / step)
    return [int(x * step * base) for x in range(first, last + 1)]


def _coin() -> bool:
    return bool(torch.rand(()) < 0.5)


def _uniform(lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand(()))


def _saturate(image: Tensor, alpha: float) -> Tensor:
    """Scale HSV saturation by `alpha` (clipped at 1): each channel moves from the max channel V by `alpha`."""
    value = image.amax(0, keepdim=True)
    spread = value - image.amin(0, keepdim=True)
    # S * alpha <= 1 means the min channel stays >= 0: cap the factor per pixel at V / (V - min).
    cap = torch.where(spread > 0, value / spread.clamp_min(1e-12), torch.full_like(value, alpha))
    return value - torch.minimum(torch.full_like(value, alpha), cap) * (value - image)


def color_aug_ssd(image: Tensor) -> Tensor:
    """detectron2's `ColorAugSSDTransform` on a float `[0, 1]` image: each step with probability 0.5 —
    brightness `+U(-32, 32)/255`, then contrast `xU(0.5, 1.5)`, saturation `xU(0.5, 1.5)` and hue
    `+-18/180` of the circle, the contrast first or last (even odds). Computed in float (detectron2 rounds to
    uint8 after each step)."""

    def contrast(x: Tensor) -> Tensor:
        return (x * _uniform(*SSD_CONTRAST)).clamp(0, 1) if _coin() else x

    def saturation(x: Tensor) -> Tensor:
        return _saturate(x, _uniform(*SSD_SATURATION)).clamp(0, 1) if _coin() else x

    def hue(x: Tensor) -> Tensor:
        return F.adjust_hue(x, int(torch.randint(-18, 19, ())) / 180) if _coin() else x

    if _coin():
        image = (image + _uniform(-SSD_BRIGHTNESS, SSD_BRIGHTNESS)).clamp(0, 1)
    if _coin():
        return hue(saturation(contrast(image)))
    return contrast(hue(saturation(image)))


class TrainTransform:
    """Random resize (`resize`: short side or large-scale jitter), random crop (padded where the image is
    smaller), horizontal flip, colour augmentation; see the module docstring for Mask2Former's recipes.

    `scale_base` defaults to the crop's short side (`short_side`) or long side (`lsj`). Masks left empty by
    the crop are dropped. Returns the image as float in [0, 1].
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        color_jitter: float = 0.3,
        resize: ResizeMode = "short_side",
        scale_base: int | None = None,
        scale_step: float | None = None,
        max_size: int | None = None,
        color_aug: ColorAug = "jitter",
    ) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        if resize not in ("short_side", "lsj"):
            raise ValueError(f"resize must be 'short_side' or 'lsj' (large-scale jitter), got {resize!r}")
        if color_aug not in ("none", "jitter", "ssd"):
            raise ValueError(f"color_aug must be 'none', 'jitter' or 'ssd', got {color_aug!r}")
        if scale_step is not None and (scale_step <= 0 or resize == "lsj"):
            raise ValueError(f"scale_step={scale_step}: a step > 0, for resize='short_side' only (LSJ is continuous)")
        self.crop_size = crop_hw(crop_size)
        base = scale_base or (min(self.crop_size) if resize == "short_side" else max(self.crop_size))
        resize_step: v2.Transform
        if resize == "lsj":
            resize_step = v2.ScaleJitter((base, base), scale_range=(lo, hi), antialias=True)
        elif scale_step is not None:
            resize_step = v2.RandomShortestSize(choice_sizes(base, (lo, hi), scale_step), max_size, antialias=True)
        else:
            if max_size is not None:
                raise ValueError("max_size needs scale_step (Mask2Former's choice of short sides)")
            resize_step = v2.RandomResize(max(1, round(base * lo)), max(2, round(base * hi) + 1), antialias=True)
        steps: list[v2.Transform] = [
            resize_step,
            v2.RandomCrop(self.crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 0}),
        ]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if color_aug == "jitter" and color_jitter > 0:
            steps.append(
                v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.05)
            )
        self.color_aug = color_aug
        self.transform = v2.Compose(steps)

    def __call__(self, image: Tensor, target: SegTarget) -> tuple[Tensor, SegTarget]:
        masks = tv_tensors.Mask(target.masks.to(torch.uint8))
        if self.color_aug != "ssd":
            image_out, masks_out = self.transform(tv_tensors.Image(image), masks)
        else:  # carry a map of the image's own pixels, so the padding stays black under the colour change
            inside = tv_tensors.Mask(torch.ones(1, *image.shape[-2:], dtype=torch.uint8))
            image_out, masks_out, inside = self.transform(tv_tensors.Image(image), masks, inside)
        masks_out = masks_out.as_subclass(Tensor).bool()
        keep = masks_out.flatten(1).any(1)
        target_out = SegTarget(masks=masks_out[keep], labels=target.labels[keep], iscrowd=target.iscrowd[keep])
        image_out = F.to_dtype(image_out.as_subclass(Tensor), torch.float32, scale=True)
        if self.color_aug == "ssd":
            # Mask2Former pads after its colour augmentation, which never sees the padding.
            image_out = torch.where(inside.as_subclass(Tensor).bool(), color_aug_ssd(image_out), image_out)
        return image_out, target_out


def eval_size(height: int, width: int, short_side: int, max_size: int | None = None) -> tuple[int, int]:
    """detectron2's `ResizeShortestEdge.get_output_shape`: short side to `short_side`, long side at most
    `max_size`, rounded half up."""
    scale = short_side / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max_size is not None and max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


class EvalTransform:
    """Evaluation: the image resized as detectron2's test-time `ResizeShortestEdge(short_side, max_size)`
    (None: as read); the target is kept at the original size."""

    def __init__(self, short_side: int | None = None, max_size: int | None = None) -> None:
        if max_size is not None and short_side is None:
            raise ValueError("eval max_size needs a short_side to resize to (detectron2's MIN_SIZE_TEST)")
        self.short_side = short_side
        self.max_size = max_size

    def __call__(self, image: Tensor, target: SegTarget) -> tuple[Tensor, SegTarget]:
        if self.short_side is not None:
            size = eval_size(*image.shape[-2:], self.short_side, self.max_size)
            if size != tuple(image.shape[-2:]):
                image = F.resize(image, list(size), antialias=True)
        return F.to_dtype(image, torch.float32, scale=True), target
