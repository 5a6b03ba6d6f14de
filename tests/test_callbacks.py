"""The callbacks' parts on their own: profile cache, plan from profiles, checkpoints, overlays, TensorBoard layout."""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fusionseg.callbacks.checkpointing import BestCheckpoint, LastCheckpoint, main_metric
from fusionseg.callbacks.overlay import class_colors, outlines, overlay, prediction_maps
from fusionseg.callbacks.prediction_writer import VOID_16BIT, save_label_png
from fusionseg.callbacks.profile_cache import (
    CACHE_ENV,
    ProfileCache,
    file_fingerprint,
    profile_key,
    resolve_cache_dir,
    state_dict_fingerprint,
    weights_fingerprint,
)
from fusionseg.callbacks.profile_report import choose_plan
from fusionseg.callbacks.tensorboard import custom_scalars_layout, feature_run_tag, feature_tag
from fusionseg.encoders import EncoderSpec, build
from fusionseg.metrics import METRIC_NAMES
from fusionseg.plan import encoder_names, names_encoder
from fusionseg.profiling import Profile, per_image_metrics
from fusionseg.structures import IGNORE_INDEX, DatasetInfo, SegPrediction


def _values(sc: dict[int, float], ef: dict[int, float], n: int = 3) -> dict[int, dict[str, list[float]]]:
    """Per-image values with the given SC and EF per stride (other metrics 0.5)."""
    return {s: {m: [sc[s] if m == "sc" else ef[s] if m == "ef" else 0.5] * n for m in METRIC_NAMES} for s in sc}


# -- profile cache --------------------------------------------------------------------------------------
def test_cache_dir_comes_from_argument_then_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    assert resolve_cache_dir() == resolve_cache_dir("~/.cache/fusionseg/profiles")


def test_file_fingerprint_sees_content_and_mtime_changes(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3 << 20))  # 3 MiB: first and last MiB are read
    before = file_fingerprint(path)
    assert file_fingerprint(path) == before
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert file_fingerprint(path) != before


def test_weights_fingerprint_uses_the_file_when_named_else_the_state_dict(tmp_path):
    a, b = build("edges", channels=8, seed=0), build("edges", channels=8, seed=1)
    assert state_dict_fingerprint(a) == state_dict_fingerprint(build("edges", channels=8, seed=0))
    assert state_dict_fingerprint(a) != state_dict_fingerprint(b)
    assert weights_fingerprint(EncoderSpec("edges"), a).startswith("state:")
    weights = tmp_path / "edges.pt"
    torch.save(a.state_dict(), weights)
    assert weights_fingerprint(EncoderSpec("edges", {"weights": str(weights)}), a).startswith("file:")


def test_profiles_cached_by_older_metric_code_are_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    import fusionseg.metrics

    spec = EncoderSpec.parse("edges")
    key = profile_key(spec, "state:x", ["a"], (64, 64))
    monkeypatch.setattr(fusionseg.metrics, "IMPLEMENTATION", fusionseg.metrics.IMPLEMENTATION + 1)
    assert profile_key(spec, "state:x", ["a"], (64, 64)) != key


def test_profile_key_depends_on_encoder_weights_and_images_not_on_id_order():
    spec = EncoderSpec("regions", {"channels": 8})
    key = profile_key(spec, "state:x", ["a", "b"], (64, 64))
    assert key == profile_key(spec, "state:x", ["b", "a"], (64, 64))
    assert len({key, profile_key(spec, "state:y", ["a", "b"], (64, 64)),
                profile_key(spec, "state:x", ["a", "c"], (64, 64)), profile_key(spec, "state:x", ["a", "b"], (96, 96)),
                profile_key(EncoderSpec("regions"), "state:x", ["a", "b"], (64, 64))}) == 5


def test_cache_round_trip_and_damaged_entries(tmp_path):
    cache = ProfileCache(tmp_path)
    values = _values({4: 0.5, 8: 0.25}, {4: 1.0, 8: 2.0})
    assert cache.get("k") is None
    cache.put("k", values, meta={"encoder": "regions"})
    assert cache.get("k") == values
    cache.path("bad").write_text("{not json")
    assert cache.get("bad") is None


