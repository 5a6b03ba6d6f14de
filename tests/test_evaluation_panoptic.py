"""PQ equals the official panoptic evaluation (cityscapesScripts' evalPanopticSemanticLabeling, a copy of
panopticapi's pq_compute) on random cases, for Cityscapes panoptic written by the official converter
(createPanopticImgs.py) and for COCO panoptic JSON + PNGs; per category, things and stuff."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_writers import _panoptic_png, _write_image, random_cityscapes_instance_ids, write_cityscapes_frame
from evaluation_oracles import (  # noqa: F401
    cityscapes_scripts,
    create_panoptic_imgs,
    official_pq,
    write_panoptic_predictions,
)
from test_evaluation_cityscapes import perturbed

from fusionseg.data import CityscapesDataset, COCODataset
from fusionseg.data.labels.cityscapes import TRAIN_LABELS
from fusionseg.data.labels.coco import COCO_CATEGORIES, coco_categories
from fusionseg.evaluation import build_evaluator
from fusionseg.structures import SegPrediction, SegTarget


def random_prediction(
    target: SegTarget, rng: np.random.Generator, num_classes: int
) -> tuple[SegPrediction, torch.Tensor]:
    """Non-overlapping segments: ground-truth segments (crowd regions too) shifted, grown or shrunk, missed,
    merged or given another class; random blobs; uncovered pixels. Returns it and its id map (0 = none)."""
    h, w = target.masks.shape[-2:]
    ids = torch.zeros(h, w, dtype=torch.long)
    labels: list[int] = []
    for k in rng.permutation(len(target.labels)).tolist():
        if rng.random() < 0.15:
            continue  # missed
        label = int(target.labels[k])
        if rng.random() < 0.15:  # another class, mostly one of this image (so it can meet that class's crowd)
            label = int(rng.choice(target.labels)) if rng.random() < 0.7 else int(rng.integers(num_classes))
        if labels and rng.random() < 0.1:  # merged into the previous segment
            ids[perturbed(target.masks[k], rng)] = len(labels)
            continue
        labels.append(label)
        ids[perturbed(target.masks[k], rng)] = len(labels)
    for _ in range(int(rng.integers(0, 3))):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        labels.append(int(rng.integers(num_classes)))
        ids[y : y + int(rng.integers(2, h // 2)), x : x + int(rng.integers(2, w // 2))] = len(labels)
    if rng.random() < 0.5:  # a hole: pixels no segment covers
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        ids[y : y + int(rng.integers(2, h // 3)), x : x + int(rng.integers(2, w // 3))] = 0
    present = [i for i in range(1, len(labels) + 1) if (ids == i).any()]
    masks = torch.stack([ids == i for i in present]) if present else torch.zeros(0, h, w, dtype=torch.bool)
    pred = SegPrediction(masks=masks, labels=torch.tensor([labels[i - 1] for i in present], dtype=torch.long),
                         scores=torch.ones(len(present)))
    return pred, ids


def close(ours: float, official: float) -> bool:
    return abs(ours - official) <= 1e-3


def check_against_official(
    results: dict, official: dict, raw: dict, class_names: Sequence[str], category_ids: Sequence[int]
) -> None:
    for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for metric in ("PQ", "SQ", "RQ"):
            assert close(results[f"{metric}{suffix}"] / 100, official[group][metric.lower()]), (metric, group)
    for name, category in zip(class_names, category_ids):
        _, tp, fp, fn = raw[category]
        for metric in ("PQ", "SQ", "RQ"):
            ours = results[f"{metric}/{name}"]
            if tp + fp + fn == 0:  # left out of the means: NaN here, 0 in the official per-class table
                assert math.isnan(ours), (metric, name)
            else:
                assert close(ours / 100, official["per_class"][category][metric.lower()]), (metric, name)


@pytest.mark.parametrize("seed", range(6))
def test_cityscapes_pq_equals_the_official_evaluation(seed: int, tmp_path: Path, cityscapes_scripts) -> None:
    rng = np.random.default_rng(seed)
    root = tmp_path / "cityscapes"
    for i in range(int(rng.integers(3, 6))):
        h, w = (48, 64) if rng.random() < 0.5 else (64, 96)
        write_cityscapes_frame(root, "val", f"bochum_{i:06d}_000019", random_cityscapes_instance_ids(rng, h, w), i)
    create_panoptic_imgs(cityscapes_scripts, root / "gtFine")
    dataset = CityscapesDataset(root, split="val", task="panoptic")
    assert dataset.panoptic is not None  # the official converter's files are the ones read
    info = dataset.info
    evaluator = build_evaluator("panoptic", info.num_classes, thing_ids=info.thing_ids, class_names=info.class_names)
    label_ids = [row[1] for row in TRAIN_LABELS]  # the converter's category ids (train id -> label id)
    predictions = []
    for i in range(len(dataset)):
        item = dataset[i]
        pred, ids = random_prediction(item.target, rng, info.num_classes)
        evaluator.update([pred], [item.target])
        categories = [label_ids[c] for c in pred.labels.tolist()]
        predictions.append((item.image_id, renumbered(ids, pred), categories))
    write_panoptic_predictions(tmp_path / "pred", tmp_path / "pred.json", predictions)
    official, raw = official_pq(cityscapes_scripts, root / "gtFine" / "cityscapes_panoptic_val.json",
                                root / "gtFine" / "cityscapes_panoptic_val", tmp_path / "pred.json", tmp_path / "pred")
    check_against_official(evaluator.compute(), official, raw, info.class_names, label_ids)


def renumbered(ids: torch.Tensor, pred: SegPrediction) -> torch.Tensor:
    """The id map with segment k + 1 for `pred.masks[k]` (the predicted segments that kept pixels)."""
    out = torch.zeros_like(ids)
    for k, mask in enumerate(pred.masks):
        out[mask] = k + 1
    return out


COCO_STUFF = (184, 187, 118)  # tree-merged, sky-other-merged, floor-wood
COCO_THINGS = (1, 3, 18, 63)  # person, car, dog, couch


def write_random_coco_panoptic(root: Path, rng: np.random.Generator, n_images: int) -> None:
    """val2017 JPEGs, annotations/panoptic_val2017.json and panoptic_val2017/*.png: stuff bands, thing boxes,
    crowd boxes (two of one category now and then), unlabeled boxes; random segment ids."""
    categories = [{"id": i, "name": n, "isthing": int(t), "color": list(c)} for i, n, t, c in COCO_CATEGORIES]
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        h, w = int(rng.integers(32, 64)), int(rng.integers(40, 90))
        _write_image(root / "val2017" / f"{image_id:012d}.jpg", seed=image_id, size=(h, w))
        ids = np.zeros((h, w), dtype=np.int64)
        segment_ids = rng.choice(np.arange(1, 2**24), size=20, replace=False).tolist()
        info = {}
        cut = sorted(rng.integers(0, h, size=2).tolist())
        for (top, bottom), category in zip(zip([0, *cut], [*cut, h]), rng.choice(COCO_STUFF, size=3)):
            sid = segment_ids.pop()
            ids[top:bottom] = sid
            info[sid] = (int(category), 0)
        for _ in range(int(rng.integers(2, 9))):
            bh, bw = int(rng.integers(3, h // 2)), int(rng.integers(3, w // 2))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            kind = rng.choice(["thing", "crowd", "unlabeled"], p=[0.7, 0.2, 0.1])
            sid = 0 if kind == "unlabeled" else segment_ids.pop()
            ids[y : y + bh, x : x + bw] = sid
            if sid:
                info[sid] = (int(rng.choice(COCO_THINGS)), int(kind == "crowd"))
        segments = []
        for sid, (category, crowd) in info.items():
            mask = ids == sid
            if mask.any():
                ys, xs = np.nonzero(mask)
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                segments.append({"id": sid, "category_id": category, "iscrowd": crowd, "area": int(mask.sum()),
                                 "bbox": bbox})
        _panoptic_png(root / "panoptic_val2017" / f"{image_id:012d}.png", ids)
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w})
        annotations.append({"image_id": image_id, "file_name": f"{image_id:012d}.png", "segments_info": segments})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))


@pytest.mark.parametrize("seed", range(6))
def test_coco_pq_equals_the_official_evaluation(seed: int, tmp_path: Path, cityscapes_scripts) -> None:
    rng = np.random.default_rng(100 + seed)
    root = tmp_path / "coco"
    write_random_coco_panoptic(root, rng, n_images=int(rng.integers(3, 7)))
    dataset = COCODataset(root, split="val", task="panoptic")
    info = dataset.info
    category_ids = [c[0] for c in coco_categories("panoptic")]
    evaluator = build_evaluator("panoptic", info.num_classes, thing_ids=info.thing_ids, class_names=info.class_names)
    predictions = []
    for i in range(len(dataset)):
        item = dataset[i]
        pred, ids = random_prediction(item.target, rng, info.num_classes)
        evaluator.update([pred], [item.target])
        predictions.append((int(item.image_id), renumbered(ids, pred), [category_ids[c] for c in pred.labels.tolist()]))
    write_panoptic_predictions(tmp_path / "pred", tmp_path / "pred.json", predictions)
    official, raw = official_pq(cityscapes_scripts, root / "annotations" / "panoptic_val2017.json",
                                root / "panoptic_val2017", tmp_path / "pred.json", tmp_path / "pred")
    check_against_official(evaluator.compute(), official, raw, info.class_names, category_ids)


def test_cityscapes_reader_opens_both_outputs_of_the_official_converter(tmp_path: Path, cityscapes_scripts) -> None:
    """createPanopticImgs.py writes label-id categories, or train ids with --use-train-id (another file name):
    the reader opens either as written, with the same targets as from *_instanceIds.png."""
    import contextlib
    import io

    rng = np.random.default_rng(7)
    for name, train_ids in (("label_ids", False), ("train_ids", True)):
        root = tmp_path / name
        for i in range(2):
            write_cityscapes_frame(root, "val", f"bochum_{i:06d}_000019", random_cityscapes_instance_ids(rng, 32, 48), i)
        with contextlib.redirect_stdout(io.StringIO()):
            cityscapes_scripts.converter.convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), train_ids, ["val"])
        dataset = CityscapesDataset(root, split="val", task="panoptic")
        written = "cityscapes_panoptic_val_trainId.json" if train_ids else "cityscapes_panoptic_val.json"
        assert dataset.panoptic is not None and dataset.panoptic.json_path.name == written
        (root / "gtFine" / written).rename(root / "hidden.json")
        from_pngs = CityscapesDataset(root, split="val", task="panoptic")
        assert from_pngs.panoptic is None
        for i in range(2):
            assert dataset[i].image.shape == from_pngs[i].image.shape
            assert segments(dataset[i].target) == segments(from_pngs[i].target)


def segments(target: SegTarget) -> set[tuple[int, bool, bytes]]:
    return {(int(c), bool(k), m.numpy().tobytes()) for m, c, k in zip(target.masks, target.labels, target.iscrowd)}
