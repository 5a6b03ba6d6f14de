"""Mask2Former inference: semantic, instance and panoptic predictions at each image's original size.

The semantics follow Mask2Former's `MaskFormer.semantic_inference / instance_inference /
panoptic_inference`: mask logits are upsampled to the padded input size, cropped to the real
image extent and resized to the original size before instance and panoptic inference; the
semantic class scores are computed at the padded size and then cropped and resized.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fusionseg.heads.mask2former import Mask2FormerOutput
from fusionseg.structures import IGNORE_INDEX, TASKS, SegPrediction

Size = tuple[int, int]


def crop_and_resize(x: Tensor, image_size: Size, orig_size: Size) -> Tensor:
    """`(N, H_pad, W_pad)` maps -> crop to `image_size` (top-left) -> bilinear resize to `orig_size`."""
    x = x[:, : image_size[0], : image_size[1]]
    if tuple(x.shape[-2:]) != tuple(orig_size):
        x = F.interpolate(x[None], size=tuple(orig_size), mode="bilinear", align_corners=False)[0]
    return x


def upsample(x: Tensor, size: Size) -> Tensor:
    """`(N, h, w)` -> `(N, *size)` bilinear."""
    return F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def semantic_inference(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Per-pixel class scores `(C, h, w)`: softmax class probs (no-object dropped) x sigmoid mask probs, summed
    over queries. `class_logits (Q, C + 1)`, `mask_logits (Q, h, w)`; values in `[0, Q]`."""
    probs = class_logits.softmax(-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_logits.sigmoid())


def instance_inference(
    class_logits: Tensor, mask_logits: Tensor, topk: int = 100, thing_ids: Sequence[int] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k (query, class) pairs over all queries x classes (only `thing_ids` when given).

    Returns `masks (K, h, w)` bool (`mask_logit > 0`), `labels (K,)` int64 and `scores (K,)` in `[0, 1]`
    = class prob x mean mask prob inside the binary mask, sorted by class prob; `K = min(topk, Q * classes)`.
    """
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    probs = class_logits.softmax(-1)[:, :-1]
    classes = torch.arange(num_classes, device=class_logits.device)
    if thing_ids is not None:
        classes = torch.as_tensor(list(thing_ids), dtype=torch.long, device=class_logits.device)
        probs = probs[:, classes]
    k = min(topk, probs.numel())
    class_scores, flat = probs.flatten().topk(k)
    labels = classes[flat % classes.numel()]
    queries = flat // classes.numel()
    logits = mask_logits[queries]
    masks = logits > 0
    mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    return masks, labels, class_scores * mask_scores


def panoptic_inference(
    class_logits: Tensor,
    mask_logits: Tensor,
    thing_ids: Sequence[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> SegPrediction:
    """Non-overlapping segments from queries whose class is not "no object" and whose class prob > threshold.

    Each pixel goes to the kept query with the highest class prob x mask prob (and only if that
    mask prob >= 0.5); a query whose assigned area is < `overlap_threshold` of its own mask area
    (mask prob >= 0.5) is dropped; stuff queries of one class merge into one segment.
    Returns `masks (K, h, w)` bool, `labels (K,)`, `scores (K,)` (class prob of the segment's first
    query) and `semantic (h, w)` int64 with `IGNORE_INDEX` on void pixels.
    """
    h, w = mask_logits.shape[-2:]
    num_classes = class_logits.shape[1] - 1
    scores, labels = class_logits.softmax(-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_logits[keep].sigmoid()
    things = set(int(t) for t in thing_ids)
    segments: list[Tensor] = []
    seg_labels: list[int] = []
    seg_scores: list[float] = []
    if cur_masks.shape[0] > 0:
        owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
        stuff_segment: dict[int, int] = {}
        for k in range(cur_classes.shape[0]):
            pred_class = int(cur_classes[k])
            owned, confident = owner == k, cur_masks[k] >= 0.5
            mask_area = int(owned.sum())
            original_area = int(confident.sum())
            mask = owned & confident
            if mask_area == 0 or original_area == 0 or not bool(mask.any()):
                continue
            if mask_area / original_area < overlap_threshold:
                continue
            if pred_class not in things and pred_class in stuff_segment:
                segments[stuff_segment[pred_class]] |= mask
                continue
            if pred_class not in things:
                stuff_segment[pred_class] = len(segments)
            segments.append(mask)
            seg_labels.append(pred_class)
            seg_scores.append(float(cur_scores[k]))
    device = mask_logits.device
    masks = torch.stack(segments) if segments else torch.zeros((0, h, w), dtype=torch.bool, device=device)
    semantic = torch.full((h, w), IGNORE_INDEX, dtype=torch.int64, device=device)
    for mask, label in zip(masks, seg_labels):
        semantic[mask] = label
    return SegPrediction(
        semantic=semantic,
        masks=masks,
        labels=torch.tensor(seg_labels, dtype=torch.int64, device=device),
        scores=torch.tensor(seg_scores, dtype=torch.float32, device=device),
    )


def postprocess(
    outputs: Mask2FormerOutput,
    task: str,
    padded_size: Size,
    image_sizes: Sequence[Size],
    orig_sizes: Sequence[Size],
    thing_ids: Sequence[int] | None = None,
    topk: int = 100,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    return_probs: bool = False,
) -> list[SegPrediction]:
    """One `SegPrediction` per image, at `orig_sizes[i]`.

    `padded_size` is the `(H, W)` of the batch's images, `image_sizes[i]` the real extent of image i
    inside the padding. Semantic: `semantic (H0, W0)` int64 in `[0, C)`, and with `return_probs`
    `probs (C, H0, W0)` float in `[0, Q]`. Instance: `masks (K, H0, W0)` bool, `labels (K,)`, `scores (K,)`
    in `[0, 1]`, `K = min(topk, Q * classes)` (classes = `thing_ids` when given, else all). Panoptic: see
    `panoptic_inference` (needs `thing_ids`).
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    batch = outputs.class_logits.shape[0]
    if len(image_sizes) != batch or len(orig_sizes) != batch:
        raise ValueError(f"{batch} images but {len(image_sizes)} image_sizes and {len(orig_sizes)} orig_sizes")
    if task == "panoptic" and thing_ids is None:
        raise ValueError("panoptic inference needs thing_ids (the classes whose segments are not merged)")
    class_logits = outputs.class_logits.float()
    results = []
    for i in range(batch):
        logits = upsample(outputs.mask_logits[i].float(), padded_size)
        if task == "semantic":
            scores = crop_and_resize(semantic_inference(class_logits[i], logits), image_sizes[i], orig_sizes[i])
            results.append(SegPrediction(semantic=scores.argmax(0), probs=scores if return_probs else None))
            continue
        logits = crop_and_resize(logits, image_sizes[i], orig_sizes[i])
        if task == "instance":
            masks, labels, scores = instance_inference(class_logits[i], logits, topk, thing_ids)
            results.append(SegPrediction(masks=masks, labels=labels, scores=scores))
        else:
            results.append(
                panoptic_inference(class_logits[i], logits, thing_ids or (), object_mask_threshold, overlap_threshold)
            )
    return results
