"""SAM2/SAM2.1 image encoder from Meta's `sam2` package: the Hiera trunk's four stages (the paper's
features, default) or the FPN neck's outputs, at strides 4-32.

`features="trunk"` (the paper's): the Hiera stages themselves, widening per stage (B+: 112, 224,
448, 896 channels), as the paper's released code fuses them (`align_channels_and_spatial` is
written for SAM2-B+'s 112/224/448/896 channels). `features="neck"`: SAM2's FPN neck on top,
256 channels per level, with top-down mixing into strides 16 and 32 (`fpn_top_down_levels`).

The architecture is Meta's `sam2.1_hiera_{t,s,b+,l}.yaml` (`model.image_encoder`; SAM2 and SAM2.1
share it). For the neck, Meta's `ImageEncoder` is built with `scalp=0` and run as trunk then neck,
because SAM2's own `scalp=1` drops the stride-32 level that the pyramid needs. The neck's
positional encodings (for SAM's prompt decoder) are not part of the pyramid. The trunk-only
encoder has no neck at all (no unused parameters, which distributed training would reject).

Weights: Meta's `sam2.1_hiera_*.pt` (or `sam2_hiera_*.pt`), read with `weights_only=True`; the
entries under `"model"` starting with `image_encoder.` are loaded (for the trunk, only
`image_encoder.trunk.`), the rest of the SAM2 model is counted in a log line.

`sam2` is an optional dependency: `pip install fusionseg[sam2]` (`SAM2_BUILD_CUDA=0` skips its
optional CUDA extension, which the image encoder does not use).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from fusionseg.encoders.base import IMAGENET_MEAN, IMAGENET_STD, REQUIRED_STRIDES, Encoder
from fusionseg.encoders.weights import load_matching, read_state_dict

log = logging.getLogger(__name__)

NECK_CHANNELS = 256
PREFIX = "image_encoder."
FEATURES = ("trunk", "neck")

# `trunk` arguments of Meta's sam2.1_hiera_{t,s,b+,l}.yaml.
TRUNKS: dict[str, dict[str, object]] = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
                 window_pos_embed_bkg_spatial_size=[7, 7]),
    "small": dict(embed_dim=96, num_heads=1, stages=[1, 2, 11, 2], global_att_blocks=[7, 10, 13],
                  window_pos_embed_bkg_spatial_size=[7, 7]),
    "base_plus": dict(embed_dim=112, num_heads=2),
    "large": dict(embed_dim=144, num_heads=2, stages=[2, 6, 36, 4], global_att_blocks=[23, 33, 43],
                  window_pos_embed_bkg_spatial_size=[7, 7], window_spec=[8, 4, 16, 8]),
}

# Channels of the trunk's stages at strides 4, 8, 16, 32 (embed_dim doubling per stage); the neck's
# `backbone_channel_list` in the same yaml files is this list reversed.
TRUNK_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (96, 192, 384, 768),
    "small": (96, 192, 384, 768),
    "base_plus": (112, 224, 448, 896),
    "large": (144, 288, 576, 1152),
}

INSTALL_HINT = (
    "the 'sam2' encoder needs Meta's sam2 package: pip install 'fusionseg[sam2]' "
    "(or SAM2_BUILD_CUDA=0 pip install sam2)"
)


def sam2_pyramid(size: str, features: str = "trunk") -> dict[int, int]:
    """`{stride: channels}` of the SAM2 encoder of that size and feature kind."""
    if size not in TRUNK_CHANNELS:
        raise ValueError(f"SAM2 size must be one of {list(TRUNK_CHANNELS)}, got {size!r}")
    if features not in FEATURES:
        raise ValueError(f"SAM2 features must be one of {list(FEATURES)} (trunk: the paper's), got {features!r}")
    channels = TRUNK_CHANNELS[size] if features == "trunk" else (NECK_CHANNELS,) * 4
    return dict(zip(REQUIRED_STRIDES, channels, strict=True))


def _sam2_modules() -> tuple[type, type, type, type]:
    try:
        from sam2.modeling.backbones.hieradet import Hiera
        from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
        from sam2.modeling.position_encoding import PositionEmbeddingSine
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    return Hiera, FpnNeck, ImageEncoder, PositionEmbeddingSine


def build_image_encoder(size: str, features: str = "neck") -> nn.Module:
    """Meta's SAM2.1 image encoder of that size: `ImageEncoder` with all four levels kept (`scalp=0`)
    for the neck, or a module holding only the Hiera `trunk` (the same parameter names) for the trunk."""
    sam2_pyramid(size, features)  # checks both
    Hiera, FpnNeck, ImageEncoder, PositionEmbeddingSine = _sam2_modules()
    trunk = Hiera(**TRUNKS[size])
    if features == "trunk":
        holder = nn.Module()
        holder.trunk = trunk
        return holder
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=NECK_CHANNELS, normalize=True, scale=None,
                                                temperature=10000),
        d_model=NECK_CHANNELS,
        backbone_channel_list=list(reversed(TRUNK_CHANNELS[size])),
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=0)


class SAM2Encoder(Encoder):
    """SAM2.1 Hiera image encoder (`size` tiny | small | base_plus | large) at strides 4, 8, 16, 32.

    `features="trunk"` (default, the paper's): the Hiera stages, `TRUNK_CHANNELS[size]` channels
    (B+: 112/224/448/896); `"neck"`: the FPN neck, 256 channels per level.
    `weights` is Meta's `sam2.1_hiera_<size>.pt` (only `image_encoder.*` is used); `None` is
    random initialization. Inputs use ImageNet mean/std, as SAM2's own transforms do.
    """

    weight_formats = ("Meta SAM2/SAM2.1 checkpoint (sam2.1_hiera_{tiny,small,base_plus,large}.pt, key 'model')",)

    def __init__(
        self,
        size: Literal["tiny", "small", "base_plus", "large"] = "base_plus",
        weights: str | Path | None = None,
        features: Literal["trunk", "neck"] = "trunk",
    ) -> None:
        pyramid = sam2_pyramid(size, features)
        image_encoder = build_image_encoder(size, features)
        super().__init__(pyramid=pyramid, mean=IMAGENET_MEAN, std=IMAGENET_STD, size_divisor=32)
        self.size = size
        self.features = features
        self.image_encoder = image_encoder
        if weights is not None:
            self._load(weights)

    def _load(self, weights: str | Path) -> None:
        ignored: Counter[str] = Counter()
        keep = PREFIX + "trunk." if self.features == "trunk" else PREFIX

        def encoder_only(key: str) -> str | None:
            if key.startswith(keep):
                return key
            ignored[".".join(key.split(".", 2)[:2]) if key.startswith(PREFIX) else key.split(".", 1)[0]] += 1
            return None

        load_matching(self, read_state_dict(weights, key="model"), source=str(weights), rename=encoder_only)
        if ignored:
            log.info("SAM2 %s (%s): ignored %d keys outside the %s in %s (%s)", self.size, self.features,
                     sum(ignored.values()), keep.rstrip("."), weights,
                     ", ".join(f"{k}: {n}" for k, n in sorted(ignored.items())))

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        levels = self.image_encoder.trunk(x)  # strides 4, 8, 16, 32
        if self.features == "neck":
            levels, _positions = self.image_encoder.neck(levels)
        return dict(zip(REQUIRED_STRIDES, levels, strict=True))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "size": self.size, "features": self.features}
