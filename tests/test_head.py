"""The Mask2Former head (transformers' modules on our pyramid) and its inference for the three tasks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Mask2FormerImageProcessor

from fusionseg.heads import Mask2FormerHead, Mask2FormerOutput, panoptic_inference, postprocess
from fusionseg.heads.postprocess import instance_inference
from fusionseg.structures import IGNORE_INDEX, SegTarget

TINY = dict(num_queries=6, dec_layers=2, hidden_dim=32, train_points=256, enc_layers=1, num_heads=4,
            dim_feedforward=64, enc_feedforward=64)


def tiny_head(num_classes: int = 3, channels: int = 16) -> Mask2FormerHead:
    return Mask2FormerHead({s: channels for s in (4, 8, 16, 32)}, num_classes=num_classes, **TINY)


def pyramid(h: int, w: int, channels: int = 16, batch: int = 2) -> dict[int, torch.Tensor]:
    return {s: torch.randn(batch, channels, math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)}


def probs_to_logits(class_ids: list[int], scores: list[float], num_classes: int) -> torch.Tensor:
    """Class logits whose softmax gives `score` to `class_id` (index num_classes = no object), the rest shared."""
    probs = torch.empty(len(class_ids), num_classes + 1)
    for q, (c, p) in enumerate(zip(class_ids, scores)):
        probs[q] = (1 - p) / num_classes
        probs[q, c] = p
    return probs.log()


def test_head_outputs_have_the_documented_shapes() -> None:
    head = tiny_head()
    out = head(pyramid(50, 70))
    assert out.class_logits.shape == (2, 6, 4)  # 3 classes + no object
    assert out.mask_logits.shape == (2, 6, 13, 18)  # stride 4 of 50 x 70
    assert len(out.layers) == 2  # the learnable queries' own prediction + one earlier decoder layer
    assert all(c.shape == out.class_logits.shape and m.shape == out.mask_logits.shape for c, m in out.layers)


def two_region_targets(h: int = 64, w: int = 64) -> list[SegTarget]:
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, : h // 2] = True
    masks[1, h // 2 :] = True
    return [SegTarget(masks=masks, labels=torch.tensor([0, 2])), SegTarget(masks=masks[:1], labels=torch.tensor([1]))]


def test_loss_sums_weighted_terms_over_all_layers_and_ignores_crowd() -> None:
    head = tiny_head()
    out = head(pyramid(64, 64))
    targets = two_region_targets()
    torch.manual_seed(1)
    losses = head.loss(out, targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert torch.allclose(losses["loss"], losses["loss_ce"] + losses["loss_mask"] + losses["loss_dice"])
    # an extra crowd segment changes nothing: the same random points give the same losses
    crowd = SegTarget(
        masks=torch.cat([targets[1].masks, torch.ones(1, 64, 64, dtype=torch.bool)]),
        labels=torch.tensor([1, 2]),
        iscrowd=torch.tensor([False, True]),
    )
    torch.manual_seed(1)
    with_crowd = head.loss(out, [targets[0], crowd])
    assert all(torch.equal(losses[k], with_crowd[k]) for k in losses)


def test_images_without_segments_train_on_no_object_only() -> None:
    head = tiny_head()
    empty = SegTarget(masks=torch.zeros(0, 64, 64, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.long))
    losses = head.loss(head(pyramid(64, 64)), [empty, empty])
    assert losses["loss_ce"] > 0 and losses["loss_mask"] == 0 and losses["loss_dice"] == 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: tiny_head().loss(tiny_head()(pyramid(64, 64)), two_region_targets()[:1]), "1 targets for a batch"),
        (lambda: Mask2FormerHead({4: 8, 8: 8, 16: 8}, num_classes=2), r"lacks \[32\]"),
        (lambda: Mask2FormerHead({s: 8 for s in (4, 8, 16, 32)}, num_classes=2, hidden_dim=48), "multiple of 32"),
        (lambda: tiny_head()(pyramid(64, 64, channels=8)), "built for 16 channels"),
    ],
)
def test_bad_inputs_are_explained(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_out_of_range_labels_are_rejected() -> None:
    head = tiny_head(num_classes=2)
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\)"):
        head.loss(head(pyramid(64, 64)), two_region_targets())


def random_outputs(batch: int, queries: int, classes: int, h: int, w: int) -> Mask2FormerOutput:
    return Mask2FormerOutput(
        class_logits=torch.randn(batch, queries, classes + 1) * 3, mask_logits=torch.randn(batch, queries, h, w) * 4,
        layers=[],
    )


def as_transformers(out: Mask2FormerOutput) -> SimpleNamespace:
    return SimpleNamespace(class_queries_logits=out.class_logits, masks_queries_logits=out.mask_logits)


def test_semantic_inference_matches_transformers_post_processing() -> None:
    out = random_outputs(2, 5, 4, 384, 384)  # transformers resizes masks to 384 x 384 first: here a no-op
    ours = postprocess(out, "semantic", (384, 384), [(384, 384)] * 2, [(384, 384)] * 2)
    theirs = Mask2FormerImageProcessor().post_process_semantic_segmentation(as_transformers(out))
    for p, t in zip(ours, theirs):
        assert torch.equal(p.semantic, t)


def test_instance_inference_matches_transformers_post_processing() -> None:
    out = random_outputs(1, 5, 4, 384, 384)
    masks, labels, scores = instance_inference(out.class_logits[0], out.mask_logits[0], topk=5)
    theirs = Mask2FormerImageProcessor().post_process_instance_segmentation(
        as_transformers(out), threshold=0.0, return_binary_maps=True
    )[0]
    order = sorted(range(5), key=lambda i: -theirs["segments_info"][i]["score"])
    assert labels.tolist() == [theirs["segments_info"][i]["label_id"] for i in order]
    assert torch.allclose(scores, torch.tensor([theirs["segments_info"][i]["score"] for i in order]), atol=1e-5)
    assert torch.equal(masks, theirs["segmentation"][order].bool())


def test_instance_inference_keeps_only_thing_classes() -> None:
    out = random_outputs(1, 4, 5, 16, 16)
    masks, labels, scores = instance_inference(out.class_logits[0], out.mask_logits[0], topk=100, thing_ids=[1, 3])
    assert masks.shape == (8, 16, 16) and set(labels.tolist()) <= {1, 3}
    assert bool((scores >= 0).all() and (scores <= 1).all())


def panoptic_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven queries on a 384 x 384 image; class 0 is stuff, 1 and 2 are things, 3 = no object."""
    h = w = 384
    regions = [
        (slice(0, 192), slice(0, 192)),  # q0 thing 1
        (slice(0, 192), slice(192, 384)),  # q1 thing 1
        (slice(192, 384), slice(0, 192)),  # q2 stuff 0
        (slice(192, 384), slice(192, 384)),  # q3 stuff 0: merged with q2
        (slice(0, 384), slice(0, 384)),  # q4 no object: dropped
        (slice(0, 384), slice(0, 384)),  # q5 class 2 with a low score: dropped
        (slice(150, 251), slice(150, 251)),  # q6 thing 2: wins only 59 of its 101 rows -> area ratio < 0.8, dropped
    ]
    mask_logits = torch.full((7, h, w), -10.0)
    for q, (rows, cols) in enumerate(regions):
        mask_logits[q, rows, cols] = 10.0
    class_logits = probs_to_logits([1, 1, 0, 0, 3, 2, 2], [0.99, 0.98, 0.85, 0.86, 0.99, 0.5, 0.9], num_classes=3)
    return class_logits, mask_logits


