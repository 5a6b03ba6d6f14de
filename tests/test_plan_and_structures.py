"""The small shared structures: fusion plans, encoder specs, targets and dataset metadata."""

from __future__ import annotations

import pytest
import torch

from fusionseg.encoders import EncoderSpec
from fusionseg.plan import FusionPlan
from fusionseg.structures import DatasetInfo, SegTarget


def test_plan_round_trips_through_json(tmp_path) -> None:
    plan = FusionPlan(master="dinov3", aux="sam2", strides=(16,), task="instance", scores={"ef_aux": {"16": 17.1}})
    plan.save(tmp_path / "plan.json")
    assert FusionPlan.load(tmp_path / "plan.json") == plan
    assert "injected at stride 16" in plan.summary()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"master": "a", "aux": None, "strides": (16,)}, "without an auxiliary"),
        ({"master": "a", "aux": "b", "strides": ()}, "at least one injection stride"),
        ({"master": "a", "task": "depth"}, "not one of"),
    ],
)
def test_inconsistent_plans_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FusionPlan(**kwargs)


def test_plan_from_dict_names_the_expected_keys() -> None:
    with pytest.raises(ValueError, match="'master' required"):
        FusionPlan.from_dict({"main": "x"})


def test_encoder_spec_parses_strings_and_dicts() -> None:
    spec = EncoderSpec.parse("regions:channels=8,sigmas=[1.0,2.0]")
    assert spec == EncoderSpec("regions", {"channels": 8, "sigmas": [1.0, 2.0]})
    assert EncoderSpec.parse({"name": "regions", "args": {"channels": 8, "sigmas": [1.0, 2.0]}}) == spec
    assert spec.build().pyramid == {4: 8, 8: 8, 16: 8, 32: 8}
    with pytest.raises(ValueError, match="NAME:key=value"):
        EncoderSpec.parse({"encoder": "regions"})


def test_spec_without_pretrained_drops_the_weights_file() -> None:
    spec = EncoderSpec("regions", {"channels": 4, "weights": "/nonexistent/regions.safetensors"})
    assert spec.build(pretrained=False).pyramid[4] == 4


def test_semantic_map_ignores_uncovered_and_crowd_pixels() -> None:
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 2:, :2] = True
    masks[2, 2:, 2:] = True
    t = SegTarget(masks=masks, labels=torch.tensor([5, 7, 9]), iscrowd=torch.tensor([False, False, True]))
    expected = torch.tensor([[5] * 4, [5] * 4, [7, 7, 255, 255], [7, 7, 255, 255]])
    assert torch.equal(t.semantic_map(), expected)


def test_target_defaults_to_no_crowd() -> None:
    t = SegTarget(masks=torch.zeros(2, 3, 3, dtype=torch.bool), labels=torch.tensor([0, 1]))
    assert t.iscrowd.tolist() == [False, False]


def test_dataset_info_checks_lengths_and_splits_things_from_stuff() -> None:
    info = DatasetInfo("toy", ("sky", "car"), (False, True), ((0, 0, 255), (255, 0, 0)))
    assert (info.num_classes, info.thing_ids, info.stuff_ids) == (2, (1,), (0,))
    with pytest.raises(ValueError, match="one entry per class"):
        DatasetInfo("toy", ("sky", "car"), (False,), ((0, 0, 255), (255, 0, 0)))


def test_null_on_the_command_line_reaches_the_encoder_as_none() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--aux", type=EncoderSpec | None)
    ns = parser.parse_args(["--aux", '{"name": "edges", "args": {"weights": "/w.pt"}}', "--aux.args.weights", "null"])
    spec = parser.instantiate_classes(ns).aux
    assert spec.args == {"weights": None}
