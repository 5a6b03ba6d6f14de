"""Bad data gets errors that say what is wrong and where: layouts, unreadable files, out-of-range labels."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from dataset_writers import SIZE, write_tiny_ade20k, write_tiny_cityscapes, write_tiny_coco
from PIL import Image

from fusionseg.data import (
    ADE20KDataset,
    CityscapesDataset,
    COCODataset,
    CorruptFileError,
    DatasetLayoutError,
    LabelRangeError,
    SegDataModule,
)


def test_missing_root_prints_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as info:
        ADE20KDataset(tmp_path / "nowhere", split="train")
    message = str(info.value)
    assert "root folder not found" in message and str(tmp_path / "nowhere") in message
    assert "images/{training,validation}/ADE_*.jpg" in message and "annotations/{training,validation}" in message


def test_missing_root_argument_and_missing_split_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="pass root=PATH"):
        SegDataModule(dataset="cityscapes", root=None).setup("fit")
    root = write_tiny_cityscapes(tmp_path)
    with pytest.raises(DatasetLayoutError) as info:
        CityscapesDataset(root, split="test")
    assert "test images not found" in str(info.value) and "leftImg8bit/{train,val,test}/<city>/" in str(info.value)


def test_missing_annotation_file_names_it(tmp_path: Path) -> None:
    root = write_tiny_ade20k(tmp_path)
    (root / "ADEChallengeData2016" / "ade20k_panoptic_val.json").unlink()
    with pytest.raises(DatasetLayoutError) as info:
        ADE20KDataset(root, split="val", task="panoptic")
    assert "panoptic JSON not found" in str(info.value) and "ade20k_panoptic_val.json" in str(info.value)


@pytest.fixture
def ade_with_corrupt_image(tmp_path: Path) -> tuple[Path, Path]:
    root = write_tiny_ade20k(tmp_path)
    bad = root / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return root, bad


def test_unreadable_image_fails_with_its_path(ade_with_corrupt_image: tuple[Path, Path]) -> None:
    root, bad = ade_with_corrupt_image
    dataset = ADE20KDataset(root, split="train")
    with pytest.raises(CorruptFileError) as info:
        dataset[0]
    assert info.value.path == bad and str(bad) in str(info.value) and "skip_corrupt=True" in str(info.value)
    assert dataset[1].image_id == "ADE_train_00000002"


def test_truncated_label_fails_with_its_path(tmp_path: Path) -> None:
    root = write_tiny_cityscapes(tmp_path)
    label = root / "gtFine" / "val" / "aachen" / "aachen_000003_000019_gtFine_labelIds.png"
    label.write_bytes(label.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="aachen_000003_000019_gtFine_labelIds.png"):
        CityscapesDataset(root, split="val", task="semantic")[0]


def test_skip_corrupt_replaces_the_item_and_names_the_file(ade_with_corrupt_image: tuple[Path, Path]) -> None:
    root, bad = ade_with_corrupt_image
    item = ADE20KDataset(root, split="train", skip_corrupt=True)[0]
    assert item.image_id == "ADE_train_00000002" and item.skipped == (str(bad),)


def test_skip_corrupt_is_counted_and_reported_at_the_end_of_the_epoch(
    ade_with_corrupt_image: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = ade_with_corrupt_image
    data = SegDataModule("ade20k", str(root), crop_size=32, batch_size=2, num_workers=0, skip_corrupt=True)
    data.setup("fit")
    loader = data.train_dataloader()
    with caplog.at_level(logging.WARNING, logger="fusionseg.data"):
        batches = list(loader)
    assert len(batches) == 1 and len(batches[0].image_ids) == 2  # the batch stays full
    assert loader.skipped_files == [str(bad)]
    report = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(report) == 1 and "skipped 1 unreadable file(s)" in report[0] and str(bad) in report[0]


def test_out_of_range_semantic_ids_name_file_and_values(tmp_path: Path) -> None:
    root = write_tiny_ade20k(tmp_path)
    path = root / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000003.png"
    label = np.ones(SIZE, dtype=np.uint8)
    label[0, :2] = (151, 200)
    Image.fromarray(label).save(path)
    with pytest.raises(LabelRangeError) as info:
        ADE20KDataset(root, split="val")[0]
    assert info.value.path == path and info.value.values == [151, 200]
    assert str(path) in str(info.value) and "151, 200" in str(info.value) and "0..150" in str(info.value)


def test_out_of_range_instance_ids_name_file_and_values(tmp_path: Path) -> None:
    root = write_tiny_cityscapes(tmp_path)
    path = root / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_instanceIds.png"
    Image.fromarray(np.full(SIZE, 40001, dtype=np.uint16)).save(path)
    with pytest.raises(LabelRangeError, match="40001"):
        CityscapesDataset(root, split="train", task="instance")[0]


def test_unknown_coco_category_names_the_json_and_the_id(tmp_path: Path) -> None:
    root = write_tiny_coco(tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(LabelRangeError) as info:
        COCODataset(root, split="val", task="instance")
    assert info.value.values == [999] and str(path) in str(info.value)


def test_panoptic_png_with_unlisted_segment_fails(tmp_path: Path) -> None:
    root = write_tiny_coco(tmp_path)
    path = root / "panoptic_val2017" / "000000000003.png"
    rgb = np.asarray(Image.open(path)).copy()
    rgb[0, 0] = (7, 0, 0)  # segment id 7 is not in the JSON
    Image.fromarray(rgb).save(path)
    with pytest.raises(LabelRangeError, match="000000000003.png: label ids out of range: 7"):
        COCODataset(root, split="val", task="panoptic")[0]
