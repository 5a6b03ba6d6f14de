"""A small convolutional encoder: the shape every fusionseg encoder plugin has."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from fusionseg.encoders import IMAGENET_MEAN, IMAGENET_STD, Encoder, load_matching, read_state_dict

STRIDES = (4, 8, 16, 32)


def conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 convolution, GroupNorm (batch-size independent), ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class ExampleConvEncoder(Encoder):
    """Five stride-2 convolution blocks; the last four give strides 4, 8, 16, 32 with `width * (1, 2, 4, 8)` channels.

    `weights` is a local state dict of this class (`.safetensors` or a torch file); `None` is
    random initialization.
    """

    # Shown by `fusionseg encoders`.
    weight_formats = ("state dict of ExampleConvEncoder (.safetensors, or .pt read with weights_only=True)",)

    def __init__(self, width: int = 32, weights: str | Path | None = None) -> None:
        if width < 1:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        # 1. Declare the pyramid (and the input normalization) before building anything.
        channels = {s: width * 2**i for i, s in enumerate(STRIDES)}
        super().__init__(pyramid=channels, mean=IMAGENET_MEAN, std=IMAGENET_STD, size_divisor=32)
        # 2. Build the layers.
        self.stem = conv_block(3, width, stride=2)
        widths = [width, *channels.values()]
        self.stages = nn.ModuleList(conv_block(widths[i], widths[i + 1], stride=2) for i in range(len(STRIDES)))
        # 3. Load weights from a local file only; a mismatch raises fusionseg's WeightsError with the keys.
        if weights is not None:
            load_matching(self, read_state_dict(weights), source=str(weights))

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        # `x` is normalized and padded to a multiple of `size_divisor`; `Encoder.forward` checks and crops the result.
        out = {}
        x = self.stem(x)
        for stride, stage in zip(STRIDES, self.stages, strict=True):
            x = stage(x)
            out[stride] = x
        return out
