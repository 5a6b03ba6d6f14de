"""A folder of images to predict on: every image file under a root, no labels."""

from __future__ import annotations

from pathlib import Path

import torch

from fusionseg.data.base import SegDataset, Transform
from fusionseg.data.errors import DatasetLayoutError
from fusionseg.data.io import read_image
from fusionseg.structures import DatasetInfo, SegTarget

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LAYOUT = "a folder of images (" + ", ".join(IMAGE_SUFFIXES) + "), searched recursively"


class ImageFolderDataset(SegDataset):
    """Images under `root` (recursively, sorted by path) with empty targets, for prediction.

    `image_id` is the path relative to `root` without its suffix (`street/0001`), so predictions
    written under that id mirror the folder's layout. `info` names the label space the
    predictions are in (the training dataset's), for colours.
    """

    def __init__(self, root: str | Path, info: DatasetInfo, transform: Transform | None = None,
                 skip_corrupt: bool = False) -> None:
        super().__init__(task="semantic", transform=transform, skip_corrupt=skip_corrupt)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetLayoutError("image folder", root, f"folder not found: {self.root}", LAYOUT)
        self.info = info
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DatasetLayoutError("image folder", root, f"no image files in {self.root}", LAYOUT)

    def __len__(self) -> int:
        return len(self.files)

    def image_id(self, index: int) -> str:
        return self.files[index].relative_to(self.root).with_suffix("").as_posix()

    def load(self, index: int) -> tuple[torch.Tensor, SegTarget]:
        image = read_image(self.files[index])
        h, w = image.shape[-2:]
        empty = SegTarget(masks=torch.zeros(0, h, w, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.long))
        return image, empty
