"""Optimizer parameter groups and the learning-rate schedules Mask2Former trains with.

Schedules (`build_schedule`): `poly` (detectron2's WarmupPolyLR: ADE20K, Cityscapes) and `multistep`
(detectron2's WarmupMultiStepLR: COCO, x0.1 at 327,778 and 355,092 of 368,750 iterations), each with an
optional linear warm-up. They are per-step factors of the base learning rate, for `LambdaLR`.

Groups: the trainable backbone (master encoder) at `lr * backbone_lr_mult`, everything trained
from scratch (alignment layers, Mask2Former head) at `lr`; within each, norms, biases and
embeddings get no weight decay. Frozen parameters never enter a group.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

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


def _warmup(step: int, warmup_steps: int, warmup_factor: float) -> float:
    if step >= warmup_steps:
        return 1.0
    alpha = step / warmup_steps
    return warmup_factor * (1.0 - alpha) + alpha


def resolve_milestones(milestones: Sequence[int | float], total_steps: int) -> list[int]:
    """Milestone steps from counts (ints) or fractions of the total (floats in (0, 1)), strictly increasing."""
    steps = []
    for m in milestones:
        if isinstance(m, float) and not m.is_integer():
            if not 0.0 < m < 1.0:
                raise ValueError(f"milestone {m}: a fraction must be in (0, 1); a step count must be an integer")
            steps.append(round(m * total_steps))
        else:
            steps.append(int(m))
    if any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"milestones must be increasing steps > 0, got {list(milestones)} (steps {steps})")
    if steps and steps[-1] > total_steps:
        warnings.warn(
            f"milestone {steps[-1]} lies beyond the {total_steps} optimizer steps of this run: that decay never comes",
            stacklevel=2,
        )
    return steps


class WarmupMultiStep:
    """Learning-rate factor per optimizer step: linear warm-up from `warmup_factor` to 1 over `warmup_steps`,
    times `gamma ** (number of milestones <= step)` (detectron2's WarmupMultiStepLR)."""

    def __init__(
        self, milestones: Sequence[int], gamma: float = 0.1, warmup_steps: int = 0, warmup_factor: float = 1e-3
    ) -> None:
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step: int) -> float:
        return _warmup(step, self.warmup_steps, self.warmup_factor) * self.gamma ** bisect.bisect_right(
            self.milestones, step
        )


def build_schedule(
    kind: Literal["poly", "multistep"],
    total_steps: int,
    warmup_steps: int | float = 0,
    power: float = 0.9,
    milestones: Sequence[int | float] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """The per-step learning-rate factor of a schedule, for `torch.optim.lr_scheduler.LambdaLR`.

    `kind="poly"`: `(1 - step / total_steps) ** power` (ADE20K, Cityscapes); `kind="multistep"`: x`gamma` at
    each of `milestones` (COCO: `[327778, 355092]` of 368,750; floats in (0, 1) are fractions of the total).
    `warmup_steps` (a count or a fraction of the total) ramps linearly from 0.001; Mask2Former has none.
    """
    if total_steps <= 0 or not math.isfinite(total_steps):
        raise ValueError(f"a learning-rate schedule needs a finite number of steps > 0, got {total_steps}")
    warmup = resolve_warmup(warmup_steps, int(total_steps))
    if kind == "poly":
        if milestones:
            raise ValueError(f"milestones {list(milestones)} belong to lr_schedule 'multistep', not 'poly'")
        return WarmupPoly(int(total_steps), warmup, power)
    if kind == "multistep":
        if not milestones:
            raise ValueError("lr_schedule 'multistep' needs milestones (Mask2Former's COCO: [327778, 355092])")
        return WarmupMultiStep(resolve_milestones(milestones, int(total_steps)), gamma, warmup)
    raise ValueError(f"lr_schedule must be 'poly' or 'multistep', got {kind!r}")
