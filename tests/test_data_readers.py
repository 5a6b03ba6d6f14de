"""Each reader on a tiny dataset written in its official layout: classes, masks and crowd flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dataset_writers import (
    LEFT,
    MIDDLE,
    RIGHT,
    SIZE,
    TOP,
    region_mask,
    write_tiny_ade20k,
    write_tiny_cityscapes,
    write_tiny_coco,
    write_tiny_kitti360,
)

from fusionseg.data import ADE20KDataset, CityscapesDataset, COCODataset, KITTI360Dataset, SegItem
from fusionseg.structures import IGNORE_INDEX, SegTarget


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("tiny")
    return {
        "ade20k": write_tiny_ade20k(base / "ade20k"),
        "cityscapes": write_tiny_cityscapes(base / "cityscapes"),
        "coco": write_tiny_coco(base / "coco"),
        "kitti360": write_tiny_kitti360(base / "kitti360"),
    }


def segments(target: SegTarget) -> set[tuple[int, bool, bytes]]:
    """A target as an order-free set of (class, iscrowd, mask bytes)."""
    return {(int(c), bool(k), m.numpy().tobytes()) for m, c, k in zip(target.masks, target.labels, target.iscrowd)}


def expected(*rows: tuple) -> set[tuple[int, bool, bytes]]:
    out = set()
    for regions, cls, crowd in rows:
        mask = sum(region_mask(r) for r in regions).astype(bool)
        out.add((cls, crowd, torch.from_numpy(mask).numpy().tobytes()))
    return out


def check_item(item: SegItem) -> None:
    assert item.image.shape == (3, *SIZE) and item.image.dtype == torch.float32
    assert 0.0 <= float(item.image.min()) and float(item.image.max()) <= 1.0
    assert item.orig_size == SIZE and item.target.masks.dtype == torch.bool


def test_ade20k_semantic_maps_value_minus_one_and_zero_to_ignore(roots: dict) -> None:
    dataset = ADE20KDataset(roots["ade20k"], split="val", task="semantic")
    item = dataset[0]
    check_item(item)
    assert len(dataset) == 2 and item.image_id == "ADE_val_00000003"
    assert dataset.info.num_classes == 150 and dataset.info.class_names[12] == "person"
    assert segments(item.target) == expected(((TOP,), 0, False), ((LEFT, MIDDLE), 12, False))
    assert (item.target.semantic_map()[RIGHT] == IGNORE_INDEX).all()


def test_ade20k_panoptic_and_instance_from_mask2former_files(roots: dict) -> None:
    panoptic = ADE20KDataset(roots["ade20k"], split="train", task="panoptic")[1].target
    assert segments(panoptic) == expected(((TOP,), 0, False), ((LEFT,), 12, False), ((MIDDLE,), 12, False))
    instance = ADE20KDataset(roots["ade20k"], split="train", task="instance")
    person = instance.info.class_names.index("person")
    assert instance.info.num_classes == 100 and all(instance.info.thing_classes)
    # LEFT is stored as RLE, MIDDLE as a polygon; both decode to the same rectangles.
    assert segments(instance[0].target) == expected(((LEFT,), person, False), ((MIDDLE,), person, False))


def test_cityscapes_semantic_uses_the_19_train_ids(roots: dict) -> None:
    dataset = CityscapesDataset(roots["cityscapes"], split="train", task="semantic")
    item = dataset[0]
    check_item(item)
    assert item.image_id == "aachen_000001_000019" and dataset.info.num_classes == 19
    # road 7 -> 0, car 26 -> 13, person 24 -> 11
    assert segments(item.target) == expected(((TOP,), 0, False), ((LEFT, MIDDLE), 13, False), ((RIGHT,), 11, False))
    assert dataset.info.thing_ids == tuple(range(11, 19))


def test_cityscapes_instance_reads_instance_ids_and_keeps_groups_as_crowd(roots: dict) -> None:
    dataset = CityscapesDataset(roots["cityscapes"], split="val", task="instance")
    car, person = dataset.info.class_names.index("car"), dataset.info.class_names.index("person")
    assert dataset.info.num_classes == 8
    want = expected(((LEFT,), car, False), ((MIDDLE,), car, False), ((RIGHT,), person, True))
    assert segments(dataset[0].target) == want


def test_cityscapes_panoptic_json_and_instance_ids_agree(roots: dict) -> None:
    from_json = CityscapesDataset(roots["cityscapes"], split="val", task="panoptic")
    from_pngs = CityscapesDataset(roots["cityscapes"], split="train", task="panoptic")
    assert from_json.panoptic is not None and from_pngs.panoptic is None
    want = expected(((TOP,), 0, False), ((LEFT,), 13, False), ((MIDDLE,), 13, False), ((RIGHT,), 11, True))
    assert segments(from_json[0].target) == want
    assert segments(from_pngs[0].target) == want


def test_coco_instance_reads_polygons_rle_and_crowd(roots: dict) -> None:
    dataset = COCODataset(roots["coco"], split="val", task="instance")
    item = dataset[1]
    check_item(item)
    assert item.image_id == "4" and dataset.info.num_classes == 80
    car = dataset.info.class_names.index("car")
    assert car == 2  # category id 3 -> contiguous 2
    want = expected(((LEFT,), 0, False), ((MIDDLE,), car, False), ((RIGHT,), 0, True))
    assert segments(item.target) == want


def test_coco_panoptic_decodes_rgb_ids_and_maps_133_categories(roots: dict) -> None:
    dataset = COCODataset(roots["coco"], split="train", task="panoptic")
    sky = dataset.info.class_names.index("sky-other-merged")
    assert dataset.info.num_classes == 133 and len(dataset.info.thing_ids) == 80 and sky == 119
    want = expected(((TOP,), sky, False), ((LEFT,), 0, False), ((MIDDLE,), 2, False), ((RIGHT,), 0, True))
    assert segments(dataset[0].target) == want
    semantic = COCODataset(roots["coco"], split="train", task="semantic")[0].target
    assert segments(semantic) == expected(((TOP,), sky, False), ((LEFT, RIGHT), 0, False), ((MIDDLE,), 2, False))


def test_kitti360_instance_follows_the_frame_lists(roots: dict) -> None:
    dataset = KITTI360Dataset(roots["kitti360"], split="val", task="instance")
    item = dataset[0]
    check_item(item)
    assert len(dataset) == 2 and item.image_id == "0000_0000000003"
    names = dataset.info.class_names
    assert names == ("building", "person", "rider", "car", "truck", "motorcycle", "bicycle")
    car, person = names.index("car"), names.index("person")
    assert segments(item.target) == expected(((LEFT,), car, False), ((MIDDLE,), car, False), ((RIGHT,), person, True))
    semantic = KITTI360Dataset(roots["kitti360"], split="train", task="semantic")[0].target
    assert segments(semantic) == expected(((TOP,), 0, False), ((LEFT, MIDDLE), 13, False), ((RIGHT,), 11, False))


def test_readers_reject_tasks_they_do_not_have(roots: dict) -> None:
    with pytest.raises(ValueError, match="supports tasks"):
        KITTI360Dataset(roots["kitti360"], task="panoptic")


def test_images_are_read_upright(tmp_path: Path) -> None:
    from PIL import Image

    from fusionseg.data.io import read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "sideways.jpg", exif=exif)
    assert read_image(tmp_path / "sideways.jpg").shape == (3, 20, 10)


def test_kitti360_garage_instances_count_as_buildings() -> None:
    # The official instance evaluation (kitti360Scripts' instances2dict.py) merges garage into building.
    from fusionseg.data.labels.kitti360 import KITTI360_LABELS, kitti360_info, semantic_id_to_instance_class

    ids = {row[0]: row[1] for row in KITTI360_LABELS}
    mapping = semantic_id_to_instance_class()
    names = kitti360_info("instance").class_names
    assert names[mapping[ids["garage"]]] == names[mapping[ids["building"]]] == "building"
    assert len(set(mapping.values())) == len(names) == 7
