"""Mask2Former head on a `{4, 8, 16, 32}` feature pyramid, assembled from transformers' Mask2Former modules.

The pixel decoder (multi-scale deformable attention over strides 8/16/32, FPN to stride 4),
the masked-attention transformer decoder, the Hungarian matcher and the point-sampled loss
are transformers' own (`transformers.models.mask2former.modeling_mask2former`); this file only
feeds them a pyramid instead of a transformers backbone and sums the deep-supervision losses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerLoss,
    Mask2FormerPixelDecoder,
    Mask2FormerPreTrainedModel,
    Mask2FormerTransformerModule,
)

from fusionseg.structures import STRIDES, SegTarget

HEAD_STRIDES = STRIDES  # the pyramid strides the head reads
LOSS_TERMS = {"loss_cross_entropy": "loss_ce", "loss_mask": "loss_mask", "loss_dice": "loss_dice"}
_LOSS_KEY = re.compile(r"^(loss_cross_entropy|loss_mask|loss_dice)(_\d+)?$")


@dataclass
class Mask2FormerOutput:
    """Raw head outputs for a batch of B images padded to (H, W).

    class_logits: `(B, Q, num_classes + 1)`, the last class is "no object".
    mask_logits: `(B, Q, ceil(H / 4), ceil(W / 4))` mask logits at stride 4.
    layers: `(class_logits, mask_logits)` of every earlier decoder layer, first the prediction of
    the learnable queries themselves (deep supervision; empty lists are fine at inference).
    """

    class_logits: Tensor
    mask_logits: Tensor
    layers: list[tuple[Tensor, Tensor]]


class _Mask2FormerModules(Mask2FormerPreTrainedModel):
    """transformers' pixel decoder, transformer decoder and class predictor, initialized the way transformers does."""

    def __init__(self, config: Mask2FormerConfig, in_channels: Sequence[int]) -> None:
        super().__init__(config)
        self.pixel_decoder = Mask2FormerPixelDecoder(config, feature_channels=list(in_channels))
        self.transformer_module = Mask2FormerTransformerModule(in_features=config.feature_size, config=config)
        self.class_predictor = nn.Linear(config.hidden_dim, config.num_labels + 1)
        self.post_init()


class _Mask2FormerLoss(Mask2FormerLoss):
    """transformers' loss, normalized by the mean number of target masks over all processes as Mask2Former
    does (transformers reduces it only under accelerate; Lightning runs plain torch.distributed)."""

    def get_num_masks(self, class_labels: Sequence[Tensor], device: torch.device) -> Tensor:
        num_masks = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        return num_masks.clamp(min=1)


