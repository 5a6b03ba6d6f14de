"""A procedural dataset that needs no download: textured stuff regions with textured shapes on top.

Deterministic per (seed, split, index). Classes are told apart by colour, texture AND shape: `disc`,
`box` and `ring` share a red hue, `wedge` and `blob` a yellow one, `pavement` and `sand` a grey-brown;
`rod` and `ring` are thin structures, so a model has to get boundaries right, not only regions.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from fusionseg.data.base import SegDataset, Transform, segments_target, semantic_target
from fusionseg.structures import DatasetInfo, SegTarget

# (name, is_thing, base colour, texture)
SYNTHETIC_CLASSES: tuple[tuple[str, bool, tuple[int, int, int], str], ...] = (
    ("meadow", False, (72, 138, 62), "noise"),
    ("pavement", False, (132, 126, 118), "checker"),
    ("water", False, (52, 92, 168), "waves"),
    ("sand", False, (150, 134, 112), "speckle"),
    ("disc", True, (196, 62, 52), "smooth"),
    ("box", True, (190, 70, 58), "stripes"),
    ("wedge", True, (214, 184, 48), "checker"),
    ("blob", True, (206, 176, 60), "dots"),
    ("rod", True, (44, 44, 52), "smooth"),
    ("ring", True, (198, 64, 54), "stripes"),
)
STUFF_CLASSES = tuple(i for i, c in enumerate(SYNTHETIC_CLASSES) if not c[1])
THING_CLASSES = tuple(i for i, c in enumerate(SYNTHETIC_CLASSES) if c[1])
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def synthetic_info(task: str) -> DatasetInfo:
    """All 10 classes for semantic/panoptic; the 6 shape classes for instance segmentation."""
    ids = THING_CLASSES if task == "instance" else tuple(range(len(SYNTHETIC_CLASSES)))
    return DatasetInfo(
        name="synthetic",
        class_names=tuple(SYNTHETIC_CLASSES[i][0] for i in ids),
        thing_classes=tuple(SYNTHETIC_CLASSES[i][1] for i in ids),
        colors=tuple(SYNTHETIC_CLASSES[i][2] for i in ids),
    )


def _texture(kind: str, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Texture values in about [-1, 1] at the given pixel coordinates."""
    if kind == "smooth":
        angle = rng.uniform(0, 2 * math.pi)
        return 0.3 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / 40.0)
    if kind == "noise":
        return rng.uniform(-1, 1, size=xx.shape).astype(np.float32)
    if kind == "speckle":
        return np.where(rng.random(size=xx.shape) < 0.15, 1.0, -0.2).astype(np.float32)
    if kind == "checker":
        period = rng.uniform(3, 6)
        return np.sign(np.sin(xx / period) * np.sin(yy / period)).astype(np.float32)
    if kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(2.0, 3.5)
        return np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / period)
    if kind == "waves":
        return np.sin(yy / rng.uniform(2, 4) + 2.5 * np.sin(xx / rng.uniform(8, 16)))
    if kind == "dots":
        period = rng.uniform(2.5, 4)
        return np.where(np.cos(xx / period) * np.cos(yy / period) > 0.5, 1.0, -0.3).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def _shape_mask(cls: int, yy: np.ndarray, xx: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The boolean mask of one random shape of class `cls` on an (H, W) grid."""
    h, w = yy.shape[0], xx.shape[1]
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    r = rng.uniform(0.06, 0.16) * size
    dy, dx = yy - cy, xx - cx
    name = SYNTHETIC_CLASSES[cls][0]
    if name == "disc":
        return dy**2 + dx**2 < r**2
    if name == "ring":
        thickness = max(2.0, rng.uniform(0.012, 0.025) * size)
        d = np.sqrt(dy**2 + dx**2)
        return (d < r) & (d > r - thickness)
    if name == "box":
        a = rng.uniform(0, math.pi)
        u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        return (np.abs(u) < r) & (np.abs(v) < r * rng.uniform(0.4, 1.0))
    if name == "wedge":
        angles = rng.uniform(0, 2 * math.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
        px, py = cx + 1.3 * r * np.cos(angles), cy + 1.3 * r * np.sin(angles)
        inside = np.ones((h, w), dtype=bool)
        for i in range(3):  # same side of each edge as the centre
            j = (i + 1) % 3
            edge = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
            centre_side = (px[j] - px[i]) * (cy - py[i]) - (py[j] - py[i]) * (cx - px[i])
            inside &= edge * np.sign(centre_side) > 0
        return inside
    if name == "blob":
        theta = np.arctan2(dy, dx)
        radius = np.full_like(theta, r)
        for k in (2, 3, 5):
            radius += r * rng.uniform(0.05, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        return dy**2 + dx**2 < radius**2
    # rod: a thin segment of random direction
    a, half_len = rng.uniform(0, math.pi), rng.uniform(1.5, 4.0) * r
    width = max(1.5, rng.uniform(0.006, 0.014) * size)
    u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    return (np.abs(u) < half_len) & (np.abs(v) < width)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def generate(
    index: int, image_size: tuple[int, int], seed: int, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """One image: `(H, W, 3)` uint8, an `(H, W)` segment-id map and `(segment id, class)` per segment."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    h, w = image_size
    yy, xx = _grid(h, w)
    size = min(h, w)
    # Stuff: a warped Voronoi partition between 1-3 stuff classes; one segment per class.
    num_regions = int(rng.integers(1, 4))
    region_classes = rng.choice(STUFF_CLASSES, size=num_regions)
    stuff_classes = sorted(set(region_classes.tolist()))
    segments = [(i + 1, c) for i, c in enumerate(stuff_classes)]
    if num_regions == 1:
        segment_map = np.ones((h, w), dtype=np.int64)
    else:
        seeds = rng.uniform(0, 1, size=(num_regions, 2)) * (h, w)
        warp_y = yy + 0.06 * size * np.sin(xx / rng.uniform(10, 30) + rng.uniform(0, 6.3))
        warp_x = xx + 0.06 * size * np.sin(yy / rng.uniform(10, 30) + rng.uniform(0, 6.3))
        dist = (warp_y[None] - seeds[:, 0, None, None]) ** 2 + (warp_x[None] - seeds[:, 1, None, None]) ** 2
        segment_map = np.array([stuff_classes.index(c) + 1 for c in region_classes])[dist.argmin(0)]
    # Things: 2-6 shapes, painted in order (later ones occlude earlier ones).
    for _ in range(int(rng.integers(2, 7))):
        cls = int(rng.choice(THING_CLASSES))
        mask = _shape_mask(cls, yy, xx, size, rng)
        if mask.any():
            segments.append((len(segments) + 1, cls))
            segment_map[mask] = len(segments)
    present = np.bincount(segment_map.ravel(), minlength=len(segments) + 1) > 0
    segments = [s for s in segments if present[s[0]]]
    # Colour: per-segment jittered base colour, modulated by a per-class texture, plus sensor noise.
    palette = np.zeros((present.shape[0], 3), dtype=np.float32)
    class_of = np.zeros(present.shape[0], dtype=np.int64)
    for seg_id, cls in segments:
        palette[seg_id] = np.array(SYNTHETIC_CLASSES[cls][2]) + rng.uniform(-12, 12, 3)
        class_of[seg_id] = cls
    class_map = class_of[segment_map]
    texture = np.empty((h, w), dtype=np.float32)
    for cls in sorted({c for _, c in segments}):
        mask = class_map == cls
        texture[mask] = _texture(SYNTHETIC_CLASSES[cls][3], yy[mask], xx[mask], rng)
    shade = (1.0 + 0.22 * texture) * rng.uniform(0.85, 1.15)
    image = palette[segment_map] * shade[..., None]
    image += rng.standard_normal((h, w, 1), dtype=np.float32) * 3.0
    return np.clip(image, 0, 255).astype(np.uint8), segment_map, segments


class SyntheticDataset(SegDataset):
    """`num_images` procedurally generated images of `image_size` (H, W), identical for the same seed and split."""

    def __init__(
        self,
        num_images: int = 256,
        image_size: int | tuple[int, int] = 256,
        seed: int = 0,
        split: str = "train",
        task: str = "semantic",
        transform: Transform | None = None,
    ) -> None:
        super().__init__(task, transform, skip_corrupt=False)
        if split not in SPLIT_CODES:
            raise ValueError(f"synthetic split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"image_size must be an int or (H, W), each >= 16; got {image_size!r}")
        self.num_images, self.image_size, self.seed, self.split = num_images, (int(size[0]), int(size[1])), seed, split
        self.info = synthetic_info(task)
        self._instance_class = {c: i for i, c in enumerate(THING_CLASSES)}

    def __len__(self) -> int:
        return self.num_images

    def image_id(self, index: int) -> str:
        return f"synthetic_{self.split}_{self.seed}_{index:06d}"

    def load(self, index: int) -> tuple[Tensor, SegTarget]:
        image, segment_map, segments = generate(index, self.image_size, self.seed, self.split)
        image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        if self.task == "semantic":
            # Segment ids skip the segments that were fully occluded, so map them through a lookup by id.
            class_of = np.zeros(int(segment_map.max()) + 1, dtype=np.int64)
            for seg_id, cls in segments:
                class_of[seg_id] = cls
            return image_t, semantic_target(class_of[segment_map])
        if self.task == "instance":
            triples = [(s, self._instance_class[c], False) for s, c in segments if c in self._instance_class]
        else:
            triples = [(s, c, False) for s, c in segments]
        return image_t, segments_target(segment_map, triples)
