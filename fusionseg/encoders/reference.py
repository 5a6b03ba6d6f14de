"""Two tiny encoders with a known bias, for tests, the demo and sanity checks of the metrics.

Both work on the image itself (inputs in [0, 1], no normalization) and need no weights.
At every stride `s` the image is first area-averaged by `s`, then:

* `edges` (edge-strong): a bank of first-derivative-of-Gaussian filters at `orientations`
  angles, applied to each colour channel; the rectified responses `|d/dθ I|` are zero on flat
  regions and peak on the image's edges.
* `regions` (structure-strong): Gaussian-smoothed colour means and local colour standard
  deviations at two scales; these are piecewise smooth, constant inside uniform regions and
  changing slowly across them.

A learned 1x1 convolution (seeded initialization, no bias for `edges` so flat regions stay at
zero) maps these hand-made channels to `channels` per level, so either can be fine-tuned as a
master in the demo.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionseg.encoders.base import Encoder
from fusionseg.encoders.weights import load_matching, read_state_dict

STRIDES = (4, 8, 16, 32)


def gaussian_kernel1d(sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur per channel with replicate padding (works on maps of any size)."""
    k = gaussian_kernel1d(sigma).to(x)
    r = k.numel() // 2
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def oriented_derivative_bank(orientations: int, sigma: float = 1.0) -> Tensor:
    """`(orientations, 1, k, k)` first derivatives of a Gaussian along evenly spaced angles in [0, π)."""
    radius = max(1, math.ceil(2.5 * sigma))
    ax = torch.arange(-radius, radius + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    g = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    filters = []
    for i in range(orientations):
        theta = math.pi * i / orientations
        d = -(xx * math.cos(theta) + yy * math.sin(theta)) / sigma**2 * g
        filters.append(d / d.abs().sum())
    return torch.stack(filters)[:, None]


class _ReferenceEncoder(Encoder):
    weight_formats = ("safetensors", "torch (weights_only)", "none: seeded random init")

    def __init__(self, in_channels: int, channels: int, bias: bool, seed: int, weights: str | Path | None) -> None:
        super().__init__(
            pyramid={s: channels for s in STRIDES}, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), size_divisor=32
        )
        self.proj = nn.ModuleDict({str(s): nn.Conv2d(in_channels, channels, 1, bias=bias) for s in STRIDES})
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.proj.values():
                bound = 1.0 / math.sqrt(in_channels)
                conv.weight.copy_(torch.empty_like(conv.weight).uniform_(-bound, bound, generator=gen))
                if conv.bias is not None:
                    conv.bias.zero_()
        if weights is not None:
            load_matching(self, read_state_dict(weights), source=str(weights))

    @abstractmethod
    def handmade(self, x: Tensor) -> Tensor:
        """The fixed, hand-made channels of an area-averaged image."""

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        return {s: self.proj[str(s)](self.handmade(F.avg_pool2d(x, s))) for s in STRIDES}


class EdgesEncoder(_ReferenceEncoder):
    """Edge-strong reference encoder: rectified oriented Gaussian-derivative responses per colour."""

    def __init__(self, channels: int = 64, orientations: int = 8, sigma: float = 1.0, seed: int = 0,
                 weights: str | Path | None = None) -> None:
        self.orientations = orientations
        super().__init__(in_channels=3 * orientations, channels=channels, bias=False, seed=seed, weights=weights)
        self.register_buffer("bank", oriented_derivative_bank(orientations, sigma).repeat(3, 1, 1, 1), persistent=False)

    def handmade(self, x: Tensor) -> Tensor:
        r = self.bank.shape[-1] // 2
        return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), self.bank.to(x), groups=3).abs()


class RegionsEncoder(_ReferenceEncoder):
    """Structure-strong reference encoder: smoothed colour means and local colour spread."""

    def __init__(self, channels: int = 64, sigmas: tuple[float, ...] = (1.5, 3.0), seed: int = 0,
                 weights: str | Path | None = None) -> None:
        self.sigmas = tuple(sigmas)
        super().__init__(in_channels=6 * len(self.sigmas), channels=channels, bias=True, seed=seed, weights=weights)

    def handmade(self, x: Tensor) -> Tensor:
        out = []
        for sigma in self.sigmas:
            mean = gaussian_blur(x, sigma)
            spread = (gaussian_blur(x * x, sigma) - mean * mean).clamp_min(0).add(1e-6).sqrt()
            out += [mean, spread]
        return torch.cat(out, dim=1)
