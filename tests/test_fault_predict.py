"""`predict` inputs: an image file, a folder or a glob; outputs never overwrite one another; unreadable images
are skipped and counted with `skip_corrupt`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionseg.data import SegDataModule
from fusionseg.data.errors import CorruptFileError, DatasetLayoutError
from fusionseg.data.folder import ImageFolderDataset, find_images, unique_ids
from fusionseg.data.synthetic import synthetic_info

INFO = synthetic_info("semantic")


def _image(path: Path, size: int = 20, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def test_images_that_share_a_name_keep_their_suffix_so_neither_prediction_is_lost(tmp_path):
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "a.png")
    _image(tmp_path / "street" / "0001.png")
    data = ImageFolderDataset(tmp_path, INFO)
    assert [data.image_id(i) for i in range(len(data))] == ["a.jpg", "a.png", "street/0001"]


def test_a_single_image_file_is_a_predict_root(tmp_path):
    path = _image(tmp_path / "photos" / "cat.webp")
    data = ImageFolderDataset(path, INFO)
    assert len(data) == 1 and data.image_id(0) == "cat" and data[0].image.shape == (3, 20, 20)


def test_a_glob_is_a_predict_root_and_ids_are_relative_to_its_fixed_folders(tmp_path):
    _image(tmp_path / "x" / "img.png")
    _image(tmp_path / "y" / "img.png")
    _image(tmp_path / "y" / "other.jpg")
    data = ImageFolderDataset(str(tmp_path / "*" / "img.png"), INFO)
    assert [data.image_id(i) for i in range(len(data))] == ["x/img", "y/img"]
    recursive = ImageFolderDataset(str(tmp_path / "**" / "*.jpg"), INFO)
    assert [recursive.image_id(i) for i in range(len(recursive))] == ["y/other"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: root / "missing", "not found"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no image files"),
    (lambda root: str(root / "*.gif"), "nothing matches"),
    (lambda root: (root / "notes.txt").write_text("x") and root / "notes.txt", "is not an image file"),
])
def test_a_root_with_nothing_to_predict_names_what_is_accepted(tmp_path, make, message):
    with pytest.raises(DatasetLayoutError, match=message) as err:
        find_images(make(tmp_path))
    assert "a glob pattern" in str(err.value) and "an image file" in str(err.value)


def test_ids_are_unique_for_any_set_of_names():
    base = Path("/data")
    files = [base / n for n in ("a.jpg", "a.png", "a.JPG", "b.png", "s/a.png", "s/a.tif")]
    ids = unique_ids(base, files)
    assert len(set(ids)) == len(ids) and ids[3] == "b"


def test_predict_skips_and_counts_unreadable_images_with_skip_corrupt(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not an image")
    _image(tmp_path / "c.png")
    strict = SegDataModule(predict_root=str(tmp_path), num_workers=0)
    strict.setup("predict")
    with pytest.raises(CorruptFileError, match="b.jpg"):
        list(strict.predict_dataloader())

    data = SegDataModule(predict_root=str(tmp_path), num_workers=0, skip_corrupt=True)
    data.setup("predict")
    loader = data.predict_dataloader()
    ids = [i for batch in loader for i in batch.image_ids]
    assert ids == ["a", "c", "c"]  # the unreadable one's place is taken by the next image
    assert loader.skipped_files == [str(tmp_path / "b.jpg")]
