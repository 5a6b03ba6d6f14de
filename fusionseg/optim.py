"""Optimizer parameter groups and the warm-up + poly learning-rate schedule (as Mask2Former trains).

Groups: the trainable backbone (master encoder) at `lr * backbone_lr_mult`, everything trained
from scratch (alignment layers, Mask2Former head) at `lr`; within each, norms, biases and
embeddings get no weight decay. Frozen parameters never enter a group.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

from torch import nn

NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
# Parameter names that are embeddings although they are plain nn.Parameters (ViT, Hiera, Mask2Former).
EMBEDDING_NAMES = ("pos_embed", "cls_token", "reg_token", "register_tokens", "mask_token", "level_embed", "rel_pos")


def split_decay(modules: Iterable[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters of `modules` as (with weight decay, without): norms, biases (any 1-d
    parameter) and embeddings go without. Each parameter appears once."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                is_embedding = isinstance(module, nn.Embedding) or any(t in name for t in EMBEDDING_NAMES)
                if isinstance(module, NORM_LAYERS) or p.ndim <= 1 or is_embedding:
                    no_decay.append(p)
                else:
                    decay.append(p)
    return decay, no_decay


def param_groups(
    backbone: nn.Module | None,
    others: Sequence[nn.Module],
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float,
) -> list[dict]:
    """AdamW groups named `backbone`, `backbone_no_decay`, `head`, `head_no_decay` (empty ones left out).

    `backbone` may be None (a frozen master trains nothing). A parameter shared between the
    backbone and `others` is counted once, in the backbone.
    """
    groups: list[dict] = []
    taken: set[int] = set()
    if backbone is not None:
        decay, no_decay = split_decay([backbone])
        groups += [
            {"name": "backbone", "params": decay, "lr": lr * backbone_lr_mult, "weight_decay": weight_decay},
            {"name": "backbone_no_decay", "params": no_decay, "lr": lr * backbone_lr_mult, "weight_decay": 0.0},
        ]
        taken = {id(p) for p in decay + no_decay}
    decay, no_decay = split_decay(others)
    groups += [
        {"name": "head", "params": [p for p in decay if id(p) not in taken], "lr": lr, "weight_decay": weight_decay},
        {"name": "head_no_decay", "params": [p for p in no_decay if id(p) not in taken], "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def resolve_warmup(warmup: int | float, total_steps: int) -> int:
    """Warm-up steps from a count (`int >= 0`) or a fraction of the total (`0 <= float < 1`), at most the total."""
    if isinstance(warmup, float) and not warmup.is_integer():
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup_steps={warmup}: a fraction must be in [0, 1); a count must be an integer")
        steps = round(warmup * total_steps)
    else:
        steps = int(warmup)
        if steps < 0:
            raise ValueError(f"warmup_steps={warmup} must be >= 0")
    if steps > total_steps:
        warnings.warn(
            f"warmup_steps={steps} exceeds the {total_steps} optimizer steps of this run; warming up over all of them",
            stacklevel=2,
        )
        steps = total_steps
    return steps


class WarmupPoly:
    """Learning-rate factor per optimizer step: linear warm-up from `warmup_factor` to 1 over
    `warmup_steps`, times the poly decay `(1 - step / total_steps) ** power` (detectron2's WarmupPolyLR)."""

    def __init__(
        self, total_steps: int, warmup_steps: int = 0, power: float = 0.9, warmup_factor: float = 1e-3
    ) -> None:
        if total_steps <= 0 or not math.isfinite(total_steps):
            raise ValueError(f"the poly schedule needs a finite number of steps > 0, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.power = float(power)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step: int) -> float:
        poly = (1.0 - min(step, self.total_steps) / self.total_steps) ** self.power
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            return (self.warmup_factor * (1.0 - alpha) + alpha) * poly
        return poly
