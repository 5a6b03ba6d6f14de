"""`HeadConfig`: every setting of the Mask2Former head and its inference, as one object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fusionseg.heads.mask2former import Mask2FormerHead


@dataclass(frozen=True)
class HeadConfig:
    """The Mask2Former head (sizes, loss weights) and its inference settings; Mask2Former's defaults.

    In YAML, under `model.head`: `{num_queries: 200, dec_layers: 9, ...}` (unnamed keys keep these
    defaults); on the command line `--model.head.num_queries 200`. `build(in_channels, num_classes)`
    makes the head (see `Mask2FormerHead` for each size and weight).

    Inference: `topk_per_image` masks kept per image (instance); `object_mask_threshold` the minimum
    query score and `overlap_threshold` the share of a query's mask that must survive overlaps (panoptic).
    """

    num_queries: int = 100
    dec_layers: int = 9
    hidden_dim: int = 256
    train_points: int = 12544
    enc_layers: int = 6
    num_heads: int = 8
    dim_feedforward: int = 2048
    enc_feedforward: int = 1024
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    topk_per_image: int = 100
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8

    @classmethod
    def parse(cls, value: HeadConfig | Mapping[str, Any] | None) -> HeadConfig:
        """A `HeadConfig` from itself, a dict of some of its fields (e.g. checkpoint hyperparameters) or None."""
        if value is None:
            return cls()
        if isinstance(value, HeadConfig):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown head settings {unknown}; HeadConfig has {sorted(known)}")
            return cls(**dict(value))
        raise TypeError(f"head must be a HeadConfig or a dict of its fields, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build(self, in_channels: Mapping[int, int], num_classes: int) -> Mask2FormerHead:
        """The Mask2Former head for a pyramid of `in_channels` (`{stride: channels}`) and `num_classes` classes."""
        return Mask2FormerHead(
            in_channels=in_channels,
            num_classes=num_classes,
            num_queries=self.num_queries,
            dec_layers=self.dec_layers,
            hidden_dim=self.hidden_dim,
            train_points=self.train_points,
            enc_layers=self.enc_layers,
            num_heads=self.num_heads,
            dim_feedforward=self.dim_feedforward,
            enc_feedforward=self.enc_feedforward,
            class_weight=self.class_weight,
            mask_weight=self.mask_weight,
            dice_weight=self.dice_weight,
            no_object_weight=self.no_object_weight,
        )
