"""Profiles (per-image accumulation, JSON/CSV), profiling encoders over images, and the fusion plan."""

from __future__ import annotations

import json

import pytest
import torch

from fusionseg.commands.profile import folder_images, sample_images_dir
from fusionseg.encoders import build
from fusionseg.metrics import MAP_SIDE, METRIC_NAMES
from fusionseg.plan import FusionPlan
from fusionseg.profiling import (
    NONFINITE,
    PLAN_METRICS,
    MetricStat,
    Profile,
    ProfileAccumulator,
    measure_pyramid,
    plan_fusion,
    profile_encoders,
)


def values(curves: dict[str, dict[int, list[float]]]) -> dict:
    """Per-image values where every metric of a stride takes the given list (for hand-made profiles)."""
    return {e: {s: {m: torch.tensor(v) for m in METRIC_NAMES} for s, v in strides.items()} for e, strides in curves.items()}


def hand_profile(sc: dict[str, dict[int, float]], ef: dict[str, dict[int, float]],
                 map_side: dict[str, dict[int, float]] | None = None) -> Profile:
    stats = {}
    for encoder in sc:
        stats[encoder] = {}
        for stride in sc[encoder]:
            metrics = {m: MetricStat(0.5, 0.0, 3) for m in METRIC_NAMES}
            metrics["sc"] = MetricStat(sc[encoder][stride], 0.0, 3)
            metrics["ef"] = MetricStat(ef[encoder][stride], 0.0, 3)
            if map_side is not None:
                metrics[MAP_SIDE] = MetricStat(map_side[encoder][stride], 0.0, 3)
            stats[encoder][stride] = metrics
    return Profile(stats)


def test_profile_from_values_has_mean_std_and_count():
    profile = Profile.from_values(values({"a": {4: [1.0, 2.0, 3.0], 8: [0.0, 0.0, 3.0]}}))
    assert profile.encoders == ["a"] and profile.strides("a") == [4, 8] and profile.num_images("a") == 3
    assert profile.mean("a", 4, "sc") == pytest.approx(2.0)
    assert profile.std("a", 4, "ef") == pytest.approx((2 / 3) ** 0.5)  # population std
    assert profile.curve("a", "sc") == pytest.approx({4: 2.0, 8: 1.0})
    with pytest.raises(KeyError, match="profiled at strides"):
        profile.mean("a", 16, "sc")


def pyramid(batch: int = 4, seed: int = 0) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return ({8: torch.rand(batch, 4, 8, 8, generator=g), 16: torch.rand(batch, 4, 4, 4, generator=g)},
            torch.rand(batch, 3, 64, 64, generator=g))


def test_accumulated_batches_equal_one_measurement_of_all_images():
    feats, images = pyramid()
    whole = measure_pyramid(feats, images)
    acc = ProfileAccumulator(strides=(8, 16))
    for part in (slice(0, 3), slice(3, 4)):
        acc.update({s: f[part] for s, f in feats.items()}, images[part])
    values = acc.compute()
    assert set(values) == {8, 16} and set(values[8]) == set(whole[8])
    for s in values:
        for name, v in values[s].items():
            assert torch.allclose(v, whole[s][name]), (s, name)


def test_parts_measured_apart_are_gathered_by_concatenation_in_image_order():
    # What DDP does to the accumulator's states (dist_reduce_fx="cat"): each process's images, in one order.
    feats, images = pyramid()
    rank0, rank1, single = (ProfileAccumulator(strides=(8, 16)) for _ in range(3))
    single.update(feats, images)
    rank1.update({s: f[2:] for s, f in feats.items()}, images[2:], order=[2, 3])
    rank0.update({s: f[:2] for s, f in feats.items()}, images[:2], order=[0, 1])
    rank1.merge_state(rank0)
    gathered, expected = rank1.compute(), single.compute()
    assert all(torch.equal(gathered[s][m], expected[s][m]) for s in expected for m in expected[s])


def test_non_finite_feature_maps_are_counted_per_encoder_and_stride():
    feats, images = pyramid(batch=3)
    feats[16][1, 0, 0, 0] = float("nan")
    feats[16][2, 1, 1, 1] = float("inf")
    acc = ProfileAccumulator(strides=(8, 16))
    acc.update(feats, images)
    profile = Profile.from_values({"broken": acc.compute()})
    assert (profile.nonfinite("broken", 8), profile.nonfinite("broken", 16)) == (0, 2)
    assert profile.nonfinite_report() == [
        "broken: non-finite (NaN/Inf) feature maps in stride 16: 2 of 3 images (they score 0)"]


def test_accumulator_refuses_missing_strides_and_an_empty_compute():
    feats, images = pyramid()
    acc = ProfileAccumulator(strides=(8, 16, 32))
    with pytest.raises(ValueError, match="lack the profiled strides"):
        acc.update(feats, images)
    with pytest.raises(ValueError, match="no images"):
        ProfileAccumulator(strides=(8,)).compute()