def test_panoptic_inference_merges_stuff_drops_weak_and_occluded_queries() -> None:
    class_logits, mask_logits = panoptic_scene()
    pred = panoptic_inference(class_logits, mask_logits, thing_ids=[1, 2])
    assert pred.labels.tolist() == [1, 1, 0]
    assert pred.masks.shape == (3, 384, 384)
    assert int(pred.masks.sum(0).max()) == 1  # no overlaps
    assert pred.masks[2, 300, 10] and pred.masks[2, 300, 300]  # both stuff queries in one segment
    void = pred.semantic == IGNORE_INDEX
    assert void[200:251, 150:251].all() and int(void.sum()) == 59 * 101  # the pixels q6 won stay void
    assert torch.equal(pred.semantic[~void], pred.labels[pred.masks.int().argmax(0)][~void])

    theirs = Mask2FormerImageProcessor().post_process_panoptic_segmentation(
        as_transformers(Mask2FormerOutput(class_logits[None], mask_logits[None], [])), threshold=0.8,
        label_ids_to_fuse={0},
    )[0]
    segments = {s["id"]: s["label_id"] for s in theirs["segments_info"]}  # a merged stuff segment is listed per query
    assert sorted(segments.values()) == sorted(pred.labels.tolist())
    assert torch.equal(theirs["segmentation"] == 0, void)
    for mask in pred.masks:
        assert theirs["segmentation"][mask].unique().numel() == 1


