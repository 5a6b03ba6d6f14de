"""Tiny datasets in the official on-disk layouts, written by tests (real PNG / JPEG / JSON files).

Each writer takes a folder, writes 2 train and 2 val images of `SIZE` (H, W) with the same label geometry,
and returns the path to pass as `root=`. The geometry (rows, columns) every writer uses:

    TOP = rows [0, 12)           a stuff region
    LEFT = rows [12, 24), cols [0, 10)      a thing instance
    MIDDLE = rows [12, 24), cols [10, 20)   a second instance of the same thing class
    RIGHT = rows [12, 24), cols [20, 32)    a crowd / group region, or unlabeled (see each writer)

Usage in other tests: `from dataset_writers import write_tiny_ade20k; root = write_tiny_ade20k(tmp_path)`.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (24, 32)
TOP = (slice(0, 12), slice(0, 32))
LEFT = (slice(12, 24), slice(0, 10))
MIDDLE = (slice(12, 24), slice(10, 20))
RIGHT = (slice(12, 24), slice(20, 32))
SPLITS = {"train": ("0001", "0002"), "val": ("0003", "0004")}


def region_mask(region: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros(SIZE, dtype=bool)
    mask[region] = True
    return mask


def _write_image(path: Path, seed: int, size: tuple[int, int] = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.uint16 or array.max() > 255:
        Image.fromarray(array.astype(np.uint16)).save(path)  # 16-bit grayscale ("I;16")
    else:
        Image.fromarray(array.astype(np.uint8)).save(path)


def _panoptic_png(path: Path, segment_ids: np.ndarray) -> None:
    rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1)
    _write_png(path, rgb.astype(np.uint8))


def _segment_info(segment_id: int, category_id: int, iscrowd: int, mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {"id": segment_id, "category_id": category_id, "iscrowd": iscrowd, "area": int(mask.sum()), "bbox": bbox}


def _rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """COCO RLE of a mask; `compressed=False` gives the uncompressed form COCO uses for crowd regions."""
    from pycocotools import mask as mask_utils

    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def _polygon(region: tuple[slice, slice]) -> list[list[float]]:
    (r, c) = region
    x0, x1, y0, y1 = c.start, c.stop, r.start, r.stop
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_tiny_ade20k(root: str | Path) -> Path:
    """ADEChallengeData2016 with semantic PNGs and Mask2Former's panoptic and instance files.

    Semantic PNG values: TOP = 1 (wall, class 0), LEFT and MIDDLE = 13 (person, class 12), RIGHT = 0
    (unlabeled). Panoptic: wall + two person instances. Instance JSON: the two persons (LEFT as RLE,
    MIDDLE as a polygon), category id 12 (the 150-class id). Returns `root` (which holds ADEChallengeData2016).
    """
    from fusionseg.data.labels.ade20k import ADE20K_CLASSES

    root = Path(root)
    base = root / "ADEChallengeData2016"
    categories = [
        {"id": i, "name": n, "isthing": int(t), "color": list(c)} for i, (n, t, c) in enumerate(ADE20K_CLASSES)
    ]
    for split, numbers in SPLITS.items():
        folder = {"train": "training", "val": "validation"}[split]
        pan_images, pan_anns, ins_images, ins_anns = [], [], [], []
        for n, number in enumerate(numbers):
            image_id = f"ADE_{split}_0000{number}"
            _write_image(base / "images" / folder / f"{image_id}.jpg", seed=int(number))
            semantic = np.zeros(SIZE, dtype=np.uint8)
            semantic[TOP], semantic[LEFT], semantic[MIDDLE] = 1, 13, 13
            _write_png(base / "annotations" / folder / f"{image_id}.png", semantic)
            ids = np.zeros(SIZE, dtype=np.int64)
            ids[TOP], ids[LEFT], ids[MIDDLE] = 1, 2, 3
            _panoptic_png(base / f"ade20k_panoptic_{split}" / f"{image_id}.png", ids)
            record = {"id": image_id, "file_name": f"{image_id}.jpg", "height": SIZE[0], "width": SIZE[1]}
            pan_images.append(record)
            ins_images.append(record)
            segments = [
                _segment_info(1, 0, 0, region_mask(TOP)),
                _segment_info(2, 12, 0, region_mask(LEFT)),
                _segment_info(3, 12, 0, region_mask(MIDDLE)),
            ]
            pan_anns.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
            for k, (region, segm) in enumerate(((LEFT, _rle(region_mask(LEFT))), (MIDDLE, _polygon(MIDDLE)))):
                ann = _segment_info(10 * n + k + 1, 12, 0, region_mask(region))
                ins_anns.append({**ann, "image_id": image_id, "segmentation": segm})
        things = [c for c in categories if c["isthing"]]
        (base / f"ade20k_panoptic_{split}.json").write_text(
            json.dumps({"images": pan_images, "annotations": pan_anns, "categories": categories})
        )
        (base / f"ade20k_instance_{split}.json").write_text(
            json.dumps({"images": ins_images, "annotations": ins_anns, "categories": things})
        )
    return root


def write_tiny_cityscapes(root: str | Path, panoptic_json: bool = True) -> Path:
    """leftImg8bit + gtFine (labelIds, 16-bit instanceIds) for city "aachen"; for "val" also the panoptic
    JSON + PNGs made by the official converter (cityscapesScripts' createPanopticImgs.py, label ids) when
    `panoptic_json`.

    labelIds: TOP = 7 (road, train id 0), LEFT and MIDDLE = 26 (car, train id 13), RIGHT = 24 (person,
    train id 11). instanceIds: TOP = 7, LEFT = 26000, MIDDLE = 26001, RIGHT = 24 (a person group: crowd).
    """
    root = Path(root)
    for split, numbers in SPLITS.items():
        for number in numbers:
            instance = np.zeros(SIZE, dtype=np.int64)
            instance[TOP], instance[LEFT], instance[MIDDLE], instance[RIGHT] = 7, 26000, 26001, 24
            write_cityscapes_frame(root, split, f"aachen_00{number}_000019", instance, seed=int(number))
    if panoptic_json:
        from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

        with contextlib.redirect_stdout(io.StringIO()):
            convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), setNames=["val"])
    return root


def write_tiny_coco(root: str | Path) -> Path:
    """{train,val}2017 JPEGs, instances_*2017.json and panoptic_*2017.json + PNGs.

    Instances: LEFT person (category 1) as a polygon, MIDDLE car (category 3) as compressed RLE, RIGHT a
    person crowd region (iscrowd=1, uncompressed RLE). Panoptic: TOP sky-other-merged (187), LEFT person,
    MIDDLE car, RIGHT person crowd. Image ids: 1, 2 (train) and 3, 4 (val).
    """
    from fusionseg.data.labels.coco import COCO_CATEGORIES

    root = Path(root)
    categories = [{"id": i, "name": n, "isthing": int(t), "color": list(c)} for i, n, t, c in COCO_CATEGORIES]
    for split, numbers in SPLITS.items():
        images, instances, panoptic = [], [], []
        for number in numbers:
            image_id = int(number)
            file_name = f"{image_id:012d}.jpg"
            _write_image(root / f"{split}2017" / file_name, seed=image_id)
            images.append({"id": image_id, "file_name": file_name, "height": SIZE[0], "width": SIZE[1]})
            regions = ((LEFT, 1, 0, _polygon(LEFT)), (MIDDLE, 3, 0, _rle(region_mask(MIDDLE))),
                       (RIGHT, 1, 1, _rle(region_mask(RIGHT), compressed=False)))
            for k, (region, category, crowd, segm) in enumerate(regions):
                ann = _segment_info(100 * image_id + k, category, crowd, region_mask(region))
                instances.append({**ann, "image_id": image_id, "segmentation": segm})
            ids = np.zeros(SIZE, dtype=np.int64)
            ids[TOP], ids[LEFT], ids[MIDDLE], ids[RIGHT] = 5, 300, 70000, 1234
            segments = [
                _segment_info(5, 187, 0, region_mask(TOP)),
                _segment_info(300, 1, 0, region_mask(LEFT)),
                _segment_info(70000, 3, 0, region_mask(MIDDLE)),
                _segment_info(1234, 1, 1, region_mask(RIGHT)),
            ]
            png_name = file_name.replace(".jpg", ".png")
            _panoptic_png(root / f"panoptic_{split}2017" / png_name, ids)
            panoptic.append({"image_id": image_id, "file_name": png_name, "segments_info": segments})
        annotations = root / "annotations"
        annotations.mkdir(parents=True, exist_ok=True)
        things = [c for c in categories if c["isthing"]]
        (annotations / f"instances_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": instances, "categories": things})
        )
        (annotations / f"panoptic_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": panoptic, "categories": categories})
        )
    return root


def write_tiny_kitti360(root: str | Path) -> Path:
    """data_2d_raw + data_2d_semantics (semantic, 16-bit instance PNGs) and the train/val frame lists.

    semantic: TOP = 7 (road), LEFT and MIDDLE = 26 (car), RIGHT = 24 (person). instance: TOP = 7,
    LEFT = 26001, MIDDLE = 26002, RIGHT = 24 (person without instance ids: crowd).
    """
    root = Path(root)
    sequence = "2013_05_28_drive_0000_sync"
    semantics = root / "data_2d_semantics" / "train"
    for split, numbers in SPLITS.items():
        lines = []
        for number in numbers:
            frame = f"000000{number}"
            image = f"data_2d_raw/{sequence}/image_00/data_rect/{frame}.png"
            semantic_path = f"data_2d_semantics/train/{sequence}/image_00/semantic/{frame}.png"
            _write_image(root / image, seed=int(number))
            label = np.zeros(SIZE, dtype=np.uint8)
            label[TOP], label[LEFT], label[MIDDLE], label[RIGHT] = 7, 26, 26, 24
            _write_png(root / semantic_path, label)
            instance = label.astype(np.int32)
            instance[LEFT], instance[MIDDLE] = 26001, 26002
            _write_png(semantics / sequence / "image_00" / "instance" / f"{frame}.png", instance.astype(np.uint16))
            lines.append(f"{image} {semantic_path}")
        semantics.mkdir(parents=True, exist_ok=True)
        (semantics / f"2013_05_28_drive_{split}_frames.txt").write_text("\n".join(lines) + "\n")
    return root


# Random Cityscapes frames for the evaluation parity tests: label ids as in cityscapesScripts' labels.py.
STUFF_LABEL_IDS = (7, 8, 11, 17, 21, 23)  # road, sidewalk, building, pole, vegetation, sky
VOID_LABEL_IDS = (0, 4, 1, 9, 18, 29)  # unlabeled, static, ego vehicle, parking, polegroup, caravan (group)
EVALUATED_THING_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)  # person .. bicycle (caravan, trailer are not)


def random_cityscapes_instance_ids(
    rng: np.random.Generator,
    height: int,
    width: int,
    stuff: tuple[int, ...] = STUFF_LABEL_IDS,
    void: tuple[int, ...] = VOID_LABEL_IDS,
    things: tuple[int, ...] = EVALUATED_THING_LABEL_IDS,
    ignored_instances: tuple[int, ...] = (29,),
) -> np.ndarray:
    """A `*_instanceIds.png` array: `stuff` and void background, then overlapping boxes of instances of
    `things` (label id * 1000 + k, some under 100 px), their group regions (the label id) and `void`
    regions, and now and then an instance of a class the evaluation ignores (Cityscapes: caravan).
    KITTI-360's instance PNGs use the same encoding with its semantic ids."""
    ids = np.zeros((height, width), dtype=np.int64)
    cut = sorted(rng.integers(0, height, size=3).tolist())
    for (top, bottom), label in zip(zip([0, *cut], [*cut, height]), rng.choice(stuff + void[:2], size=4)):
        ids[top:bottom] = label
    count = {}
    for _ in range(int(rng.integers(3, 12))):
        h, w = int(rng.integers(3, height // 2 + 2)), int(rng.integers(3, width // 2 + 2))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        kind = rng.choice(["instance", "group", "void", "caravan"], p=[0.7, 0.12, 0.12, 0.06])
        label = int(rng.choice(things))
        if kind == "instance":
            count[label] = count.get(label, 0) + 1
            value = label * 1000 + count[label]
        elif kind == "group":
            value = label
        elif kind == "void":
            value = int(rng.choice(void))
        else:
            value = int(rng.choice(ignored_instances)) * 1000 + int(rng.integers(0, 5))
        ids[y : y + h, x : x + w] = value
    return ids


def write_cityscapes_frame(root: str | Path, split: str, stem: str, instance_ids: np.ndarray, seed: int = 0) -> None:
    """One Cityscapes frame: `leftImg8bit`, `*_gtFine_instanceIds.png` (16-bit) and `*_gtFine_labelIds.png`."""
    root, city = Path(root), stem.split("_")[0]
    _write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=seed, size=instance_ids.shape)
    gt = root / "gtFine" / split / city
    _write_png(gt / f"{stem}_gtFine_instanceIds.png", instance_ids.astype(np.uint16))
    labels = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
    _write_png(gt / f"{stem}_gtFine_labelIds.png", labels.astype(np.uint8))


def write_kitti360_frame(root: str | Path, frame: int, instance_ids: np.ndarray, split: str = "val") -> None:
    """One KITTI-360 frame of sequence 0000 (image, semantic, 16-bit instance PNG and a confidence map of ones,
    as the official evaluation reads them), appended to `2013_05_28_drive_<split>_frames.txt`."""
    root, sequence, name = Path(root), "2013_05_28_drive_0000_sync", f"{frame:010d}.png"
    image = f"data_2d_raw/{sequence}/image_00/data_rect/{name}"
    semantic = f"data_2d_semantics/train/{sequence}/image_00/semantic/{name}"
    _write_image(root / image, seed=frame, size=instance_ids.shape)
    labels = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
    _write_png(root / semantic, labels.astype(np.uint8))
    folder = root / "data_2d_semantics" / "train" / sequence / "image_00"
    _write_png(folder / "instance" / name, instance_ids.astype(np.uint16))
    _write_png(folder / "confidence" / name, np.full(instance_ids.shape, 65535, dtype=np.uint16))
    with open(root / "data_2d_semantics" / "train" / f"2013_05_28_drive_{split}_frames.txt", "a") as f:
        f.write(f"{image} {semantic}\n")