def test_profile_json_and_csv_round_trip(tmp_path):
    profile = Profile.from_values(values({"regions": {4: [0.25, 0.5], 8: [1.0, 0.125]}, "edges": {4: [3.0, 7.5], 8: [0.0, 1.0]}}))
    profile.save_json(tmp_path / "p.json")
    profile.save_csv(tmp_path / "p.csv")
    assert Profile.load_json(tmp_path / "p.json") == profile
    assert Profile.load_csv(tmp_path / "p.csv") == profile
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["encoders"]["edges"]["num_images"] == 2 and data["metrics"] == list(METRIC_NAMES)
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["encoder", "stride", "num_images", "sc_mean", "sc_std"]
    with pytest.raises(ValueError, match="not a fusionseg profile"):
        Profile.from_dict({"encoders": {}})


def test_table_lists_every_encoder_and_stride():
    profile = Profile.from_values(values({"regions": {4: [0.5], 32: [0.25]}}))
    table = profile.table()
    assert "OS 4" in table and "OS 32" in table and "regions" in table and "SC" in table and "EF" in table


@pytest.fixture(scope="module")
def reference_profile() -> Profile:
    photos = folder_images(sample_images_dir(), num_images=3, size=256)
    encoders = {"edges": build("edges"), "regions": build("regions")}
    return profile_encoders(encoders, photos, batch_size=2, progress=False)


def test_profile_encoders_covers_every_stride_of_every_encoder(reference_profile):
    assert set(reference_profile.encoders) == {"edges", "regions"}
    assert all(reference_profile.strides(e) == [4, 8, 16, 32] for e in reference_profile.encoders)
    assert reference_profile.num_images("edges") == 3


def test_plan_picks_regions_as_master_for_semantic_and_edges_for_the_edge_task(reference_profile):
    semantic = plan_fusion(reference_profile, task="semantic")
    assert (semantic.master, semantic.aux, semantic.task) == ("regions", "edges", "semantic")
    # 256 px photographs: the stride-32 maps are 8x8, too small to score, so they take no part
    assert reference_profile.map_side("edges", 32) == 8
    assert semantic.scores["excluded_strides"] == {"edges": [32], "regions": [32]}
    ef_edges = {s: v for s, v in reference_profile.curve("edges", "ef").items() if s != 32}
    assert semantic.strides == (max(ef_edges, key=ef_edges.get),)
    assert semantic.scores["ef_aux"] == {str(s): v for s, v in ef_edges.items()}
    edge = plan_fusion(reference_profile, task="edge")
    assert (edge.master, edge.aux) == ("edges", "regions")
    sc_regions = {s: v for s, v in reference_profile.curve("regions", "sc").items() if s != 32}
    assert edge.strides == (max(sc_regions, key=sc_regions.get),)
    # the plan survives its own JSON round trip (as checkpoints store it)
    assert FusionPlan.from_dict(json.loads(json.dumps(semantic.to_dict()))) == semantic


def test_plan_ties_break_by_name_then_by_the_smaller_stride():
    same = {4: 0.5, 8: 0.5, 16: 0.5}
    profile = hand_profile(sc={"b": same, "a": same, "c": same}, ef={"b": {4: 1.0, 8: 2.0, 16: 2.0}, "a": same, "c": same})
    plan = plan_fusion(profile)
    assert plan.master == "a"  # equal SC: first name
    assert plan.aux == "b" and plan.strides == (8,)  # b has the highest EF, equal at 8 and 16: the smaller
    edge = plan_fusion(hand_profile(sc={"x": same, "y": same}, ef={"x": same, "y": same}), task="edge")
    assert (edge.master, edge.aux, edge.strides) == ("x", "y", (4,))


def test_plan_needs_two_encoders_and_a_known_task():
    one = Profile.from_values(values({"solo": {4: [0.5]}}))
    with pytest.raises(ValueError, match="at least two encoders"):
        plan_fusion(one)
    two = Profile.from_values(values({"a": {4: [0.5]}, "b": {4: [0.4]}}))
    with pytest.raises(ValueError, match="task"):
        plan_fusion(two, task="depth")


class _Batch:
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images


def test_profile_encoders_takes_batches_limits_images_and_restores_train_mode():
    enc = build("regions", channels=8)
    enc.train()
    batches = [_Batch(torch.rand(3, 3, 64, 64)), torch.rand(3, 3, 64, 64)]
    profile = profile_encoders({"r": enc}, batches, num_images=4, batch_size=2, progress=False)
    assert profile.num_images("r") == 4
    assert enc.training
    with pytest.raises(ValueError, match="no images"):
        profile_encoders({"r": enc}, [], progress=False)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        profile_encoders({"r": enc}, torch.rand(2, 64, 64), progress=False)