@given(seed=st.integers(0, 10_000), thing=st.sets(st.integers(0, 3)))
def test_panoptic_segments_never_overlap_and_explain_the_class_map(seed: int, thing: set[int]) -> None:
    gen = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(6, 5, generator=gen) * 4
    mask_logits = torch.randn(6, 12, 12, generator=gen) * 3
    pred = panoptic_inference(class_logits, mask_logits, thing_ids=sorted(thing), object_mask_threshold=0.3)
    assert int(pred.masks.sum(0).max()) <= 1
    assert all(bool(m.any()) for m in pred.masks)
    stuff = [c for c in pred.labels.tolist() if c not in thing]
    assert len(stuff) == len(set(stuff))  # one segment per stuff class
    expected = torch.full((12, 12), IGNORE_INDEX)
    for m, c in zip(pred.masks, pred.labels):
        expected[m] = c
    assert torch.equal(pred.semantic, expected)


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_predictions_come_back_at_the_original_size(task: str) -> None:
    # a batch padded to 50 x 70 (not a multiple of 32): image 0 is 50 x 70, image 1 is 41 x 60 inside the padding
    out = random_outputs(2, 6, 3, math.ceil(50 / 4), math.ceil(70 / 4))
    orig = [(100, 140), (33, 47)]
    preds = postprocess(out, task, (50, 70), [(50, 70), (41, 60)], orig, thing_ids=[1, 2], topk=10,
                        object_mask_threshold=0.2, return_probs=True)
    for p, size in zip(preds, orig):
        if task == "semantic":
            assert p.semantic.shape == size and p.semantic.dtype == torch.int64
            assert 0 <= int(p.semantic.min()) and int(p.semantic.max()) < 3
            assert p.probs.shape == (3, *size) and float(p.probs.min()) >= 0 and float(p.probs.max()) <= 6
            assert torch.equal(p.probs.argmax(0), p.semantic)
        else:
            k = p.labels.numel()
            assert p.masks.shape == (k, *size) and p.masks.dtype == torch.bool and p.scores.shape == (k,)
            assert bool((p.scores >= 0).all() and (p.scores <= 1).all())
        if task == "instance":
            assert k == 10 and set(p.labels.tolist()) <= {1, 2}
        if task == "panoptic":
            assert p.semantic.shape == size and int(p.masks.sum(0).max()) <= 1


def test_panoptic_postprocess_needs_thing_ids() -> None:
    with pytest.raises(ValueError, match="needs thing_ids"):
        postprocess(random_outputs(1, 2, 2, 4, 4), "panoptic", (16, 16), [(16, 16)], [(16, 16)])
