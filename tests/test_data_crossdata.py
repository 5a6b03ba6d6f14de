"""Synscapes and UrbanSyn readers on tiny datasets in their official layouts; training on one dataset while
evaluating on another, with the label spaces checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from crossdata_writers import CAR, PERSON, ROAD, write_tiny_synscapes, write_tiny_urbansyn
from dataset_writers import LEFT, MIDDLE, RIGHT, SIZE, TOP, region_mask, write_tiny_cityscapes
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.data import (
    CityscapesDataset,
    DatasetLayoutError,
    LabelSpaceError,
    SegDataModule,
    SynscapesDataset,
    UrbanSynDataset,
    dataset_info,
)
from fusionseg.data.frames import select_frames
from fusionseg.data.urbansyn import instance_segments
from fusionseg.structures import IGNORE_INDEX, SegTarget


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("crossdata")
    return {
        "synscapes": write_tiny_synscapes(base / "synscapes"),
        "urbansyn": write_tiny_urbansyn(base / "urbansyn"),
        "cityscapes": write_tiny_cityscapes(base / "cityscapes"),
    }


def instances(target: SegTarget) -> set[tuple[int, bytes]]:
    """An instance target as an order-free set of (class, mask bytes)."""
    assert not target.iscrowd.any()
    return {(int(c), m.numpy().tobytes()) for m, c in zip(target.masks, target.labels)}


def expected_instances(classes: list[str]) -> set[tuple[int, bytes]]:
    car, person = classes.index("car"), classes.index("person")
    return {(car, region_mask(LEFT).tobytes()), (car, region_mask(MIDDLE).tobytes()),
            (person, region_mask(RIGHT).tobytes())}


@pytest.mark.parametrize("reader", [SynscapesDataset, UrbanSynDataset])
def test_instances_are_cityscapes_things_with_their_masks(roots, reader) -> None:
    dataset = reader(roots[reader.__name__[:-len("Dataset")].lower()], task="instance")
    assert len(dataset) == 3 and dataset.info.class_names == dataset_info("cityscapes", "instance").class_names
    item = dataset[0]
    assert item.orig_size == SIZE and item.image.shape == (3, *SIZE)
    # Synscapes' bus (9, no pixels) and caravan (500, not evaluated) are not instances.
    assert instances(item.target) == expected_instances(list(dataset.info.class_names))


def test_synscapes_reads_label_ids_as_train_ids_and_frames_by_number(roots) -> None:
    dataset = SynscapesDataset(roots["synscapes"], task="semantic")
    assert dataset.ids == ["1", "2", "3"] and dataset.info.num_classes == 19
    target = dataset[2].target
    masks = dict(zip(target.labels.tolist(), target.masks))
    assert set(masks) == {ROAD[1], CAR[1], PERSON[1]}
    assert (masks[CAR[1]].numpy() == (region_mask(LEFT) | region_mask(MIDDLE))).all()
    assert (masks[ROAD[1]].numpy() == region_mask(TOP)).all()


def test_urbansyn_reads_train_ids_and_takes_each_instance_class_by_majority(roots) -> None:
    semantic = UrbanSynDataset(roots["urbansyn"], task="semantic")
    assert semantic.ids == ["0001", "0002", "0003"]
    target = semantic[0].target
    masks = dict(zip(target.labels.tolist(), target.masks))
    assert set(masks) == {ROAD[1], CAR[1], PERSON[1]}  # 255 is unlabeled
    assert not masks[PERSON[1]][12, 31] and masks[ROAD[1]][12, 0]  # the road corner inside LEFT


def test_urbansyn_reads_a_single_channel_16_bit_panoptic_png(tmp_path) -> None:
    root = write_tiny_urbansyn(tmp_path, rgb_panoptic=False)
    dataset = UrbanSynDataset(root, task="instance")
    assert instances(dataset[1].target) == expected_instances(list(dataset.info.class_names))


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 18)), min_size=1, max_size=40))
def test_majority_class_of_each_instance(pixels) -> None:
    ids = np.array([p[0] for p in pixels])
    semantic = np.array([p[1] for p in pixels])
    things = {t: t - 11 for t in range(11, 19)}
    got = {s: c for s, c, crowd in instance_segments(ids, semantic, things)}
    for segment in set(ids.tolist()):
        counts = np.bincount(semantic[ids == segment], minlength=19)
        majority = int(np.flatnonzero(counts == counts.max())[0])  # ties: the smaller train id
        assert got.get(segment) == things.get(majority)


def test_frame_ranges_hold_out_frames_and_other_splits_are_refused(roots) -> None:
    assert SynscapesDataset(roots["synscapes"], split="2-3").ids == ["2", "3"]
    assert UrbanSynDataset(roots["urbansyn"], split="1-1", task="semantic").ids == ["0001"]
    assert select_frames([3, 1, 2], "all", "x", None, "") == [1, 2, 3]
    with pytest.raises(ValueError, match="no official 'val' split"):
        SynscapesDataset(roots["synscapes"], split="val")
    with pytest.raises(DatasetLayoutError, match="no frames of split '7-9'"):
        UrbanSynDataset(roots["urbansyn"], split="7-9")


def test_a_wrong_layout_prints_the_expected_tree(tmp_path) -> None:
    (tmp_path / "rgb").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"ss/ss_<n>\.png"):
        UrbanSynDataset(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"img/instance/<n>\.png"):
        SynscapesDataset(tmp_path)


def test_datamodule_trains_on_one_dataset_and_evaluates_on_another(roots) -> None:
    data = SegDataModule("synscapes", str(roots["synscapes"]), task="instance", val_dataset="cityscapes",
                         val_root=str(roots["cityscapes"]), crop_size=32, batch_size=2, num_workers=0)
    assert data.info.name == "cityscapes" and data.train_info.name == "synscapes"
    data.setup("fit")
    assert isinstance(data.train_set, SynscapesDataset) and isinstance(data.val_set, CityscapesDataset)
    assert len(data.train_set) == 3 and data.val_set.split == "val"
    batch = next(iter(data.val_dataloader()))
    assert batch.image_ids == ["aachen_000003_000019"]
    data.setup("test")
    assert isinstance(data.test_set, CityscapesDataset)


def test_one_dataset_still_reads_every_split_from_its_root(roots) -> None:
    data = SegDataModule("cityscapes", str(roots["cityscapes"]), task="instance", num_workers=0)
    data.setup("validate")
    assert data.val_set.root == roots["cityscapes"] and data.info.name == "cityscapes"


def test_different_label_spaces_are_refused_with_the_differences() -> None:
    with pytest.raises(LabelSpaceError, match=r"19 classes in 'synscapes', 150 in 'ade20k'"):
        SegDataModule("synscapes", "/data/synscapes", task="semantic", val_dataset="ade20k", val_root="/data/ade")
    with pytest.raises(LabelSpaceError, match="class 0: 'person' in 'urbansyn', 'building' in 'kitti360'"):
        SegDataModule("urbansyn", "/data/u", task="instance", val_dataset="kitti360", val_root="/data/k")


def test_another_evaluation_dataset_needs_its_root(roots) -> None:
    data = SegDataModule("synscapes", str(roots["synscapes"]), task="instance", val_dataset="cityscapes")
    with pytest.raises(ValueError, match="pass val_root=PATH"):
        data.setup("validate")


def test_unlabeled_urbansyn_values_are_ignored() -> None:
    from fusionseg.data.labels.cityscapes_synthetic import train_id_to_train_id

    lut = train_id_to_train_id()
    assert lut[18] == 18 and lut[19] == IGNORE_INDEX and lut[255] == IGNORE_INDEX


# A tiny model: the reference encoders and a small head; everything else as configs/demo.yaml has it.
TINY_FIT = [
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
    "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
    "--data.crop_size", "64", "--data.batch_size", "3", "--data.eval_batch_size", "1", "--data.num_workers", "0",
    "--data.eval_short_side", "64",  # the 24x32 images would leave 1x1 maps at stride 32
    "--model.head.num_queries", "4", "--model.head.dec_layers", "1", "--model.head.enc_layers", "1", "--model.head.hidden_dim", "32",
    "--model.head.dim_feedforward", "32", "--model.head.enc_feedforward", "32", "--model.head.train_points", "64",
    "--model.master", "regions:channels=16", "--model.aux", "edges:channels=16",
    "--model.plan", "{master: regions, aux: edges, strides: [16], task: instance}",
    "--metric_profiler.num_batches", "1", "--visuals.num_images", "1",
]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["synscapes", "urbansyn"])
def test_fit_on_a_synthetic_source_validates_on_cityscapes(roots, source, tmp_path, monkeypatch) -> None:
    from fusionseg.lightning_cli import run_lightning_cli

    monkeypatch.chdir(Path(__file__).parents[1])
    cli = run_lightning_cli([
        "fit", "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(tmp_path),
        "--data.dataset", source, "--data.root", str(roots[source]), "--data.task", "instance",
        "--data.val_dataset", "cityscapes", "--data.val_root", str(roots["cityscapes"]), *TINY_FIT,
    ])
    info = dataset_info("cityscapes", "instance")
    assert cli.trainer.global_step == 2
    assert cli.datamodule.train_set.info.name == source and cli.datamodule.val_set.info.name == "cityscapes"
    # The model learned and was scored in Cityscapes' label space: its 8 thing classes, mask AP on its val split.
    assert (cli.model.num_classes, cli.model.class_names) == (info.num_classes, list(info.class_names))
    assert cli.model.hparams.eval_rules == "cityscapes"  # the evaluated dataset's official rules, not the source's
    assert "val/AP" in cli.trainer.callback_metrics
