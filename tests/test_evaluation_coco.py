"""COCO mask AP equals pycocotools' COCOeval on every input: images without ground truth or without
detections, crowd regions, more detections than the limit, tied scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from evaluation_oracles import cocoeval_stats

from fusionseg.evaluation import build_evaluator
from fusionseg.structures import SegPrediction, SegTarget

SUMMARY = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}


def blob(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """A random box or ellipse, from a few pixels to most of the image."""
    bh, bw = int(rng.integers(2, h)), int(rng.integers(2, w))
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    yy, xx = np.mgrid[:h, :w]
    if rng.random() < 0.5:
        mask = (yy >= y) & (yy < y + bh) & (xx >= x) & (xx < x + bw)
    else:
        mask = ((yy - y - bh / 2) / (bh / 2)) ** 2 + ((xx - x - bw / 2) / (bw / 2)) ** 2 <= 1
    return torch.from_numpy(mask)


def random_case(seed: int, num_classes: int = 3) -> tuple[list[SegPrediction], list[SegTarget]]:
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    many = int(rng.integers(0, 6))  # this image gets more detections than COCOeval keeps (100)
    for i in range(6):
        h, w = int(rng.integers(24, 64)), int(rng.integers(24, 80))
        n_gt = 0 if rng.random() < 0.25 else int(rng.integers(1, 6))  # some images have no ground truth
        gt = [blob(rng, h, w) for _ in range(n_gt)]
        gt_labels = rng.integers(0, num_classes, size=n_gt)
        crowd = rng.random(n_gt) < 0.15
        targets.append(SegTarget(
            torch.stack(gt) if gt else torch.zeros(0, h, w, dtype=torch.bool),
            torch.from_numpy(gt_labels).long(), torch.from_numpy(crowd),
        ))
        masks, labels = [], []
        if rng.random() > 0.2:  # some images have no detections
            for mask, label in zip(gt, gt_labels.tolist()):
                for _ in range(int(rng.choice([0, 1, 1, 2]))):
                    masks.append(torch.roll(mask, tuple(int(v) for v in rng.integers(-4, 5, size=2)), (0, 1)))
                    labels.append(label if rng.random() > 0.2 else int(rng.integers(num_classes)))
            for _ in range(int(rng.integers(0, 4)) + (130 if i == many else 0)):
                masks.append(blob(rng, h, w))
                labels.append(int(rng.integers(num_classes)))
        scores = rng.random(len(masks)).astype(np.float32)
        scores[rng.random(len(masks)) < 0.2] = 0.5  # ties
        preds.append(SegPrediction(
            masks=torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool),
            labels=torch.tensor(labels, dtype=torch.long), scores=torch.from_numpy(scores),
        ))
    return preds, targets


def close(ours: float, official: float) -> bool:
    return (math.isnan(ours) and (math.isnan(official) or official == -1)) or abs(ours - official) <= 1e-3


@pytest.mark.parametrize("seed", range(6))
def test_mask_ap_equals_cocoeval_on_random_cases(seed: int) -> None:
    preds, targets = random_case(seed)
    evaluator = build_evaluator("instance", 3, class_names=["a", "b", "c"])
    for start in range(0, len(preds), 4):  # batches of 4 and 2
        evaluator.update(preds[start : start + 4], targets[start : start + 4])
    ours = evaluator.compute()
    stats, per_class = cocoeval_stats(preds, targets, num_classes=3)
    for key, index in SUMMARY.items():
        assert close(ours[key] / 100, stats[index]), (key, ours[key], stats[index])
    for c, name in enumerate("abc"):
        assert close(ours[f"AP/{name}"] / 100, per_class[c]), (name, ours[f"AP/{name}"], per_class[c])
    assert 0 < ours["AP"] < 100


def square(size: int, y0: int, x0: int, side: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_detections_on_an_image_without_ground_truth_are_false_positives() -> None:
    hit = square(32, 0, 0, 16)
    truth = [SegTarget(hit[None], torch.tensor([0])), SegTarget(torch.zeros(0, 32, 32, dtype=torch.bool),
                                                               torch.zeros(0, dtype=torch.long))]
    preds = [SegPrediction(masks=hit[None], labels=torch.tensor([0]), scores=torch.tensor([0.5])),
             SegPrediction(masks=hit[None], labels=torch.tensor([0]), scores=torch.tensor([0.9]))]
    evaluator = build_evaluator("instance", 1)
    evaluator.update(preds, truth)
    ap = evaluator.compute()["AP"]
    assert ap == pytest.approx(100 * cocoeval_stats(preds, truth, 1)[0][0]) and ap < 60  # the 0.9 one is false


def test_no_detections_at_all_is_zero_ap_and_no_ground_truth_is_nan() -> None:
    evaluator = build_evaluator("instance", 2, class_names=["a", "b"])
    truth = SegTarget(square(16, 0, 0, 8)[None], torch.tensor([0]))
    evaluator.update([SegPrediction(masks=torch.zeros(0, 16, 16, dtype=torch.bool), labels=torch.zeros(0).long(),
                                    scores=torch.zeros(0))], [truth])
    results = evaluator.compute()
    assert results["AP"] == 0.0 and results["AP/a"] == 0.0 and math.isnan(results["AP/b"])


def test_void_targets_and_unknown_classes_are_left_out() -> None:
    car = square(32, 0, 0, 16)
    void = square(32, 16, 16, 16)
    truth = SegTarget(torch.stack([car, void]), torch.tensor([0, 255]), torch.tensor([False, True]))
    pred = SegPrediction(masks=torch.stack([car, void]), labels=torch.tensor([0, 7]), scores=torch.tensor([.9, .9]))
    evaluator = build_evaluator("instance", 1)
    evaluator.update([pred], [truth])
    assert evaluator.compute()["AP"] == pytest.approx(100.0)
