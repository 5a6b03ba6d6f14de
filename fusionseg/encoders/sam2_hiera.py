"""SAM2/SAM2.1 image encoder (Hiera trunk + FPN neck) from Meta's `sam2` package: strides 4-32, 256 channels.

The architecture is Meta's `sam2.1_hiera_{t,s,b+,l}.yaml` (`model.image_encoder`; SAM2 and SAM2.1
share it). Meta's `ImageEncoder` is built with `scalp=0` and run as trunk then neck here, because
SAM2's own `scalp=1` drops the stride-32 level that the pyramid needs. The neck's positional
encodings (for SAM's prompt decoder) are not part of the pyramid.

Weights: Meta's `sam2.1_hiera_*.pt` (or `sam2_hiera_*.pt`), read with `weights_only=True`; the
entries under `"model"` starting with `image_encoder.` are loaded, the rest of the SAM2 model
(memory attention, mask decoder, ...) is counted in a log line.

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

# `trunk` arguments and the neck's `backbone_channel_list` of Meta's sam2.1_hiera_{t,s,b+,l}.yaml.
TRUNKS: dict[str, dict[str, object]] = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
                 window_pos_embed_bkg_spatial_size=[7, 7]),
    "small": dict(embed_dim=96, num_heads=1, stages=[1, 2, 11, 2], global_att_blocks=[7, 10, 13],
                  window_pos_embed_bkg_spatial_size=[7, 7]),
    "base_plus": dict(embed_dim=112, num_heads=2),
    "large": dict(embed_dim=144, num_heads=2, stages=[2, 6, 36, 4], global_att_blocks=[23, 33, 43],
                  window_pos_embed_bkg_spatial_size=[7, 7], window_spec=[8, 4, 16, 8]),
}

NECK_INPUTS: dict[str, list[int]] = {
    "tiny": [768, 384, 192, 96],
    "small": [768, 384, 192, 96],
    "base_plus": [896, 448, 224, 112],
    "large": [1152, 576, 288, 144],
}

INSTALL_HINT = (
    "the 'sam2' encoder needs Meta's sam2 package: pip install 'fusionseg[sam2]' "
    "(or SAM2_BUILD_CUDA=0 pip install sam2)"
)


def build_image_encoder(size: str) -> nn.Module:
    """Meta's SAM2.1 `ImageEncoder` of that size, with all four levels kept (`scalp=0`)."""
    if size not in TRUNKS:
        raise ValueError(f"SAM2 size must be one of {list(TRUNKS)}, got {size!r}")
    try:
        from sam2.modeling.backbones.hieradet import Hiera
        from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
        from sam2.modeling.position_encoding import PositionEmbeddingSine
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    trunk = Hiera(**TRUNKS[size])
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=NECK_CHANNELS, normalize=True, scale=None,
                                                temperature=10000),
        d_model=NECK_CHANNELS,
        backbone_channel_list=NECK_INPUTS[size],
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=0)


class SAM2Encoder(Encoder):
    """SAM2.1 Hiera image encoder (`size` tiny | small | base_plus | large): strides 4, 8, 16, 32, 256 channels each.

    `weights` is Meta's `sam2.1_hiera_<size>.pt` (only `image_encoder.*` is used); `None` is
    random initialization. Inputs use ImageNet mean/std, as SAM2's own transforms do.
    """

    weight_formats = ("Meta SAM2/SAM2.1 checkpoint (sam2.1_hiera_{tiny,small,base_plus,large}.pt, key 'model')",)

    def __init__(
        self,
        size: Literal["tiny", "small", "base_plus", "large"] = "base_plus",
        weights: str | Path | None = None,
    ) -> None:
        image_encoder = build_image_encoder(size)
        super().__init__(pyramid={s: NECK_CHANNELS for s in REQUIRED_STRIDES}, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         size_divisor=32)
        self.size = size
        self.image_encoder = image_encoder
        if weights is not None:
            self._load(weights)

    def _load(self, weights: str | Path) -> None:
        ignored: Counter[str] = Counter()

        def encoder_only(key: str) -> str | None:
            if key.startswith(PREFIX):
                return key
            ignored[key.split(".", 1)[0]] += 1
            return None

        load_matching(self, read_state_dict(weights, key="model"), source=str(weights), rename=encoder_only)
        if ignored:
            log.info("SAM2 %s: ignored %d keys outside the image encoder in %s (%s)", self.size, sum(ignored.values()),
                     weights, ", ".join(f"{k}: {n}" for k, n in sorted(ignored.items())))

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        features, _positions = self.image_encoder.neck(self.image_encoder.trunk(x))
        return dict(zip(REQUIRED_STRIDES, features, strict=True))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "size": self.size}
