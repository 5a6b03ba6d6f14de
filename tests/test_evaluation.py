"""Evaluators against hand-computed cases and against pycocotools' COCOeval."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from evaluation_oracles import cocoeval_stats
from hypothesis import given
from hypothesis import strategies as st
from scipy.ndimage import binary_erosion

from fusionseg.evaluation import build_evaluator, mask_boundary
from fusionseg.structures import IGNORE_INDEX, SegPrediction, SegTarget


def semantic_target(label: torch.Tensor) -> SegTarget:
    classes = [c for c in label.unique().tolist() if c != IGNORE_INDEX]
    return SegTarget(masks=torch.stack([label == c for c in classes]), labels=torch.tensor(classes))


# ---------------------------------------------------------------------------------------------- mIoU
def test_miou_matches_a_hand_computed_case() -> None:
    truth = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]])
    guess = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [2, 0, 2, 255]])
    evaluator = build_evaluator("semantic", 4, class_names=["a", "b", "c", "d"])
    evaluator.update([SegPrediction(semantic=guess)], [semantic_target(truth)])
    results = evaluator.compute()
    # a: 3 / (4 + 4 - 3); b: 4 / (4 + 5 - 4); c: 1 / 2 (the c on an ignored pixel does not count); d: absent
    assert results["IoU/a"] == pytest.approx(60.0) and results["IoU/b"] == pytest.approx(80.0)
    assert results["IoU/c"] == pytest.approx(50.0) and math.isnan(results["IoU/d"])
    assert results["mIoU"] == pytest.approx(190.0 / 3)


def test_void_predictions_count_as_misses() -> None:
    truth = torch.zeros(2, 4, dtype=torch.long)
    guess = torch.tensor([[0, 0, 0, 0], [IGNORE_INDEX, IGNORE_INDEX, 0, 0]])
    evaluator = build_evaluator("semantic", 2)
    evaluator.update([SegPrediction(semantic=guess)], [semantic_target(truth)])
    assert evaluator.compute()["mIoU"] == pytest.approx(75.0)


def test_accumulates_over_images_and_resets() -> None:
    evaluator = build_evaluator("semantic", 2)
    truth = torch.tensor([[0, 1]])
    evaluator.update([SegPrediction(semantic=torch.tensor([[0, 1]]))], [semantic_target(truth)])
    evaluator.update([SegPrediction(semantic=torch.tensor([[1, 1]]))], [semantic_target(truth)])
    assert evaluator.compute()["IoU/class_0"] == pytest.approx(50.0)  # 1 / (2 + 1 - 1)
    evaluator.reset()
    evaluator.update([SegPrediction(semantic=torch.tensor([[0, 1]]))], [semantic_target(truth)])
    assert evaluator.compute()["mIoU"] == pytest.approx(100.0)


# -------------------------------------------------------------------------------------- Boundary IoU
def reference_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """Cheng et al.'s mask_to_boundary: pad by 1, erode `dilation` times with a 3x3 kernel, subtract."""
    eroded = binary_erosion(np.pad(mask, 1), np.ones((3, 3)), iterations=dilation, border_value=1)[1:-1, 1:-1]
    return mask & ~eroded


@given(st.integers(4, 30), st.integers(4, 30), st.integers(1, 6), st.integers(0, 2**16))
def test_mask_boundary_matches_the_reference_erosion(h: int, w: int, dilation: int, seed: int) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < 0.7
    ours = mask_boundary(torch.from_numpy(mask), dilation).numpy()
    assert np.array_equal(ours, reference_boundary(mask, dilation))


def test_boundary_iou_matches_the_reference_per_class() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((60, 80), dtype=np.int64)
    truth[10:40, 15:55] = 1
    truth[45:, :] = 2
    truth[:5, :5] = IGNORE_INDEX
    guess = np.roll(truth, (2, 3), axis=(0, 1))
    guess[rng.random(guess.shape) < 0.02] = 0
    guess[guess == IGNORE_INDEX] = 0
    evaluator = build_evaluator("semantic", 3)
    evaluator.update([SegPrediction(semantic=torch.from_numpy(guess))], [semantic_target(torch.from_numpy(truth))])
    results = evaluator.compute()
    dilation = round(0.02 * math.hypot(60, 80))  # 2
    valid = truth != IGNORE_INDEX
    for c in range(3):
        g = reference_boundary(truth == c, dilation) & valid
        p = reference_boundary((guess == c) & valid, dilation) & valid
        assert results[f"boundary_IoU/class_{c}"] == pytest.approx(100.0 * (g & p).sum() / (g | p).sum())
    assert results["boundary_mIoU"] < results["mIoU"]  # boundaries are harder than regions