def test_strides_with_tiny_feature_maps_take_no_part_in_the_plan():
    # EF of white noise on a 4x4 map beats every real encoder: such strides must not win the argmax
    sides = {4: 64.0, 8: 32.0, 16: 16.0, 32: 4.0}
    ef = {"aux": {4: 5.0, 8: 9.0, 16: 12.0, 32: 60.0}, "master": {s: 1.0 for s in sides}}
    sc = {"aux": {s: 0.2 for s in sides}, "master": {s: 0.7 for s in sides}}
    profile = hand_profile(sc=sc, ef=ef, map_side={"aux": sides, "master": sides})
    plan = plan_fusion(profile)
    assert (plan.master, plan.aux, plan.strides) == ("master", "aux", (16,))
    assert plan.scores["excluded_strides"] == {"aux": [32], "master": [32]}
    assert plan_fusion(profile, min_map_side=4).strides == (32,)
    with pytest.raises(ValueError, match="profile larger images"):
        plan_fusion(profile, min_map_side=128)


def test_map_sides_survive_json_and_csv(tmp_path):
    sides = {4: 64.0, 32: 8.0}
    profile = hand_profile(sc={"a": {4: 0.5, 32: 0.4}}, ef={"a": {4: 1.0, 32: 2.0}}, map_side={"a": sides})
    profile.save_json(tmp_path / "p.json")
    profile.save_csv(tmp_path / "p.csv")
    for loaded in (Profile.load_json(tmp_path / "p.json"), Profile.load_csv(tmp_path / "p.csv")):
        assert loaded.map_side("a", 32) == 8.0 and loaded.mean("a", 4, "ef") == 1.0


def test_configured_roles_are_kept_and_the_metrics_choice_is_recorded():
    same = {4: 0.5, 8: 0.5}
    profile = hand_profile(sc={"d3": {4: 0.7, 8: 0.7}, "s2": same}, ef={"d3": {4: 1.0, 8: 2.0}, "s2": {4: 3.0, 8: 9.0}})
    swapped = plan_fusion(profile, roles=("s2", "d3"))
    assert (swapped.master, swapped.aux, swapped.strides) == ("s2", "d3", (8,))
    assert swapped.scores["metric_roles"] == {"master": "d3", "aux": "s2"}
    with pytest.raises(ValueError, match="two different profiled encoders"):
        plan_fusion(profile, roles=("s2", "s2"))


def test_the_plan_metric_is_a_choice_recorded_in_the_plan():
    same = {4: 0.5, 8: 0.5, 16: 0.5}
    profile = hand_profile(sc={"m": {4: 0.9, 8: 0.9, 16: 0.9}, "a": same}, ef={"m": same, "a": {4: 1.0, 8: 5.0, 16: 2.0}})
    for s in (4, 8, 16):  # EF_CC peaks elsewhere than EF
        profile.stats["a"][s]["ef_cc"] = MetricStat({4: 3.0, 8: 1.0, 16: 0.5}[s], 0.0, 3)
    assert set(PLAN_METRICS) >= {"ef", "ef_cc"}
    by_ef, by_ef_cc = plan_fusion(profile), plan_fusion(profile, plan_metric="ef_cc")
    assert (by_ef.strides, by_ef.scores["plan_metric"]) == ((8,), "ef")
    assert (by_ef_cc.strides, by_ef_cc.scores["plan_metric"]) == ((4,), "ef_cc")
    assert by_ef_cc.scores["ef_cc_aux"] == {"4": 3.0, "8": 1.0, "16": 0.5}
    with pytest.raises(ValueError, match="unknown plan_metric 'fc'"):
        plan_fusion(profile, plan_metric="fc")


def test_an_auxiliary_with_only_zero_scores_is_refused_naming_it_and_its_strides():
    # Features that are NaN score 0 everywhere: the metrics would make such an encoder the aux.
    zero = {4: 0.0, 8: 0.0, 16: 0.0}
    profile = hand_profile(sc={"good": {4: 0.8, 8: 0.8, 16: 0.8}, "nan_encoder": zero},
                           ef={"good": {4: 3.0, 8: 4.0, 16: 5.0}, "nan_encoder": zero})
    for s in zero:
        profile.stats["nan_encoder"][s][NONFINITE] = MetricStat(1.0, 0.0, 3)
    with pytest.raises(ValueError, match=r"'nan_encoder' as the auxiliary: its ef scores at strides \[4, 8, 16\]") as err:
        plan_fusion(profile)
    assert "9 of its feature maps were NaN/Inf" in str(err.value)


def test_the_released_codes_fcd_is_profiled_and_can_plan(reference_profile, tmp_path):
    assert "fcd" in PLAN_METRICS and "FCD" in reference_profile.table(("sc", "fcd"))
    fcd_edges = {s: reference_profile.mean("edges", s, "fcd") for s in (4, 8, 16)}  # stride 32: 8x8 maps, left out
    assert all(0.0 <= v <= 100.0 for v in fcd_edges.values())
    plan = plan_fusion(reference_profile, plan_metric="fcd")
    assert plan.scores["plan_metric"] == "fcd" and plan.strides == (max(fcd_edges, key=fcd_edges.get),)
    reference_profile.save_csv(tmp_path / "p.csv")
    assert Profile.load_csv(tmp_path / "p.csv").mean("edges", 8, "fcd") == pytest.approx(fcd_edges[8])