# -- plan from profiles ----------------------------------------------------------------------------------
NAMES = {"master": "regions", "aux": "edges"}
AGREE = {"regions": _values({4: 0.8, 8: 0.8, 16: 0.7, 32: 0.6}, {4: 1, 8: 1, 16: 2, 32: 1}),
         "edges": _values({4: 0.4, 8: 0.3, 16: 0.2, 32: 0.2}, {4: 5, 8: 9, 16: 17, 32: 12})}
# The configured master (regions) is the edge-strong one here: the metrics make edges the master.
DISAGREE = {"regions": _values({4: 0.1, 8: 0.1, 16: 0.1, 32: 0.1}, {4: 3, 8: 9, 16: 1, 32: 1}),
            "edges": _values({4: 0.9, 8: 0.9, 16: 0.9, 32: 0.9}, {4: 1, 8: 2, 16: 1, 32: 6})}


def test_plan_follows_the_metrics_when_they_agree_with_the_configured_roles():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = choose_plan(Profile.from_values(AGREE), NAMES, "semantic")
    assert (plan.master, plan.aux, plan.strides) == ("regions", "edges", (16,))
    assert plan.scores["sc_mean"]["regions"] == pytest.approx(0.725) and plan.scores["roles"] == "from the metrics"


def test_roles_auto_lets_the_metrics_swap_the_configured_roles():
    plan = choose_plan(Profile.from_values(DISAGREE), NAMES, "semantic", roles="auto")
    assert (plan.master, plan.aux, plan.strides) == ("edges", "regions", (8,))  # regions' EF peak
    assert "swapped" in plan.scores["roles"]


def test_roles_config_keeps_the_configured_roles_and_warns_when_the_metrics_disagree():
    with pytest.warns(UserWarning, match="roles='config' keeps 'regions' the master"):
        plan = choose_plan(Profile.from_values(DISAGREE), NAMES, "semantic", roles="config")
    assert (plan.master, plan.aux, plan.strides) == ("regions", "edges", (32,))  # the aux's EF peak
    assert "swapping" in plan.scores["roles"]


def test_one_naming_rule_full_specs_only_within_a_family():
    a, b = EncoderSpec("timm", {"model_name": "resnet18"}), EncoderSpec("timm", {"model_name": "convnext_atto"})
    assert encoder_names([a, b]) == ["timm:model_name=resnet18", "timm:model_name=convnext_atto"]
    assert encoder_names([a, EncoderSpec("edges")]) == ["timm", "edges"]
    assert names_encoder("timm:model_name=resnet18", a) and names_encoder("timm", a)
    assert names_encoder("timm:model_name= resnet18", a) and not names_encoder("timm:model_name=resnet18", b)
    with pytest.raises(ValueError, match="more than once"):
        encoder_names([a, a])


