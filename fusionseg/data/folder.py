"""Images to predict on, no labels: one image file, a folder of images (searched recursively), or a glob."""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path

import torch

from fusionseg.data.base import SegDataset, Transform
from fusionseg.data.errors import DatasetLayoutError
from fusionseg.data.io import read_image
from fusionseg.structures import DatasetInfo, SegTarget

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LAYOUT = (
    "one of:\n"
    "  an image file                 photo.jpg\n"
    "  a folder, searched recursively  images/  (" + ", ".join(IMAGE_SUFFIXES) + ")\n"
    "  a glob pattern (quoted)         'images/**/*.png'\n"
)


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_base(pattern: str) -> Path:
    """The folder a glob's matches are named relative to: its leading parts without wildcards."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_images(root: str | Path) -> tuple[Path, list[Path]]:
    """`(base folder, image files)` for a predict root: a file, a folder (recursive) or a glob pattern.

    Raises `DatasetLayoutError` naming what was given and what is accepted when nothing is found.
    """
    text = os.path.expanduser(str(root))
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetLayoutError("image folder", root, f"{path} is not an image file (suffix {path.suffix!r})",
                                     LAYOUT)
        return path.parent, [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetLayoutError("image folder", root, f"no image files in {path}", LAYOUT)
        return path, files
    if _has_magic(text):
        matches = sorted({Path(p) for p in glob.glob(text, recursive=True)})
        files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            found = f"{len(matches)} match(es), none an image file" if matches else "nothing matches"
            raise DatasetLayoutError("image folder", root, f"glob {text!r}: {found}", LAYOUT)
        return _glob_base(text), files
    raise DatasetLayoutError("image folder", root, f"not found: {path}", LAYOUT)


def unique_ids(base: Path, files: list[Path]) -> list[str]:
    """One id per file: its path under `base` without the suffix (`street/0001`), or with it (`a.jpg`, `a.png`)
    where two files would otherwise share an id, so no prediction overwrites another."""
    stems = [f.relative_to(base).with_suffix("").as_posix() if f.is_relative_to(base) else f.stem for f in files]
    shared = {s for s, n in Counter(stems).items() if n > 1}
    ids = []
    for f, stem in zip(files, stems):
        ids.append(f"{stem}{f.suffix}" if stem in shared else stem)
    if len(set(ids)) != len(ids):  # the same relative path reached twice (a glob over overlapping folders)
        ids = [f.resolve().as_posix().lstrip("/") for f in files]
    return ids


class ImageFolderDataset(SegDataset):
    """Images from `root` (an image file, a folder searched recursively, or a glob) with empty targets, for prediction.

    Files are sorted by path. `image_id` is the path relative to the folder (or the glob's fixed leading
    folders) without its suffix (`street/0001`), so predictions written under that id mirror the folder's
    layout; files that would share an id keep their suffix (`a.jpg`, `a.png`). `info` names the label
    space the predictions are in (the training dataset's), for colours. `skip_corrupt=True`: unreadable
    files are skipped and reported, as in the datasets.
    """

    def __init__(self, root: str | Path, info: DatasetInfo, transform: Transform | None = None,
                 skip_corrupt: bool = False) -> None:
        super().__init__(task="semantic", transform=transform, skip_corrupt=skip_corrupt)
        self.root, self.files = find_images(root)
        self.ids = unique_ids(self.root, self.files)
        self.info = info

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[torch.Tensor, SegTarget]:
        image = read_image(self.files[index])
        h, w = image.shape[-2:]
        empty = SegTarget(masks=torch.zeros(0, h, w, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.long))
        return image, empty
