"""Cityscapes-rules instance AP equals cityscapesScripts' evalInstanceLevelSemanticLabeling (and, for
KITTI-360, kitti360Scripts' 2D copy of it).

Random Cityscapes frames (void and group regions, instances under 100 px, caravans, overlaps) are written
as `*_instanceIds.png`, read back by `CityscapesDataset`, and scored by fusionseg and by the official
script on the official prediction files (one PNG per mask, a text file per image).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_writers import random_cityscapes_instance_ids, write_cityscapes_frame, write_kitti360_frame
from evaluation_oracles import (  # noqa: F401
    cityscapes_instance_ap,
    cityscapes_pixel_iou,
    cityscapes_scripts,
    kitti360_instance_ap,
    write_instance_predictions,
)

from fusionseg.data import CityscapesDataset
from fusionseg.data.labels.cityscapes import THING_LABEL_IDS
from fusionseg.evaluation import build_evaluator
from fusionseg.evaluation.cityscapes_instance import step_ap
from fusionseg.structures import SegPrediction, SegTarget

SIZES = ((48, 64), (64, 96), (40, 80))


def perturbed(mask: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The mask shifted by a few pixels, sometimes grown or shrunk by one."""
    dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
    out = torch.roll(mask, (dy, dx), dims=(0, 1))
    change = rng.choice(["none", "grow", "shrink"])
    if change == "grow":
        out = out | torch.roll(out, 1, 0) | torch.roll(out, 1, 1)
    elif change == "shrink":
        out = out & torch.roll(out, 1, 0) & torch.roll(out, 1, 1)
    return out


