"""Joint image + mask transforms (torchvision.transforms.v2, tv_tensors keep them aligned)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fusionseg.structures import SegTarget


class TrainTransform:
    """Random scale, random crop (padded where the image is smaller), horizontal flip, photometric jitter.

    The short side is resized to `crop_size * s`, `s ~ U(scale_range)`; the crop is `crop_size` square, padded
    with 0 where the scaled image is smaller (padding lies outside every mask, so the loss ignores it).
    Masks left empty by the crop are dropped. Returns the image as float in [0, 1].
    """

    def __init__(
        self,
        crop_size: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        color_jitter: float = 0.3,
    ) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.crop_size = crop_size
        steps: list[v2.Transform] = [
            v2.RandomResize(max(1, round(crop_size * lo)), max(2, round(crop_size * hi) + 1), antialias=True),
            v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 0}),
        ]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if color_jitter > 0:
            steps.append(
                v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.05)
            )
        self.transform = v2.Compose(steps)

    def __call__(self, image: Tensor, target: SegTarget) -> tuple[Tensor, SegTarget]:
        masks = tv_tensors.Mask(target.masks.to(torch.uint8))
        image_out, masks_out = self.transform(tv_tensors.Image(image), masks)
        masks_out = masks_out.as_subclass(Tensor).bool()
        keep = masks_out.flatten(1).any(1)
        target_out = SegTarget(masks=masks_out[keep], labels=target.labels[keep], iscrowd=target.iscrowd[keep])
        return F.to_dtype(image_out.as_subclass(Tensor), torch.float32, scale=True), target_out


class EvalTransform:
    """Evaluation: the image optionally resized to `short_side`; the target is kept at the original size."""

    def __init__(self, short_side: int | None = None) -> None:
        self.short_side = short_side

    def __call__(self, image: Tensor, target: SegTarget) -> tuple[Tensor, SegTarget]:
        if self.short_side is not None and min(image.shape[-2:]) != self.short_side:
            image = F.resize(image, [self.short_side], antialias=True)
        return F.to_dtype(image, torch.float32, scale=True), target
