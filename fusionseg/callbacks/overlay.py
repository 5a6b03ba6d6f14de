"""Predictions as pictures: class colours over the image, segment outlines, label maps."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from fusionseg.structures import IGNORE_INDEX, DatasetInfo, SegPrediction, SegTarget

Palette = Literal["auto", "dataset", "distinct"]
# Datasets whose images are drawn in their own class colours (the synthetic dataset paints each class in
# its palette colour): an overlay in those colours would not show, so "auto" picks distinct ones there.
CONTENT_COLOURED_DATASETS = frozenset({"synthetic"})
VOID_RGB = (0, 0, 0)  # "nothing predicted" in palette label PNGs


def class_colors(num_classes: int, info: DatasetInfo | None = None) -> Tensor:
    """`(num_classes, 3)` uint8 colours: the dataset's, else a fixed pseudo-random palette."""
    if info is not None:
        if info.num_classes != num_classes:
            raise ValueError(f"dataset {info.name!r} has {info.num_classes} classes, the model predicts {num_classes}")
        return torch.tensor(info.colors, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    return torch.randint(40, 256, (num_classes, 3), generator=generator, dtype=torch.int64).to(torch.uint8)


def vivid_colors(count: int) -> Tensor:
    """`(count, 3)` uint8 saturated colours, hues spread by the golden ratio, in two brightness levels."""
    out = []
    for i in range(count):
        hue = (i * 0.618033988749895) % 1.0
        value = 1.0 if i % 2 == 0 else 0.7
        out.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.95 if i % 4 < 2 else 0.65, value)])
    return torch.tensor(out, dtype=torch.uint8).reshape(count, 3)


def distinct_colors(avoid: Tensor) -> Tensor:
    """One vivid colour per row of `avoid` `(n, 3)`, as far as possible from that row's colour.

    The `n` colours of `vivid_colors` (spread apart from each other) are assigned to classes by a
    maximum-distance matching (Hungarian), so a class drawn in colour `avoid[k]` in the image is
    overlaid in a colour that differs from it.
    """
    n = len(avoid)
    candidates = vivid_colors(n).float()
    distance = torch.cdist(avoid.float(), candidates)  # (n, candidates)
    rows, cols = linear_sum_assignment(distance.numpy(), maximize=True)
    out = torch.empty(n, 3, dtype=torch.uint8)
    out[torch.as_tensor(rows)] = candidates[torch.as_tensor(cols)].to(torch.uint8)
    return out


def display_colors(num_classes: int, info: DatasetInfo | None = None, palette: Palette = "auto") -> Tensor:
    """Colours to draw classes in over images: `dataset` (the dataset's palette), `distinct` (vivid colours
    away from the dataset's), or `auto` (the dataset's, unless its images are drawn in those very colours)."""
    if palette not in ("auto", "dataset", "distinct"):
        raise ValueError(f"palette={palette!r}; expected 'auto', 'dataset' or 'distinct'")
    colors = class_colors(num_classes, info)
    content_coloured = info is not None and info.name in CONTENT_COLOURED_DATASETS
    if palette == "distinct" or (palette == "auto" and content_coloured):
        return distinct_colors(colors)
    return colors


def pil_palette(colors: Tensor) -> list[int]:
    """A 256-entry PIL palette (`putpalette`): class `k` in `colors[k]`, 255 (void) black, the rest grey."""
    table = [(128, 128, 128)] * 256
    for k, rgb in enumerate(colors.tolist()[:255]):
        table[k] = tuple(rgb)
    table[IGNORE_INDEX] = VOID_RGB
    return [v for rgb in table for v in rgb]


@dataclass
class PredictionMaps:
    """A prediction as maps at the original size: class per pixel, segment index per pixel, and the segments."""

    semantic: Tensor  # (H, W) int64, IGNORE_INDEX where nothing was predicted
    segments: Tensor | None  # (H, W) int64, 0 = none, k = segments[k - 1]; None for semantic predictions
    segment_info: list[dict[str, float | int]]  # {"id", "label", "score"}, by descending score


def prediction_maps(pred: SegPrediction, score_threshold: float = 0.5) -> PredictionMaps:
    """Paint a prediction. Segments with `score >= score_threshold` are kept (instance masks may
    overlap: higher scores are painted last, on top)."""
    if pred.masks is None:
        if pred.semantic is None:
            raise ValueError("a SegPrediction needs `semantic` or `masks`")
        return PredictionMaps(pred.semantic.long().cpu(), None, [])
    masks, labels = pred.masks.bool().cpu(), pred.labels.long().cpu()
    scores = pred.scores.float().cpu() if pred.scores is not None else torch.ones(len(labels))
    keep = (scores >= score_threshold).nonzero().flatten()
    order = keep[scores[keep].argsort(descending=True)]
    h, w = masks.shape[-2:]
    segments = torch.zeros(h, w, dtype=torch.int64)
    semantic = torch.full((h, w), IGNORE_INDEX, dtype=torch.int64)
    info = []
    for rank in range(len(order) - 1, -1, -1):  # lowest score first, so the best ends on top
        k = int(order[rank])
        segments[masks[k]] = rank + 1
        semantic[masks[k]] = labels[k]
    for rank, k in enumerate(order.tolist()):
        info.append({"id": rank + 1, "label": int(labels[k]), "score": float(scores[k])})
    if pred.semantic is not None:
        semantic = pred.semantic.long().cpu()
    return PredictionMaps(semantic, segments, info)


def target_semantic(target: SegTarget, size: tuple[int, int]) -> Tensor:
    """The target's class map cropped/padded to `size` (H, W)."""
    sem = target.semantic_map().cpu()
    out = torch.full(size, IGNORE_INDEX, dtype=torch.int64)
    h, w = min(size[0], sem.shape[0]), min(size[1], sem.shape[1])
    out[:h, :w] = sem[:h, :w]
    return out


def outlines(segments: Tensor) -> Tensor:
    """`(H, W)` bool: pixels whose right or lower neighbour belongs to another segment."""
    edge = torch.zeros_like(segments, dtype=torch.bool)
    edge[:, :-1] |= segments[:, :-1] != segments[:, 1:]
    edge[:-1, :] |= segments[:-1, :] != segments[1:, :]
    return edge


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """`(3, h, w)` float image resized to `size` (H, W), bilinear."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image.float()
    return F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def overlay(image: Tensor, semantic: Tensor, colors: Tensor, alpha: float = 0.5, segments: Tensor | None = None,
            class_outlines: bool = False) -> Tensor:
    """`(H, W, 3)` uint8: class colours blended over the `(3, H, W)` `[0, 1]` image; unlabelled pixels show
    the image; segment outlines in white when `segments` is given, else class borders when `class_outlines`."""
    base = (image.float().clamp(0, 1).permute(1, 2, 0) * 255).cpu()
    labelled = (semantic >= 0) & (semantic < len(colors))
    color = torch.zeros_like(base)
    color[labelled] = colors[semantic[labelled]].float()
    out = torch.where(labelled[..., None], (1 - alpha) * base + alpha * color, base)
    if segments is not None:
        out[outlines(segments)] = 255.0
    elif class_outlines:
        out[outlines(semantic)] = 255.0
    return out.round().clamp(0, 255).to(torch.uint8)