def random_predictions(target: SegTarget, rng: np.random.Generator, num_classes: int = 8) -> SegPrediction:
    """Found, missed and duplicated instances (some with the wrong class), predictions on groups and void,
    random boxes, and empty masks; scores with ties."""
    h, w = target.masks.shape[-2:]
    masks, labels = [], []
    for mask, label in zip(target.masks, target.labels.tolist()):
        for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
            masks.append(perturbed(mask, rng))
            labels.append(label if label < num_classes and rng.random() > 0.15 else int(rng.integers(num_classes)))
    for _ in range(int(rng.integers(0, 4))):
        box = torch.zeros(h, w, dtype=torch.bool)
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        box[y : y + int(rng.integers(2, h // 2)), x : x + int(rng.integers(2, w // 2))] = True
        masks.append(box)
        labels.append(int(rng.integers(num_classes)))
    if rng.random() < 0.4:
        masks.append(torch.zeros(h, w, dtype=torch.bool))
        labels.append(int(rng.integers(num_classes)))
    scores = rng.random(len(masks)).astype(np.float32)
    ties = rng.random(len(masks)) < 0.3
    scores[ties] = np.round(scores[ties] * 4) / 4
    return SegPrediction(
        masks=torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool),
        labels=torch.tensor(labels, dtype=torch.long),
        scores=torch.from_numpy(scores),
    )


def close(ours: float, official: float) -> bool:
    return (math.isnan(ours) and math.isnan(official)) or abs(ours - official) <= 1e-3


def random_case(root: Path, seed: int) -> tuple[CityscapesDataset, list[SegPrediction]]:
    rng = np.random.default_rng(seed)
    for i in range(int(rng.integers(3, 7))):
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        write_cityscapes_frame(root, "val", f"aachen_{i:06d}_000019", random_cityscapes_instance_ids(rng, h, w), i)
    dataset = CityscapesDataset(root, split="val", task="instance")
    return dataset, [random_predictions(dataset[i].target, rng) for i in range(len(dataset))]


@pytest.mark.parametrize("seed", range(8))
def test_cityscapes_instance_ap_equals_the_official_script(seed: int, tmp_path: Path, cityscapes_scripts) -> None:
    dataset, preds = random_case(tmp_path / "cityscapes", seed)
    evaluator = build_evaluator("instance", 8, class_names=dataset.info.class_names, rules="cityscapes")
    gt_files, pred_files = [], []
    for i, pred in enumerate(preds):
        evaluator.update([pred], [dataset[i].target])
        stem = dataset.ids[i]
        gt_files.append(tmp_path / "cityscapes" / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_instanceIds.png")
        label_ids = [THING_LABEL_IDS[c] for c in pred.labels.tolist()]
        pred_files.append(write_instance_predictions(tmp_path / "results", stem, pred.masks, label_ids, pred.scores))
    ours = evaluator.compute()
    official = cityscapes_instance_ap(cityscapes_scripts, gt_files, pred_files, tmp_path / "work")
    averages = official["averages"]
    assert close(ours["AP"] / 100, averages["allAp"]) and close(ours["AP50"] / 100, averages["allAp50%"])
    for name in dataset.info.class_names:
        assert close(ours[f"AP/{name}"] / 100, averages["classes"][name]["ap"]), name
        assert close(ours[f"AP50/{name}"] / 100, averages["classes"][name]["ap50%"]), name
    assert not math.isnan(ours["AP"])


def box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_cityscapes_rules_by_hand() -> None:
    """Each rule on one image of 40x40: 0 = a 20x20 car, 1 = a 5x5 car (too small), 2 = a car group, 3 = void."""
    car, small, group, void = box(40, 40, 0, 0, 20, 20), box(40, 40, 30, 30, 35, 35), box(40, 40, 20, 0, 40, 20), \
        box(40, 40, 0, 20, 20, 40)
    target = SegTarget(torch.stack([car, small, group, void]), torch.tensor([0, 0, 0, 255]),
                       torch.tensor([False, False, True, True]))

    def ap(masks: list[torch.Tensor], scores: list[float]) -> dict:
        evaluator = build_evaluator("instance", 2, class_names=["car", "bus"], rules="cityscapes")
        pred = SegPrediction(masks=torch.stack(masks), labels=torch.zeros(len(masks), dtype=torch.long),
                             scores=torch.tensor(scores))
        evaluator.update([pred], [target])
        return evaluator.compute()

    assert ap([car], [0.9])["AP"] == pytest.approx(100.0)  # the bus has no ground truth: left out of the mean
    # On the group, on void, on the small car, and empty: none is a false positive.
    empty = torch.zeros(40, 40, dtype=torch.bool)
    assert ap([car, group, void, small, empty], [0.5, 0.9, 0.9, 0.9, 0.9])["AP"] == pytest.approx(100.0)
    # A duplicate is a false positive scored below the match (which takes the best score): AP stays 100.
    assert ap([car, car], [0.9, 0.5])["AP"] == pytest.approx(100.0)
    # A false positive on unlabeled-as-stuff pixels above the match: the step-wise curve gives 25, not COCO's 50.
    stray = box(40, 40, 20, 20, 28, 28)
    assert ap([car, stray], [0.5, 0.9])["AP"] == pytest.approx(25.0)
    # IoU exactly 0.5 (a 20x10 half of the car) is not a match: strictly above the threshold only.
    assert ap([box(40, 40, 0, 0, 20, 10)], [0.9])["AP50"] == pytest.approx(0.0)
    assert ap([box(40, 40, 0, 0, 20, 11)], [0.9])["AP50"] == pytest.approx(100.0)
    # Only empty predictions (skipped): AP 0. Only ignored ones: 0 too (the official script fails there).
    assert ap([empty], [0.9])["AP"] == pytest.approx(0.0) and ap([void], [0.9])["AP"] == pytest.approx(0.0)

def test_step_ap_integrates_like_the_official_script() -> None:
    # A true positive at 0.9, a false positive at 0.8, a missed instance: (precision, recall) = (.5, .5) at 0.8,
    # (1, .5) at 0.9 and the artificial (1, 0); step widths 0.5 * (r[i-1] - r[i+1]) = 0, .25, .25 -> AP 0.5.
    assert step_ap(np.array([0.9, 0.8]), np.array([1.0, 0.0]), hard_fns=1) == pytest.approx(0.5)
    assert step_ap(np.array([]), np.array([]), hard_fns=3) == 0.0


# KITTI-360's semantic ids: building, road, vegetation, sky as stuff bands (a building band is a building
# group region); void: unlabeled, static, pole and garage regions without instances (garage is also a
# building group), gate, trash bin; instances of the 7 evaluated classes and of garage (scored as building);
# bus, train and pole instances are not evaluated.
KITTI_STUFF, KITTI_VOID = (7, 11, 21, 23), (0, 4, 17, 34, 35, 39)
KITTI_THINGS, KITTI_IGNORED = (11, 24, 25, 26, 27, 32, 33, 34), (28, 31, 17)


@pytest.mark.parametrize("seed", range(4))
def test_kitti360_instance_ap_equals_the_official_script(seed: int, tmp_path: Path, monkeypatch) -> None:
    """KITTI-360 follows Cityscapes' rules with its own classes and void list; with confidence maps of ones
    (the official script weights pixels by them, fusionseg does not) the numbers are the same."""
    from fusionseg.data import KITTI360Dataset
    from fusionseg.data.labels.kitti360 import INSTANCE_LABELS
    from fusionseg.evaluation import eval_rules

    rng = np.random.default_rng(1000 + seed)
    root = tmp_path / "kitti360"
    for frame in range(int(rng.integers(3, 6))):
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        ids = random_cityscapes_instance_ids(rng, h, w, KITTI_STUFF, KITTI_VOID, KITTI_THINGS, KITTI_IGNORED)
        write_kitti360_frame(root, frame, ids)
    dataset = KITTI360Dataset(root, split="val", task="instance")
    info = dataset.info
    rules = eval_rules("kitti360")
    evaluator = build_evaluator("instance", info.num_classes, class_names=info.class_names, rules=rules)
    gt_files, pred_files = [], []
    folder = root / "data_2d_semantics" / "train" / "2013_05_28_drive_0000_sync" / "image_00"
    for i in range(len(dataset)):
        target = dataset[i].target
        pred = random_predictions(target, rng, info.num_classes)
        evaluator.update([pred], [target])
        name = dataset.labels[i].name
        gt_files.append((folder / "instance" / name, folder / "confidence" / name))
        label_ids = [INSTANCE_LABELS[c][1] for c in pred.labels.tolist()]
        pred_files.append(write_instance_predictions(tmp_path / "results", dataset.ids[i], pred.masks, label_ids,
                                                     pred.scores))
    ours = evaluator.compute()
    averages = kitti360_instance_ap(monkeypatch, gt_files, pred_files, tmp_path / "work")["averages"]
    assert close(ours["AP"] / 100, averages["allAp"]) and close(ours["AP50"] / 100, averages["allAp50%"])
    for name in info.class_names:
        assert close(ours[f"AP/{name}"] / 100, averages["classes"][name]["ap"]), name
        assert close(ours[f"AP50/{name}"] / 100, averages["classes"][name]["ap50%"]), name


@pytest.mark.parametrize("seed", range(3))
def test_cityscapes_miou_equals_the_official_script(seed: int, tmp_path: Path, cityscapes_scripts) -> None:
    """mIoU over the 19 train ids against evalPixelLevelSemanticLabeling on label-id PNGs: wrong classes,
    predictions of ignored classes (void) and predictions on unlabeled pixels."""
    from PIL import Image

    from fusionseg.data.labels.cityscapes import TRAIN_LABELS

    rng = np.random.default_rng(2000 + seed)
    root = tmp_path / "cityscapes"
    for i in range(3):
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        write_cityscapes_frame(root, "val", f"aachen_{i:06d}_000019", random_cityscapes_instance_ids(rng, h, w), i)
    dataset = CityscapesDataset(root, split="val", task="semantic")
    evaluator = build_evaluator("semantic", 19, class_names=dataset.info.class_names)
    label_id = np.array([row[1] for row in TRAIN_LABELS] + [0])  # train id -> label id; void -> unlabeled
    gt_files, pred_files = [], []
    for i in range(len(dataset)):
        truth = dataset[i].target.semantic_map()
        guess = torch.where(torch.from_numpy(rng.random(truth.shape) < 0.7), truth, torch.from_numpy(
            rng.integers(0, 20, size=truth.shape)))  # 19 = a void prediction
        guess = torch.where(guess == 255, torch.from_numpy(rng.integers(0, 19, size=truth.shape)), guess)
        guess = torch.where(guess == 19, 255, guess)
        evaluator.update([SegPrediction(semantic=guess)], [dataset[i].target])
        path = tmp_path / "pred" / f"{dataset.ids[i]}_pred.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(label_id[np.where(guess.numpy() == 255, 19, guess.numpy())].astype(np.uint8)).save(path)
        pred_files.append(path)
        gt_files.append(root / "gtFine" / "val" / "aachen" / f"{dataset.ids[i]}_gtFine_labelIds.png")
    ours = evaluator.compute()
    official = cityscapes_pixel_iou(cityscapes_scripts, gt_files, pred_files, tmp_path / "work")
    assert close(ours["mIoU"] / 100, official["averageScoreClasses"])
    for name in dataset.info.class_names:
        assert close(ours[f"IoU/{name}"] / 100, official["classScores"][name]), name
