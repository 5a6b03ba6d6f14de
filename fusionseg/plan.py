"""The fusion plan: which encoder is the master, which the auxiliary, and where the aux is injected.

It is made by `fusionseg.profiling.plan_fusion` from metric profiles (or written by hand), stored
in checkpoints and reused on resume, validate, test and predict (`fusionseg.fusion.PlannedPyramid`
owns that life). Plans and profiles name encoders by one rule, `encoder_names`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionseg.structures import TASKS

if TYPE_CHECKING:
    from fusionseg.encoders.spec import EncoderSpec

EDGE_TASK = "edge"
PLAN_TASKS = (*TASKS, EDGE_TASK)


def encoder_names(specs: Sequence[EncoderSpec]) -> list[str]:
    """How profiles and plans name encoders: the registry name (`"dinov3"`), or the full spec string
    (`"timm:model_name=resnet18"`) for encoders whose registry name is shared with another one given.

    `fusionseg profile`, the MetricProfiler and the module all name encoders this way, and
    `names_encoder` accepts either form, so a plan made from any set of encoders names them alike.
    """
    full = [str(s) for s in specs]
    if len(set(full)) < len(full):
        raise ValueError(f"encoders {full} are given more than once with the same arguments")
    registry = [s.name for s in specs]
    return [s.name if registry.count(s.name) == 1 else str(s) for s in specs]


def names_encoder(name: str, spec: EncoderSpec) -> bool:
    """Whether a plan's or profile's `name` means `spec`: its registry name or its full spec."""
    if name in (spec.name, str(spec)):
        return True
    if ":" not in name:
        return False
    from fusionseg.encoders.spec import EncoderSpec  # here: plan.py stays importable without the registry

    try:
        return EncoderSpec.parse(name) == spec  # the same spec written with other spacing or argument order
    except ValueError:
        return False


@dataclass(frozen=True)
class FusionPlan:
    """Roles and injection strides of a master-auxiliary fusion.

    `aux=None` with `strides=()` is the single-encoder baseline. `scores` records the numbers
    the choice was made from (e.g. `{"sc_mean": {...}, "ef_peak": {...}, "ef_aux": {stride: ef}}`).
    """

    master: str
    aux: str | None = None
    strides: tuple[int, ...] = ()
    task: str = "semantic"
    scores: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", tuple(sorted(int(s) for s in self.strides)))
        if self.task not in PLAN_TASKS:
            raise ValueError(f"plan task {self.task!r} is not one of {PLAN_TASKS}")
        if self.aux is None and self.strides:
            raise ValueError(f"a plan without an auxiliary encoder cannot inject at strides {self.strides}")
        if self.aux is not None and not self.strides:
            raise ValueError(f"a plan with auxiliary {self.aux!r} needs at least one injection stride")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusionPlan:
        known = {"master", "aux", "strides", "task", "scores"}
        unknown = set(d) - known
        if unknown or "master" not in d:
            raise ValueError(f"a fusion plan has keys {sorted(known)} ('master' required); got {sorted(d)}")
        return cls(**{k: d[k] for k in known if k in d})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=float) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FusionPlan:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def summary(self) -> str:
        """One line for logs: `master=regions (trainable) aux=edges (frozen) injected at stride 16`."""
        if self.aux is None:
            return f"master={self.master} (single encoder, no auxiliary)"
        where = ", ".join(str(s) for s in self.strides)
        return f"master={self.master} aux={self.aux} (frozen) injected at stride {where} [task={self.task}]"