class Mask2FormerHead(nn.Module):
    """Mask2Former segmentation head for a feature pyramid with strides 4, 8, 16 and 32.

    Args:
        in_channels: channels of the input pyramid per stride (`{4: C4, 8: C8, 16: C16, 32: C32}`).
        num_classes: number of classes (a "no object" class is added internally).
        num_queries: object queries (100; 200 for COCO instance segmentation).
        dec_layers: masked-attention decoder layers (9). Deep supervision covers all of them plus the
            prediction of the learnable queries, as in Mask2Former (its `DEC_LAYERS: 10`).
        hidden_dim: width of the pixel decoder, the mask features and the transformer decoder (a multiple of 32,
            for the pixel decoder's GroupNorm(32)).
        train_points: points sampled per mask for matching and the mask losses (12544 = 112 x 112).
        enc_layers: deformable-attention layers in the pixel decoder (6).
        num_heads: attention heads in both decoders (8).
        dim_feedforward / enc_feedforward: FFN widths of the transformer decoder (2048) and pixel decoder (1024).
        class_weight / mask_weight / dice_weight: loss (and matching cost) weights (2 / 5 / 5).
        no_object_weight: cross-entropy weight of the "no object" class (0.1).
        oversample_ratio / importance_sample_ratio: PointRend-style importance sampling of the mask loss points.
    """

    def __init__(
        self,
        in_channels: Mapping[int, int],
        num_classes: int,
        num_queries: int = 100,
        dec_layers: int = 9,
        hidden_dim: int = 256,
        train_points: int = 12544,
        enc_layers: int = 6,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        enc_feedforward: int = 1024,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        missing = [s for s in HEAD_STRIDES if s not in in_channels]
        if missing:
            raise ValueError(f"the Mask2Former head needs strides {list(HEAD_STRIDES)}; in_channels lacks {missing}")
        if hidden_dim <= 0 or hidden_dim % 32:
            raise ValueError(
                f"hidden_dim={hidden_dim} must be a positive multiple of 32 (the pixel decoder uses GroupNorm(32))"
            )
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by num_heads={num_heads}")
        if num_classes < 1 or num_queries < 1 or dec_layers < 1 or train_points < 1:
            raise ValueError(
                f"num_classes, num_queries, dec_layers and train_points must be >= 1; got {num_classes}, "
                f"{num_queries}, {dec_layers}, {train_points}"
            )
        self.in_channels = {s: int(in_channels[s]) for s in HEAD_STRIDES}
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.config = Mask2FormerConfig(
            num_labels=num_classes,
            num_queries=num_queries,
            decoder_layers=dec_layers + 1,  # transformers counts the learnable queries' prediction as a layer
            hidden_dim=hidden_dim,
            feature_size=hidden_dim,
            mask_feature_size=hidden_dim,
            encoder_layers=enc_layers,
            num_attention_heads=num_heads,
            dim_feedforward=dim_feedforward,
            encoder_feedforward_dim=enc_feedforward,
            train_num_points=train_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
            class_weight=class_weight,
            mask_weight=mask_weight,
            dice_weight=dice_weight,
            no_object_weight=no_object_weight,
            feature_strides=list(HEAD_STRIDES),
            use_auxiliary_loss=True,
        )
        self.m2f = _Mask2FormerModules(self.config, [self.in_channels[s] for s in HEAD_STRIDES])
        self.criterion = _Mask2FormerLoss(self.config, weight_dict={})

    def forward(self, features: Mapping[int, Tensor]) -> Mask2FormerOutput:
        """Predict from `{stride: (B, C_s, ceil(H / s), ceil(W / s))}`; extra strides are ignored."""
        feats = []
        for s in HEAD_STRIDES:
            f = features[s]
            if f.shape[1] != self.in_channels[s]:
                raise ValueError(f"stride {s}: the head was built for {self.in_channels[s]} channels, got {f.shape[1]}")
            feats.append(f)
        pixel = self.m2f.pixel_decoder(feats)
        decoded = self.m2f.transformer_module(pixel.multi_scale_features, pixel.mask_features)
        classes = [self.m2f.class_predictor(h.transpose(0, 1)) for h in decoded.intermediate_hidden_states]
        masks = list(decoded.masks_queries_logits)
        return Mask2FormerOutput(
            class_logits=classes[-1], mask_logits=masks[-1], layers=list(zip(classes[:-1], masks[:-1]))
        )

    def loss(self, outputs: Mask2FormerOutput, targets: Sequence[SegTarget]) -> dict[str, Tensor]:
        """Weighted Mask2Former losses summed over all decoder layers.

        Targets are at the padded image size; crowd segments are left out (as Mask2Former does).
        Returns `loss_ce`, `loss_mask`, `loss_dice` (each already weighted, summed over the final and
        all deep-supervision layers) and their sum `loss`. Computed in float32 outside autocast:
        the matcher hands its cost matrix to scipy.
        """
        if len(targets) != outputs.class_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs.class_logits.shape[0]} images")
        device = outputs.mask_logits.device
        mask_labels, class_labels = [], []
        for t in targets:
            keep = ~t.iscrowd.to(device=device, dtype=torch.bool)
            labels = t.labels.to(device)[keep]
            if ((labels < 0) | (labels >= self.num_classes)).any():  # one host sync per image, not two
                raise ValueError(f"target labels must be in [0, {self.num_classes}), got {labels.tolist()}")
            mask_labels.append(t.masks.to(device)[keep].float())
            class_labels.append(labels)
        with torch.autocast(device_type=device.type, enabled=False):
            raw = self.criterion(
                masks_queries_logits=outputs.mask_logits.float(),
                class_queries_logits=outputs.class_logits.float(),
                mask_labels=mask_labels,
                class_labels=class_labels,
                auxiliary_predictions=[
                    {"class_queries_logits": c.float(), "masks_queries_logits": m.float()} for c, m in outputs.layers
                ],
            )
        totals = {name: outputs.mask_logits.new_zeros((), dtype=torch.float32) for name in self.weights}
        for key, value in raw.items():
            match = _LOSS_KEY.match(key)
            if match is None:
                raise RuntimeError(f"unexpected loss term {key!r} from transformers' Mask2FormerLoss")
            name = LOSS_TERMS[match.group(1)]
            totals[name] = totals[name] + self.weights[name] * value
        totals["loss"] = totals["loss_ce"] + totals["loss_mask"] + totals["loss_dice"]
        return totals
