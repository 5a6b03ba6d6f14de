"""SC against labels: SC and SC_GT per encoder and stride, and their rank agreement over encoders x strides."""

from __future__ import annotations

import json
import os
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionseg.data import SegDataModule
from fusionseg.encoders import build
from fusionseg.profiling.sc_gt import agreement_markdown, labelled_images, sc_agreement, sc_and_sc_gt, segment_map
from fusionseg.structures import IGNORE_INDEX, SegTarget


def test_segment_map_gives_each_mask_an_id_and_leaves_crowds_out():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, 2:, :2], masks[2, 2:, 2:] = True, True, True
    target = SegTarget(masks, torch.tensor([5, 5, 7]), torch.tensor([False, False, True]))
    seg = segment_map(target)
    assert seg[0, 0] == 0 and seg[3, 0] == 1 and seg[3, 3] == IGNORE_INDEX


def test_labelled_images_are_squared_with_their_segments():
    data = SegDataModule(dataset="synthetic", task="panoptic", batch_size=2, eval_batch_size=2, num_workers=0,
                         synthetic_val_images=3, synthetic_image_size=48)
    images, segments = labelled_images(data, num_images=3, size=32)
    assert images.shape == (3, 3, 32, 32) and segments.shape == (3, 32, 32)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert all(len(s.unique()) >= 2 for s in segments)  # stuff and shapes: several segments per image


def _values(sc: list[list[float]], gt: list[list[float]]) -> dict:
    """Two encoders x len(sc) // 2 strides of per-image values."""
    half = len(sc) // 2
    return {enc: {4 * 2**i: {"sc": torch.tensor(sc[k]), "sc_gt": torch.tensor(gt[k])}
                  for i, k in enumerate(range(j * half, (j + 1) * half))} for j, enc in enumerate(("a", "b"))}


def test_agreement_is_perfect_when_sc_ranks_as_sc_gt():
    sc = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]
    agreement = sc_agreement(_values(sc, [[v * 0.5 for v in row] for row in sc]), bootstrap=50)
    assert agreement["spearman"] == pytest.approx(1.0) and agreement["num_points"] == 4
    assert all(math.isnan(r) for r in agreement["within_encoder"].values())  # 2 strides each: too few to rank
    assert agreement["bootstrap"]["ci95"][0] <= agreement["spearman"] <= agreement["bootstrap"]["ci95"][1] + 1e-9
    reversed_gt = [[1 - v for v in row] for row in sc]
    assert sc_agreement(_values(sc, reversed_gt), bootstrap=10)["spearman"] == pytest.approx(-1.0)
    assert "Spearman(SC, SC_GT) over 4 encoder x stride points: **1.000**" in agreement_markdown(agreement)


def test_agreement_without_the_shared_sfc_factor():
    sc = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]
    values = _values(sc, sc)
    for strides in values.values():
        for v in strides.values():  # SFC constant: the clustering scores rank as SC does
            v["sfc"], v["scs"] = torch.ones(2), v["sc"] ** 2
    assert sc_agreement(values, bootstrap=5)["scs_vs_gt_clustering"]["spearman"] == pytest.approx(1.0)
    assert sc_agreement(_values(sc, sc), bootstrap=5)["scs_vs_gt_clustering"] is None


def test_agreement_needs_the_same_images_everywhere():
    values = _values([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]], [[0.1, 0.2]] * 4)
    values["b"][4]["sc"] = torch.tensor([0.5])
    values["b"][4]["sc_gt"] = torch.tensor([0.5])
    with pytest.raises(ValueError, match="same images"):
        sc_agreement(values)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=6, max_size=6, unique=True), st.integers(1, 5))
def test_spearman_ignores_monotone_rescaling_of_sc(percents, power):
    sc = [[p / 100, p / 100] for p in percents]
    gt = [[(i * 7 % 6) / 6] * 2 for i in range(6)]
    plain = sc_agreement(_values(sc, gt), bootstrap=5)["spearman"]
    bent = sc_agreement(_values([[v**power for v in row] for row in sc], gt), bootstrap=5)["spearman"]
    assert plain == pytest.approx(bent) or (math.isnan(plain) and math.isnan(bent))


def test_sc_and_sc_gt_of_the_reference_encoders():
    data = SegDataModule(dataset="synthetic", task="semantic", batch_size=2, eval_batch_size=2, num_workers=0,
                         synthetic_val_images=2, synthetic_image_size=64)
    images, segments = labelled_images(data, num_images=2, size=64)
    encoders = {"edges": build("edges", channels=8), "regions": build("regions", channels=8)}
    modes = {name: e.training for name, e in encoders.items()}
    values = sc_and_sc_gt(encoders, images, segments, batch_size=2)
    assert sorted(values["edges"]) == [4, 8, 16, 32]
    for strides in values.values():
        for v in strides.values():
            assert v["sc"].shape == v["sc_gt"].shape == v["sfc"].shape == (2,)
            assert torch.allclose(v["sc"], (v["sfc"] * v["scs"]).sqrt())
            assert bool(((v["sc_gt"] >= 0) & (v["sc_gt"] <= 1)).all())
    assert {name: e.training for name, e in encoders.items()} == modes  # measured in eval mode, then restored


def test_profile_with_labelled_data_compares_sc_with_sc_gt(tmp_path, capsys):
    from fusionseg.commands.profile import main

    config = tmp_path / "data.yaml"
    config.write_text("data: {dataset: synthetic, synthetic_val_images: 2, synthetic_image_size: 64, num_workers: 0}")
    argv = ["--data", str(config), "--encoders", "edges:channels=8", "regions:channels=8", "--num-images", "2",
            "--image-size", "64", "--num-maps", "0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    agreement = json.loads((tmp_path / "a" / "sc_gt.json").read_text())
    assert agreement["num_points"] == 8 and agreement["num_images"] == 2
    assert {p["encoder"] for p in agreement["points"]} == {"edges", "regions"}  # named as the profile names them
    assert "Spearman(SC, SC_GT) over 8 encoder x stride points" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-sc-gt"]) == 0
    assert not (tmp_path / "b" / "sc_gt.json").exists()


@pytest.mark.slow
def test_profile_of_a_dataset_with_loader_workers_exits(tmp_path):
    """Loader workers ignore SIGTERM; one left alive by a half-read loader would hang the process's exit."""
    import subprocess
    import sys

    config = tmp_path / "data.yaml"
    config.write_text("data: {dataset: synthetic, synthetic_val_images: 8, synthetic_image_size: 64, num_workers: 2,"
                      " eval_batch_size: 2}")
    argv = [sys.executable, "-m", "fusionseg.cli", "profile", "--data", str(config), "--encoders", "edges:channels=8",
            "regions:channels=8", "--num-images", "2", "--image-size", "64", "--num-maps", "0", "--no-progress",
            "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "sc_gt.json").is_file()
