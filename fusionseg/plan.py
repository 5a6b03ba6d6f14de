"""The fusion plan: which encoder is the master, which the auxiliary, and where the aux is injected.

It is made by `fusionseg.profiling.plan_fusion` from metric profiles (or written by hand), stored
in checkpoints and reused on resume, validate, test and predict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PLAN_TASKS = ("semantic", "instance", "panoptic", "edge")


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