# -------------------------------------------------------------------------------------------- mask AP
def rectangle(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def instance_case(seed: int = 0) -> tuple[list[SegPrediction], list[SegTarget]]:
    """Three images with small, medium and large objects, a crowd region and noisy detections."""
    rng = np.random.default_rng(seed)
    h, w = 120, 160
    preds, targets = [], []
    for _ in range(3):
        boxes = [(5, 5, 25, 30), (30, 40, 70, 90), (0, 60, 110, 160), (80, 0, 115, 40)]
        masks = [rectangle(h, w, *b) for b in boxes]
        labels = [0, 1, 2, 1]
        crowd = [False, False, False, True]
        targets.append(SegTarget(torch.stack(masks), torch.tensor(labels), torch.tensor(crowd)))
        guesses, guess_labels, scores = [], [], []
        for (y0, x0, y1, x1), label in zip(boxes, labels):
            for _ in range(2):
                dy, dx = rng.integers(-6, 7, size=2)
                guesses.append(rectangle(h, w, max(0, y0 + dy), max(0, x0 + dx), y1 + dy, x1 + dx))
                guess_labels.append(int(rng.choice([label, label, (label + 1) % 3])))
                scores.append(float(rng.random()))
        preds.append(
            SegPrediction(masks=torch.stack(guesses), labels=torch.tensor(guess_labels), scores=torch.tensor(scores))
        )
    return preds, targets


def test_mask_ap_equals_cocoeval() -> None:
    preds, targets = instance_case()
    evaluator = build_evaluator("instance", 3, class_names=["a", "b", "c"])
    evaluator.update(preds[:2], targets[:2])
    evaluator.update(preds[2:], targets[2:])
    results = evaluator.compute()
    stats, per_class = cocoeval_stats(preds, targets, num_classes=3)
    for key, index in (("AP", 0), ("AP50", 1), ("AP75", 2), ("APs", 3), ("APm", 4), ("APl", 5)):
        assert results[key] / 100 == pytest.approx(stats[index], abs=1e-3), key
    for c, name in enumerate("abc"):
        assert results[f"AP/{name}"] / 100 == pytest.approx(per_class[c], abs=1e-3)
    assert 0 < results["AP"] < 100 and not math.isnan(results["APs"])


def test_detections_on_crowd_regions_are_not_false_positives() -> None:
    truth = SegTarget(torch.stack([rectangle(64, 64, 0, 0, 32, 32), rectangle(64, 64, 32, 32, 64, 64)]),
                      torch.tensor([0, 0]), torch.tensor([False, True]))
    exact = SegPrediction(masks=truth.masks[:1], labels=torch.tensor([0]), scores=torch.tensor([0.5]))
    on_crowd = SegPrediction(masks=truth.masks, labels=torch.tensor([0, 0]), scores=torch.tensor([0.5, 0.9]))
    for pred in (exact, on_crowd):
        evaluator = build_evaluator("instance", 1)
        evaluator.update([pred], [truth])
        assert evaluator.compute()["AP"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------------ PQ
def panoptic(segments: list[tuple[torch.Tensor, int]], semantic: torch.Tensor | None = None) -> SegPrediction:
    return SegPrediction(masks=torch.stack([m for m, _ in segments]), labels=torch.tensor([c for _, c in segments]),
                         scores=torch.ones(len(segments)), semantic=semantic)


def test_pq_matches_a_hand_computed_case() -> None:
    stuff, a, b = rectangle(10, 10, 0, 0, 5, 10), rectangle(10, 10, 5, 0, 10, 5), rectangle(10, 10, 5, 5, 10, 10)
    truth = SegTarget(torch.stack([stuff, a, b]), torch.tensor([0, 1, 1]))
    # stuff over-reaches by a row (IoU 50/60), a' inside a (IoU 20/25), b' too small (IoU 8/25: no match);
    # the rest of b is left uncovered, which lowers b's IoU instead of being ignored.
    guess = panoptic([(rectangle(10, 10, 0, 0, 6, 10), 0), (rectangle(10, 10, 6, 0, 10, 5), 1),
                      (rectangle(10, 10, 6, 5, 10, 7), 1)])
    evaluator = build_evaluator("panoptic", 2, thing_ids=[1], class_names=["ground", "box"])
    evaluator.update([guess], [truth])
    r = evaluator.compute()
    # ground: tp 1 -> SQ = RQ-weighted PQ = 5/6. box: tp 1 (IoU 0.8), fp 1, fn 1 -> SQ 0.8, RQ 0.5, PQ 0.4.
    assert r["PQ/ground"] == pytest.approx(100 * 5 / 6) and r["RQ/ground"] == pytest.approx(100.0)
    assert (r["PQ/box"], r["SQ/box"], r["RQ/box"]) == pytest.approx((40.0, 80.0, 50.0))
    assert r["PQ_th"] == pytest.approx(40.0) and r["PQ_st"] == pytest.approx(100 * 5 / 6)
    assert r["PQ"] == pytest.approx((40.0 + 100 * 5 / 6) / 2)
    assert r["SQ"] == pytest.approx((80.0 + 100 * 5 / 6) / 2) and r["RQ"] == pytest.approx(75.0)
    assert "mIoU" not in r  # no semantic maps were given


def test_unlabeled_pixels_leave_the_union_but_crowd_pixels_do_not() -> None:
    """panopticapi's rules: VOID (unlabeled) pixels are subtracted from the union, crowd pixels are not;
    a crowd region excuses only predictions of its own class."""
    ground, right = rectangle(8, 8, 0, 0, 8, 4), rectangle(8, 8, 0, 4, 8, 8)
    crowd = rectangle(8, 8, 0, 0, 4, 4)
    truth = SegTarget(torch.stack([ground & ~crowd, crowd]), torch.tensor([0, 1]), torch.tensor([False, True]))
    # The thing prediction lies on unlabeled pixels (right half): not a false positive.
    # The ground prediction covers its 16 pixels and the 16 crowd pixels: IoU 16 / (32 + 16 - 16) = 0.5, no match.
    guess = panoptic([(ground, 0), (right, 1)], semantic=torch.where(ground, 0, 1))
    evaluator = build_evaluator("panoptic", 2, thing_ids=[1])
    evaluator.update([guess], [truth])
    r = evaluator.compute()
    assert r["PQ"] == pytest.approx(0.0) and math.isnan(r["PQ_th"]) and r["RQ_st"] == pytest.approx(0.0)
    assert r["mIoU"] == pytest.approx(100.0)  # semantic maps given: mIoU too (the crowd pixels are labelled 1)
    # A prediction 80% on the crowd region: ignored when of the crowd's class, a false positive otherwise.
    mostly_crowd = rectangle(8, 8, 0, 0, 5, 4)
    for label, false_positives in ((1, 0), (0, 1)):
        evaluator.reset()
        evaluator.update([panoptic([(mostly_crowd, label)])], [truth])
        r = evaluator.compute()
        assert math.isnan(r["PQ/class_1"]) and r["RQ/class_0"] == pytest.approx(0.0)  # ground is missed
        assert evaluator.pq_stats.compute()[2].sum() == false_positives


# ------------------------------------------------------------------------------------- tables, errors
def test_format_table_has_the_summary_and_one_row_per_class() -> None:
    preds, targets = instance_case()
    evaluator = build_evaluator("instance", 3, class_names=["cat", "dog", "cow"])
    evaluator.update(preds, targets)
    table = evaluator.format_table(evaluator.compute())
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [" AP   ", " AP50 ", " AP75 ", " APs  ", " APm  ", " APl  "]
    assert sum(line.startswith(("| cat", "| dog", "| cow")) for line in lines) == 3


def test_cityscapes_rules_table_shows_ap_and_ap50_per_class() -> None:
    preds, targets = instance_case()
    evaluator = build_evaluator("instance", 3, class_names=["cat", "dog", "cow"], rules="cityscapes")
    evaluator.update(preds, targets)
    lines = evaluator.format_table(evaluator.compute()).splitlines()
    assert lines[0].split("|")[1:-1] == [" AP   ", " AP50 "]
    per_class = lines[lines.index("") + 1 :]
    assert [c.strip() for c in per_class[0].split("|")[1:-1]] == ["class", "AP", "AP50"] and len(per_class) == 5


def test_bad_inputs_are_explained() -> None:
    evaluator = build_evaluator("semantic", 2)
    truth = semantic_target(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="original image size"):
        evaluator.update([SegPrediction(semantic=torch.zeros(2, 2, dtype=torch.long))], [truth])
    with pytest.raises(ValueError, match="SegPrediction.semantic"):
        evaluator.update([SegPrediction()], [truth])
    with pytest.raises(ValueError, match="one prediction per image"):
        evaluator.update([], [truth])
    with pytest.raises(ValueError, match="unknown task"):
        build_evaluator("depth", 2)
    with pytest.raises(ValueError, match="class names"):
        build_evaluator("semantic", 2, class_names=["only one"])
    with pytest.raises(ValueError, match="unknown evaluation rules"):
        build_evaluator("instance", 2, rules="lvis")


def test_each_dataset_names_its_official_rules() -> None:
    from fusionseg.evaluation import eval_rules

    assert eval_rules("cityscapes") == eval_rules("kitti360") == "cityscapes"
    assert eval_rules("coco") == eval_rules("ade20k") == eval_rules("synthetic") == "coco"


# ------------------------------------------------------------------------------------------------ DDP
def all_cases() -> dict[str, tuple[str, dict, list[SegPrediction], list[SegTarget]]]:
    """Images per case (under DDP each of two ranks sees every other one, so ranks may hold unequal numbers
    or none): name -> (task, evaluator arguments, predictions, targets)."""
    instance_preds, instance_targets = instance_case()
    instance_preds.append(instance_preds[0])
    instance_targets.append(SegTarget(torch.zeros(0, 120, 160, dtype=torch.bool), torch.zeros(0, dtype=torch.long)))
    rng = np.random.default_rng(1)
    truths = [torch.from_numpy(rng.integers(0, 3, size=(16, 16))).repeat_interleave(2, 0) for _ in range(4)]
    guesses = [torch.where(torch.from_numpy(rng.random((32, 16)) < 0.8), t, (t + 1) % 3) for t in truths]
    targets = [semantic_target(t) for t in truths]
    return {
        "semantic": ("semantic", {"num_classes": 3}, [SegPrediction(semantic=g) for g in guesses], targets),
        "instance": ("instance", {"num_classes": 3}, instance_preds, instance_targets),
        "instance_one_image": ("instance", {"num_classes": 3}, instance_preds[:1], instance_targets[:1]),
        "instance_cityscapes": ("instance", {"num_classes": 3, "rules": "cityscapes"}, instance_preds,
                                instance_targets),
        "instance_cityscapes_one_image": ("instance", {"num_classes": 3, "rules": "cityscapes"}, instance_preds[:1],
                                          instance_targets[:1]),
        "panoptic": ("panoptic", {"num_classes": 3, "thing_ids": [2]},
                     [panoptic([(g == c, c) for c in range(3)]) for g in guesses], targets),
    }


def _ddp_worker(rank: int, port: int, queue) -> None:  # noqa: ANN001
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results = {}
    for name, (task, kwargs, preds, targets) in all_cases().items():
        evaluator = build_evaluator(task, **kwargs)
        evaluator.update(preds[rank::2], targets[rank::2])
        results[name] = evaluator.compute()
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def test_results_under_ddp_equal_a_single_process() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers need nothing but this module's functions, and skip re-importing torch.
    queue = mp.get_context("fork").SimpleQueue()
    workers = mp.start_processes(_ddp_worker, args=(port, queue), nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not workers.join(timeout=2):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail("the two DDP workers did not finish within 120 s")
    distributed = queue.get()
    for name, (task, kwargs, preds, targets) in all_cases().items():
        evaluator = build_evaluator(task, **kwargs)
        evaluator.update(preds, targets)
        single = evaluator.compute()
        assert single.keys() == distributed[name].keys()
        for key, value in single.items():
            assert distributed[name][key] == pytest.approx(value, nan_ok=True, abs=1e-6), (name, key)
