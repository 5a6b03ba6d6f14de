"""Errors for data that is not where or what it should be; each one says what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class DatasetLayoutError(FileNotFoundError):
    """A dataset root, split folder or annotation file is missing. The message shows the expected tree."""

    def __init__(self, dataset: str, root: str | Path | None, problem: str, layout: str) -> None:
        self.dataset, self.root, self.problem, self.layout = dataset, root, problem, layout
        super().__init__(
            f"{dataset}: {problem}\n"
            f"fusionseg reads {dataset} in its official layout, under root={str(root)!r}:\n{layout.rstrip()}"
        )


class CorruptFileError(RuntimeError):
    """An image or label file could not be read. `path` names it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"could not read {self.path}: {reason}. Replace the file, or pass skip_corrupt=True to skip "
            f"unreadable files (they are counted and reported at the end of each epoch)"
        )


class LabelRangeError(ValueError):
    """A label file holds ids outside the dataset's range. `path` and `values` name them."""

    def __init__(self, path: str | Path, values: Iterable[int], valid: str) -> None:
        self.path = Path(path)
        self.values = sorted(int(v) for v in values)
        shown = ", ".join(map(str, self.values[:20])) + (" ..." if len(self.values) > 20 else "")
        super().__init__(
            f"{self.path}: label ids out of range: {shown} (valid: {valid}). The file does not match "
            f"the dataset's label definition; check that it is the right dataset, split and annotation type"
        )
