"""The Encoder contract: a module that declares its feature pyramid before it runs."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionseg.structures import STRIDES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REQUIRED_STRIDES = STRIDES  # every encoder provides at least these


class Encoder(nn.Module, ABC):
    """Base class of every encoder: an image in, a `{stride: feature map}` pyramid out.

    Subclasses call `super().__init__(pyramid=..., mean=..., std=..., size_divisor=...)` and
    implement `forward_features(x)` for inputs whose sides are multiples of `size_divisor`.
    `forward(x)` pads any input to that multiple, checks the result against the declared
    `pyramid` and crops every level to `ceil(H / stride) x ceil(W / stride)`.

    `mean`/`std` are on the `[0, 1]` scale; `normalize(images)` applies them.
    `weight_formats` names the checkpoint formats the encoder loads (shown by `fusionseg encoders`).
    """

    weight_formats: tuple[str, ...] = ()

    def __init__(
        self,
        pyramid: Mapping[int, int],
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        size_divisor: int = 32,
    ) -> None:
        super().__init__()
        pyramid = {int(s): int(c) for s, c in sorted(pyramid.items())}
        missing = [s for s in REQUIRED_STRIDES if s not in pyramid]
        if missing:
            raise ValueError(
                f"{type(self).__name__} declares strides {sorted(pyramid)}; an encoder must provide "
                f"at least {list(REQUIRED_STRIDES)} (missing {missing})"
            )
        if any(c <= 0 for c in pyramid.values()):
            raise ValueError(f"{type(self).__name__}: every pyramid level needs channels > 0, got {pyramid}")
        if size_divisor <= 0 or any(size_divisor % s for s in pyramid):
            raise ValueError(
                f"{type(self).__name__}: size_divisor={size_divisor} must be a positive multiple of every "
                f"stride {sorted(pyramid)}"
            )
        self.pyramid: dict[int, int] = pyramid
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.size_divisor = int(size_divisor)
        self._frozen = False
        self._trainable_before_freeze: set[str] | None = None

    # -- the contract -------------------------------------------------------------------
    @abstractmethod
    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        """Features of normalized images whose sides are multiples of `size_divisor`."""

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects images of shape (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d = self.size_divisor
        pad_h, pad_w = (-h) % d, (-w) % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = self.forward_features(x)
        if set(feats) != set(self.pyramid):
            raise RuntimeError(
                f"{type(self).__name__} returned strides {sorted(feats)} but declares {sorted(self.pyramid)}"
            )
        out: dict[int, Tensor] = {}
        for s, c in self.pyramid.items():
            f = feats[s]
            if f.dim() != 4 or f.shape[1] != c:
                raise RuntimeError(
                    f"{type(self).__name__} stride {s}: expected (B, {c}, h, w) features, got {tuple(f.shape)}"
                )
            out[s] = f[..., : math.ceil(h / s), : math.ceil(w / s)]
        return out

    # -- helpers --------------------------------------------------------------------------
    @property
    def strides(self) -> list[int]:
        return list(self.pyramid)

    def normalize(self, images: Tensor) -> Tensor:
        """Map `[0, 1]` RGB images to this encoder's input normalization."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def freeze(self) -> Encoder:
        """Eval mode and no gradients, kept through later `.train()` calls of a parent module."""
        if not self._frozen:
            self._trainable_before_freeze = {n for n, p in self.named_parameters() if p.requires_grad}
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def unfreeze(self) -> Encoder:
        """Undo `freeze`: the parameters that were trainable before it are again; train mode follows the parent."""
        if self._frozen:
            trainable = self._trainable_before_freeze or set()
            for n, p in self.named_parameters():
                p.requires_grad_(n in trainable)
        self._frozen = False
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def train(self, mode: bool = True) -> Encoder:
        return super().train(mode and not self._frozen)

    def describe(self) -> dict[str, object]:
        """What `fusionseg encoders` prints: the pyramid, the normalization, the weight formats."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "pyramid": dict(self.pyramid),
            "mean": self.mean,
            "std": self.std,
            "size_divisor": self.size_divisor,
            "weight_formats": list(self.weight_formats),
        }