def test_per_image_metrics_measure_only_the_unpadded_part():
    image = torch.rand(1, 3, 64, 64)
    feats = {s: torch.rand(1, 8, 64 // s, 64 // s) for s in (8, 16)}
    padded = torch.rand(2, 3, 96, 96)  # whatever lies in the padding must not count
    padded[0, :, :64, :64] = image[0]
    padded_feats = {s: torch.rand(2, 8, 96 // s, 96 // s) for s in (8, 16)}
    for s, f in feats.items():
        padded_feats[s][0, :, : 64 // s, : 64 // s] = f[0]
    alone = per_image_metrics(feats, image, [(64, 64)], seed=0)
    batched = per_image_metrics(padded_feats, padded, [(64, 64), (96, 96)], seed=0)
    for metric in ("sc", "ef"):
        assert float(batched[8][metric][0]) == pytest.approx(float(alone[8][metric][0]), abs=1e-5)
    assert len(batched[16]["ef"]) == 2


# -- checkpoints ------------------------------------------------------------------------------------------
def test_main_metric_per_task():
    assert [main_metric(t) for t in ("semantic", "instance", "panoptic")] == ["val/mIoU", "val/AP", "val/PQ"]
    with pytest.raises(ValueError, match="known tasks"):
        main_metric("depth")


def test_checkpoint_callbacks_default_to_a_stable_folder(tmp_path):
    class FakeTrainer:
        default_root_dir = str(tmp_path)

    last = LastCheckpoint(every_n_train_steps=5)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert last._find_last_checkpoints(FakeTrainer()) == {str(tmp_path / "checkpoints" / "last.ckpt")}
    assert last.dirpath == str(tmp_path / "checkpoints")
    assert LastCheckpoint(every_n_train_steps=7).state_key == last.state_key
    with pytest.raises(ValueError, match="every_n_train_steps"):
        LastCheckpoint(every_n_train_steps=0)
    assert BestCheckpoint().monitor == "auto" and BestCheckpoint(monitor="val/PQ").monitor == "val/PQ"


# -- overlays and label files ---------------------------------------------------------------------------------
def test_instances_paint_best_score_on_top_and_drop_low_scores():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, 1:3], masks[2, 3] = True, True, True
    pred = SegPrediction(masks=masks, labels=torch.tensor([1, 2, 3]), scores=torch.tensor([0.9, 0.6, 0.1]))
    maps = prediction_maps(pred, score_threshold=0.5)
    assert maps.semantic[1].tolist() == [1, 1, 1, 1]  # row 1 is in both: the 0.9 mask wins
    assert maps.semantic[2].tolist() == [2, 2, 2, 2]
    assert maps.semantic[3].tolist() == [IGNORE_INDEX] * 4  # score 0.1 is not drawn
    assert [s["label"] for s in maps.segment_info] == [1, 2]
    assert maps.segments[0, 0] == 1 and maps.segments[2, 0] == 2


@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 5))
def test_outlines_are_where_neighbours_differ(h, w, k):
    segments = torch.randint(0, k, (h, w), generator=torch.Generator().manual_seed(h * 31 + w))
    edge = outlines(segments)
    assert edge.shape == (h, w)
    if k == 1 or segments.unique().numel() == 1:
        assert not edge.any()
    for y, x in edge.nonzero().tolist():
        right = x + 1 < w and segments[y, x] != segments[y, x + 1]
        down = y + 1 < h and segments[y, x] != segments[y + 1, x]
        assert right or down


def test_overlay_colours_labelled_pixels_and_keeps_the_rest():
    image = torch.full((3, 2, 2), 0.5)
    semantic = torch.tensor([[0, IGNORE_INDEX], [1, 1]])
    colors = torch.tensor([[255, 0, 0], [0, 0, 255]], dtype=torch.uint8)
    out = overlay(image, semantic, colors, alpha=1.0)
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [0, 0, 255]
    assert out[0, 1].tolist() == [128, 128, 128]


def test_class_colors_come_from_the_dataset_or_a_fixed_palette():
    info = DatasetInfo("d", ("a", "b"), (False, True), ((1, 2, 3), (4, 5, 6)))
    assert class_colors(2, info).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert torch.equal(class_colors(7), class_colors(7)) and class_colors(7).shape == (7, 3)
    with pytest.raises(ValueError, match="classes"):
        class_colors(3, info)


def test_label_png_is_8_bit_below_255_classes_else_16_bit(tmp_path):
    labels = torch.tensor([[0, 3], [IGNORE_INDEX, 1]])
    save_label_png(tmp_path / "a.png", labels, num_classes=150)
    assert np.asarray(Image.open(tmp_path / "a.png")).tolist() == [[0, 3], [255, 1]]
    save_label_png(tmp_path / "b.png", torch.tensor([[300, IGNORE_INDEX]]), num_classes=400)
    read = np.asarray(Image.open(tmp_path / "b.png"))
    assert read.tolist() == [[300, VOID_16BIT]]


# -- TensorBoard ----------------------------------------------------------------------------------------------
def test_custom_scalar_charts_group_master_aux_and_fused_per_stride():
    layout = custom_scalars_layout((4, 8, 16, 32))
    chart = layout["Edge Fidelity (EF), master / aux / fused"]["EF at OS 16"]
    assert chart[0] == "Multiline"
    pattern = re.compile(chart[1][0])
    assert pattern.match(feature_run_tag("ef", 16))  # in TensorBoard each role is a run with this tag
    assert all(pattern.match(feature_tag("ef", role, 16)) for role in ("master", "aux", "fused"))  # other loggers
    assert not pattern.match(feature_tag("ef", "fused", 4)) and not pattern.match(feature_tag("sc", "fused", 16))
    json.dumps(layout)  # plain data, as SummaryWriter.add_custom_scalars expects
