"""Any timm image model as an encoder: its own feature pyramid, or ViTDet's simple pyramid for plain ViTs.

Hierarchical models (ResNet, ConvNeXt, Swin, EfficientNet, ...) declare their levels in
`feature_info`; for each stride 4, 8, 16, 32 the deepest level with that reduction is taken, and
features come from timm's `forward_intermediates` (always NCHW, also for NHWC models like Swin).
Plain ViTs (every level at the patch stride, 16) get a `SimpleFeaturePyramid` on their last,
normalized block, with `dynamic_img_size=True` so any input size works.

Weights are never downloaded: `weights=None` is timm's random initialization, `weights=PATH`
loads a local timm state dict (e.g. a timm hub repo's `model.safetensors`); the classifier is
not part of the encoder and its keys are dropped (and counted in the log).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor

from fusionseg.encoders.base import IMAGENET_MEAN, IMAGENET_STD, REQUIRED_STRIDES, Encoder
from fusionseg.encoders.simple_pyramid import SimpleFeaturePyramid, vitdet_channels
from fusionseg.encoders.weights import load_matching, read_state_dict

log = logging.getLogger(__name__)

VIT_PATCH = 16


def _level_indices(feature_info: list[dict[str, Any]]) -> dict[int, int]:
    """For each required stride, the index of the deepest `feature_info` level at that reduction."""
    found: dict[int, int] = {}
    for i, info in enumerate(feature_info):
        if info["reduction"] in REQUIRED_STRIDES:
            found[info["reduction"]] = i
    return found


class TimmEncoder(Encoder):
    """A timm model (`timm.create_model(model_name)`) with a `{4, 8, 16, 32}` pyramid.

    * `weights`: a local timm state dict (`.safetensors` or a torch file); `None` = random init.
    * `model_kwargs`: extra `timm.create_model` arguments (e.g. `{"drop_path_rate": 0.1}`,
      or `{"img_size": 512}` for models with a fixed input size).
    * `size_divisor`: inputs are padded to a multiple of it (models with windowed attention
      such as MaxViT need the window times 32).
    """

    weight_formats = ("timm state dict: .safetensors, or .pth/.bin read with weights_only=True",)

    def __init__(
        self,
        model_name: str = "resnet50",
        weights: str | Path | None = None,
        model_kwargs: dict[str, Any] | None = None,
        size_divisor: int = 32,
    ) -> None:
        if not timm.is_model(model_name):
            close = timm.list_models(f"*{model_name.split('.')[0].split('_')[0]}*")[:10]
            raise ValueError(f"timm has no model {model_name!r}; similar names: {close or '(none)'}")
        kwargs = dict(model_kwargs or {})
        # Read the architecture first, on the meta device (instant): its levels and options.
        with torch.device("meta"):
            probe = timm.create_model(model_name, pretrained=False, **kwargs)
        feature_info = list(getattr(probe, "feature_info", None) or [])
        if not feature_info or not hasattr(probe, "forward_intermediates"):
            raise ValueError(
                f"timm model {model_name!r} has no feature_info/forward_intermediates, so its feature maps "
                f"cannot be taken; use a model with a feature pyramid (e.g. resnet50, convnext_tiny, "
                f"swin_tiny_patch4_window7_224) "
                f"or a plain ViT with patch 16 (e.g. vit_small_patch16_224)"
            )
        if "dynamic_img_size" in inspect.signature(type(probe).__init__).parameters:
            kwargs.setdefault("dynamic_img_size", True)
        levels = _level_indices(feature_info)
        reductions = sorted({info["reduction"] for info in feature_info})
        plain_vit = reductions == [VIT_PATCH]
        if plain_vit:
            take_indices = [len(feature_info) - 1]
            pyramid = vitdet_channels(feature_info[-1]["num_chs"])
        elif set(levels) == set(REQUIRED_STRIDES):
            take_indices = [levels[s] for s in REQUIRED_STRIDES]
            pyramid = {s: feature_info[levels[s]]["num_chs"] for s in REQUIRED_STRIDES}
        else:
            raise ValueError(
                f"timm model {model_name!r} has levels at strides {reductions}; an encoder needs levels at "
                f"{list(REQUIRED_STRIDES)}, or a plain ViT with patch {VIT_PATCH} "
                f"(whose pyramid is built from its last block)"
            )
        pretrained_cfg = dict(getattr(probe, "pretrained_cfg", None) or {})
        del probe
        super().__init__(
            pyramid=pyramid,
            mean=tuple(pretrained_cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(pretrained_cfg.get("std", IMAGENET_STD)),
            size_divisor=size_divisor,
        )
        self.plain_vit = plain_vit
        self.take_indices = take_indices
        self.neck = SimpleFeaturePyramid(feature_info[-1]["num_chs"]) if plain_vit else None
        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        if weights is not None:
            self._load(weights, classifier=pretrained_cfg.get("classifier"))
        # Drop what the pyramid does not use (the head; the final norm of hierarchical models).
        self.model.prune_intermediate_layers(self.take_indices, prune_norm=not self.plain_vit, prune_head=True)

    def _load(self, weights: str | Path, classifier: str | tuple[str, ...] | None) -> None:
        heads = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
        dropped: list[str] = []

        def drop_classifier(key: str) -> str | None:
            if any(key == h or key.startswith(h + ".") for h in heads):
                dropped.append(key)
                return None
            return key

        load_matching(self.model, read_state_dict(weights), source=str(weights), rename=drop_classifier)
        if dropped:
            log.info("%s: ignored %d classifier keys of %s (%s)", self.model_name, len(dropped), weights,
                     ", ".join(dropped))

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        feats = self.model.forward_intermediates(
            x, indices=self.take_indices, norm=self.plain_vit, output_fmt="NCHW", intermediates_only=True
        )
        h, w = x.shape[-2:]
        if self.neck is not None:
            out = self.neck(feats[-1])
        else:
            out = dict(zip(REQUIRED_STRIDES, feats, strict=True))
        for s, f in out.items():
            if tuple(f.shape[-2:]) != (h // s, w // s):
                raise RuntimeError(
                    f"timm model {self.model_name!r}: level {s} has size {tuple(f.shape[-2:])} for input {(h, w)}, "
                    f"expected {(h // s, w // s)}"
                )
        return out

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "model_name": self.model_name, "plain_vit": self.plain_vit}
