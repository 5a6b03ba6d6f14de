"""`Profile`: per encoder and stride, mean and std over images of the ten metrics (and the optional fields).

A `Profile` keeps, per metric, the mean, the population std and the number of images. It is built
from per-image values (`ProfileAccumulator.compute()`), saves to and loads from JSON and CSV, and
prints as the encoders x strides table of the metrics spec.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fusionseg.metrics import MAP_SIDE, METRIC_NAMES
from fusionseg.profiling.measure import EXTRA_METRICS, NONFINITE

PROFILE_FORMAT = "fusionseg-profile"
PROFILE_VERSION = 1

Values = Mapping[str, Mapping[int, Mapping[str, Tensor | Sequence[float]]]]



def optional_fields() -> tuple[str, ...]:
    """Recorded when the values carry them (`measure_pyramid` does), absent from older or hand-made profiles."""
    return (MAP_SIDE, NONFINITE, *EXTRA_METRICS)


def fields_of(metrics: Collection[str]) -> tuple[str, ...]:
    """The ten metrics, plus the optional fields among `metrics` (names, or a mapping keyed by them)."""
    return METRIC_NAMES + tuple(f for f in optional_fields() if f in metrics)


@dataclass(frozen=True)
class MetricStat:
    """Mean and population std of one metric over `count` images."""

    mean: float
    std: float
    count: int

    @classmethod
    def of(cls, values: Tensor | Sequence[float]) -> MetricStat:
        v = torch.as_tensor(values, dtype=torch.float64).flatten()
        if v.numel() == 0:
            raise ValueError("a metric statistic needs at least one value")
        return cls(float(v.mean()), float(v.std(correction=0)), int(v.numel()))


class Profile:
    """Per encoder, per stride: mean and std over images of the ten metrics, and the number of images.

    >>> p = Profile.from_values({"regions": {4: {m: [0.5, 0.7] for m in METRIC_NAMES}}})
    >>> round(p.mean("regions", 4, "sc"), 3), p.num_images("regions")
    (0.6, 2)
    """

    def __init__(self, stats: Mapping[str, Mapping[int, Mapping[str, MetricStat]]]) -> None:
        self.stats: dict[str, dict[int, dict[str, MetricStat]]] = {}
        for encoder, strides in stats.items():
            if not strides:
                raise ValueError(f"profile of encoder {encoder!r} has no strides")
            self.stats[encoder] = {}
            for stride, metrics in sorted((int(s), m) for s, m in strides.items()):
                missing = [m for m in METRIC_NAMES if m not in metrics]
                if missing:
                    raise ValueError(f"profile of {encoder!r} at stride {stride} lacks metrics {missing}")
                self.stats[encoder][stride] = {m: metrics[m] for m in fields_of(metrics)}

    # -- reading ----------------------------------------------------------------------------
    @property
    def encoders(self) -> list[str]:
        return list(self.stats)

    def strides(self, encoder: str) -> list[int]:
        return list(self._encoder(encoder))

    def _encoder(self, encoder: str) -> dict[int, dict[str, MetricStat]]:
        if encoder not in self.stats:
            raise KeyError(f"no profile of encoder {encoder!r}; profiled: {self.encoders}")
        return self.stats[encoder]

    def stat(self, encoder: str, stride: int, metric: str) -> MetricStat:
        strides = self._encoder(encoder)
        if stride not in strides:
            raise KeyError(f"encoder {encoder!r} was profiled at strides {list(strides)}, not {stride}")
        if metric not in strides[stride]:
            raise KeyError(f"unknown metric {metric!r}; metrics: {list(strides[stride])}")
        return strides[stride][metric]

    def mean(self, encoder: str, stride: int, metric: str) -> float:
        return self.stat(encoder, stride, metric).mean

    def std(self, encoder: str, stride: int, metric: str) -> float:
        return self.stat(encoder, stride, metric).std

    def curve(self, encoder: str, metric: str) -> dict[int, float]:
        """`{stride: mean}` of one metric of one encoder."""
        return {s: self.mean(encoder, s, metric) for s in self.strides(encoder)}

    def map_side(self, encoder: str, stride: int) -> float | None:
        """Mean shorter side of the feature maps at that stride, when the profile recorded it."""
        stat = self._encoder(encoder).get(stride, {}).get(MAP_SIDE)
        return None if stat is None else stat.mean

    def num_images(self, encoder: str) -> int:
        return next(iter(self._encoder(encoder).values()))[METRIC_NAMES[0]].count

    def nonfinite(self, encoder: str, stride: int) -> int | None:
        """How many images had a NaN or infinite feature map at that stride (None when unrecorded)."""
        stat = self._encoder(encoder).get(stride, {}).get(NONFINITE)
        return None if stat is None else round(stat.mean * stat.count)

    def nonfinite_report(self) -> list[str]:
        """One line per encoder with non-finite feature maps: at which strides, in how many images."""
        lines = []
        for encoder in self.encoders:
            counts = {s: n for s in self.strides(encoder) if (n := self.nonfinite(encoder, s))}
            if counts:
                where = ", ".join(f"stride {s}: {n}" for s, n in counts.items())
                lines.append(f"{encoder}: non-finite (NaN/Inf) feature maps in {where} of "
                             f"{self.num_images(encoder)} images (they score 0)")
        return lines

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.stats == other.stats

    def __repr__(self) -> str:
        return f"Profile({', '.join(f'{e}: {self.num_images(e)} images' for e in self.encoders)})"

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_values(cls, values: Values) -> Profile:
        """From per-image values `{encoder: {stride: {metric: (N,) values}}}`."""
        return cls(
            {
                encoder: {int(s): {m: MetricStat.of(v) for m, v in metrics.items()} for s, metrics in strides.items()}
                for encoder, strides in values.items()
            }
        )

    # -- JSON and CSV ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "metrics": list(METRIC_NAMES),
            "encoders": {
                encoder: {
                    "num_images": self.num_images(encoder),
                    "strides": {
                        str(s): {m: {"mean": st.mean, "std": st.std} for m, st in metrics.items()}
                        for s, metrics in strides.items()
                    },
                }
                for encoder, strides in self.stats.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        if d.get("format") != PROFILE_FORMAT or "encoders" not in d:
            raise ValueError(f"not a fusionseg profile: expected {{'format': {PROFILE_FORMAT!r}, 'encoders': ...}}")
        return cls(
            {
                encoder: {
                    int(s): {
                        m: MetricStat(float(v["mean"]), float(v["std"]), int(entry["num_images"]))
                        for m, v in metrics.items()
                    }
                    for s, metrics in entry["strides"].items()
                }
                for encoder, entry in d["encoders"].items()
            }
        )

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> Profile:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def _csv_fields(self) -> tuple[str, ...]:
        """The metrics, plus each optional field that every encoder and stride recorded."""
        rows = [metrics for strides in self.stats.values() for metrics in strides.values()]
        return METRIC_NAMES + tuple(f for f in optional_fields() if all(f in m for m in rows))

    def csv_header(self) -> list[str]:
        return ["encoder", "stride", "num_images"] + [f"{m}_{k}" for m in self._csv_fields() for k in ("mean", "std")]

    def to_csv(self) -> str:
        """One row per encoder and stride: `encoder, stride, num_images, sc_mean, sc_std, ...`."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.csv_header())
        fields = self._csv_fields()
        for encoder, strides in self.stats.items():
            for stride, metrics in strides.items():
                row = [encoder, stride, self.num_images(encoder)]
                writer.writerow(row + [repr(v) for m in fields for v in (metrics[m].mean, metrics[m].std)])
        return out.getvalue()

    def save_csv(self, path: str | Path) -> None:
        Path(path).write_text(self.to_csv())

    @classmethod
    def from_csv(cls, text: str) -> Profile:
        rows = list(csv.DictReader(io.StringIO(text)))
        needed = ["encoder", "stride", "num_images"] + [f"{m}_mean" for m in METRIC_NAMES]
        if not rows or any(col not in rows[0] for col in needed):
            raise ValueError(f"a profile CSV needs a header with {needed} (and *_std) and at least one row")
        fields = fields_of({c[: -len("_mean")] for c in rows[0] if c.endswith("_mean")})
        stats: dict[str, dict[int, dict[str, MetricStat]]] = {}
        for row in rows:
            n = int(row["num_images"])
            stats.setdefault(row["encoder"], {})[int(row["stride"])] = {
                m: MetricStat(float(row[f"{m}_mean"]), float(row.get(f"{m}_std") or 0.0), n) for m in fields
            }
        return cls(stats)

    @classmethod
    def load_csv(cls, path: str | Path) -> Profile:
        return cls.from_csv(Path(path).read_text())

    # -- terminal ------------------------------------------------------------------------------
    def recorded(self, metrics: Sequence[str]) -> list[str]:
        """Those of `metrics` that every encoder and stride recorded (optional fields may be missing)."""
        rows = [m for strides in self.stats.values() for m in strides.values()]
        return [m for m in metrics if all(m in row for row in rows)]

    def table(self, metrics: Sequence[str] = ("sc", "ef"), std: bool = True) -> str:
        """Encoders x strides, one line per metric, like the spec's reference figures (unrecorded ones left out)."""
        metrics = self.recorded(metrics)
        strides = sorted({s for e in self.encoders for s in self.strides(e)})
        head = ["encoder", "metric"] + [f"OS {s}" for s in strides]
        lines = [head]
        for encoder in self.encoders:
            for metric in metrics:
                cells = [encoder, metric.upper()]
                for s in strides:
                    if s not in self.stats[encoder]:
                        cells.append("-")
                        continue
                    st = self.stats[encoder][s][metric]
                    digits = 2 if metric in ("ef", "ef_cc", "fcd") else 3
                    cells.append(f"{st.mean:.{digits}f}" + (f" ±{st.std:.{digits}f}" if std else ""))
                lines.append(cells)
        widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
        def line(row: list[str]) -> str:  # names left-aligned, numbers right-aligned
            return " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        text = [line(row) for row in lines]
        text.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(text)
