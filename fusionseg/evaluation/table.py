"""Results as Markdown tables: a summary row in the paper's style, then one row per class."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from torch import Tensor

SUMMARY_COLUMNS = {
    "semantic": ("mIoU", "boundary_mIoU"),
    "instance": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "panoptic": ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU"),
}
PER_CLASS_COLUMNS = {
    "semantic": ("IoU", "boundary_IoU"),
    "instance": ("AP", "AP50"),
    "panoptic": ("PQ", "SQ", "RQ", "IoU"),
}
HEADERS = {"boundary_mIoU": "boundary mIoU", "boundary_IoU": "boundary IoU"}


def _cell(value: float | Tensor | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "-" if math.isnan(value) else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_results(task: str, results: Mapping[str, float | Tensor], class_names: Sequence[str]) -> str:
    """The summary table (only the columns present in `results`), then the per-class table."""
    summary = [c for c in SUMMARY_COLUMNS[task] if c in results]
    parts = [_table([HEADERS.get(c, c) for c in summary], [[_cell(results[c]) for c in summary]])]
    columns = [c for c in PER_CLASS_COLUMNS[task] if any(f"{c}/{n}" in results for n in class_names)]
    if columns:
        rows = [[name, *(_cell(results.get(f"{c}/{name}")) for c in columns)] for name in class_names]
        parts.append(_table(["class", *(HEADERS.get(c, c) for c in columns)], rows))
    return "\n\n".join(parts)
