"""ViTDet's simple feature pyramid: strides 4, 8, 16, 32 from a plain ViT's stride-16 feature map.

Stride 4 comes from two 2x2 stride-2 transposed convolutions, stride 8 from one, stride 16 is the
map itself and stride 32 a 2x2 max pooling (Li et al., "Exploring Plain Vision Transformer
Backbones for Object Detection", 2022). Channels default to ViTDet's: `dim/4, dim/2, dim, dim`.

Unlike ViTDet, the transposed convolutions start as a parameter-free resampling: each output
channel is the mean of a group of `in/out` input channels, copied to its 2x2 block (nearest
upsampling). An untrained pyramid therefore carries the backbone's features at every level
instead of noise, which is what the label-free metrics profile and what a frozen auxiliary
encoder uses as is. For the same reason there is no LayerNorm/GELU between the two stride-4
deconvolutions: it would make the untrained level a distortion of the features.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

STRIDES = (4, 8, 16, 32)


def vitdet_channels(dim: int) -> dict[int, int]:
    """ViTDet's channels per stride for a ViT of width `dim`."""
    if dim % 4:
        raise ValueError(f"a simple feature pyramid needs a width divisible by 4, got {dim}")
    return {4: dim // 4, 8: dim // 2, 16: dim, 32: dim}


def group_average_(weight: Tensor, in_channels: int, out_channels: int, transposed: bool) -> None:
    """Set a (transposed) convolution weight so output channel j averages input group j.

    Groups are consecutive runs of `in_channels // out_channels` channels; every kernel tap gets
    the same value, so a kxk stride-k transposed convolution becomes nearest upsampling.
    """
    if in_channels % out_channels:
        raise ValueError(
            f"a level of {out_channels} channels cannot average groups of the {in_channels} input channels; "
            f"choose a channel count that divides {in_channels}"
        )
    group = in_channels // out_channels
    mixing = torch.zeros(out_channels, in_channels)
    mixing[torch.arange(in_channels) // group, torch.arange(in_channels)] = 1.0 / group
    if transposed:  # ConvTranspose2d weight: (in, out, kh, kw)
        mixing = mixing.t()
    with torch.no_grad():
        weight.copy_(mixing[:, :, None, None].expand_as(weight))


def _deconv2x(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    group_average_(deconv.weight, in_channels, out_channels, transposed=True)
    nn.init.zeros_(deconv.bias)
    return deconv


def _projection(in_channels: int, out_channels: int) -> nn.Module:
    if in_channels == out_channels:
        return nn.Identity()
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    group_average_(conv.weight, in_channels, out_channels, transposed=False)
    nn.init.zeros_(conv.bias)
    return conv


class SimpleFeaturePyramid(nn.Module):
    """A `{4, 8, 16, 32}` pyramid from one stride-16 map of `dim` channels (ViTDet's simple pyramid).

    `channels` maps each stride to its width (default `vitdet_channels(dim)`); every width must
    divide `dim`. `forward(x)` takes `(B, dim, h, w)` and returns `{stride: (B, c, h*16/s, w*16/s)}`
    (h and w even, so stride 32 is exact).
    """

    def __init__(self, dim: int, channels: Mapping[int, int] | None = None) -> None:
        super().__init__()
        channels = dict(channels) if channels is not None else vitdet_channels(dim)
        if sorted(channels) != list(STRIDES):
            raise ValueError(f"a simple feature pyramid has strides {list(STRIDES)}, got {sorted(channels)}")
        self.dim = dim
        self.channels = {s: int(channels[s]) for s in STRIDES}
        c4, c8 = self.channels[4], self.channels[8]
        # Stride 4 goes through ViTDet's intermediate width dim/2 when the groups allow it.
        mid = dim // 2 if dim % 2 == 0 and (dim // 2) % c4 == 0 else c4
        self.levels = nn.ModuleDict(
            {
                "4": nn.Sequential(_deconv2x(dim, mid), _deconv2x(mid, c4)),
                "8": _deconv2x(dim, c8),
                "16": _projection(dim, self.channels[16]),
                "32": nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2), _projection(dim, self.channels[32])),
            }
        )

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"SimpleFeaturePyramid expects (B, {self.dim}, h, w) features, got {tuple(x.shape)}")
        return {s: self.levels[str(s)](x) for s in STRIDES}
