"""The synthetic dataset: deterministic per seed, well-formed targets for every task, fast to generate."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fusionseg.data import SyntheticDataset
from fusionseg.data.synthetic import THING_CLASSES, generate


def test_same_seed_gives_identical_data_and_another_seed_differs() -> None:
    first = SyntheticDataset(num_images=4, image_size=(48, 64), seed=3, task="panoptic")
    again = SyntheticDataset(num_images=4, image_size=(48, 64), seed=3, task="panoptic")
    other = SyntheticDataset(num_images=4, image_size=(48, 64), seed=4, task="panoptic")
    for i in (0, 3, 1):  # any order: each image depends on (seed, split, index) only
        a, b, c = first[i], again[i], other[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.target.masks, b.target.masks)
        assert torch.equal(a.target.labels, b.target.labels) and a.image_id == b.image_id
        assert not torch.equal(a.image, c.image)


def test_train_and_val_splits_differ() -> None:
    train, _, _ = generate(0, (32, 32), seed=0, split="train")
    val, _, _ = generate(0, (32, 32), seed=0, split="val")
    assert not np.array_equal(train, val)


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_targets_are_well_formed(task: str) -> None:
    dataset = SyntheticDataset(num_images=6, image_size=(40, 56), seed=0, task=task)
    assert dataset.info.num_classes == (6 if task == "instance" else 10)
    for item in dataset:
        masks, labels = item.target.masks, item.target.labels
        assert item.image.shape == (3, 40, 56) and 0 <= item.image.min() and item.image.max() <= 1
        assert masks.shape[-2:] == (40, 56) and masks.flatten(1).any(1).all()
        assert labels.min() >= 0 and labels.max() < dataset.info.num_classes
        assert masks.sum(0).max() <= 1  # no overlaps
        if task != "instance":  # semantic and panoptic cover every pixel
            assert masks.any(0).all()
        if task == "semantic":
            assert len(set(labels.tolist())) == len(labels)  # one mask per class


def test_images_hold_several_things_and_stuff_and_thin_structures() -> None:
    kinds = set()
    for i in range(40):
        _, segment_map, segments = generate(i, (64, 64), seed=0)
        classes = {c for _, c in segments}
        kinds |= classes
        assert classes - set(THING_CLASSES), "every image has a stuff background"
    assert kinds == set(range(10)), "every class occurs within a few dozen images"


def test_generation_takes_a_few_milliseconds() -> None:
    generate(0, (256, 256), seed=0)  # warm the grid cache
    start = time.perf_counter()
    for i in range(20):
        generate(i, (256, 256), seed=0)
    assert (time.perf_counter() - start) / 20 < 0.05  # generous: shared CI machines; ~4 ms here


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match="image_size"):
        SyntheticDataset(image_size=(8, 8))
    with pytest.raises(ValueError, match="split"):
        SyntheticDataset(split="holdout")


def test_semantic_targets_equal_panoptic_segments_merged_by_class() -> None:
    # Image 123 at 32 px has a shape hidden entirely behind later ones, so its segment ids have a gap.
    semantic = SyntheticDataset(num_images=130, image_size=32, seed=0, task="semantic")
    panoptic = SyntheticDataset(num_images=130, image_size=32, seed=0, task="panoptic")
    for i in (0, 1, 123):
        assert torch.equal(semantic[i].target.semantic_map(), panoptic[i].target.semantic_map())
