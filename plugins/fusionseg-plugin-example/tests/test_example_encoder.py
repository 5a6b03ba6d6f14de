"""Tests every encoder plugin should have: registration, the declared pyramid, weights, freezing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fusionseg_plugin_example import ExampleConvEncoder
from torch import nn

from fusionseg.encoders import WeightsError, available, build


def test_registered_under_its_entry_point_name() -> None:
    assert "example_conv" in available()
    assert isinstance(build("example_conv", width=4), ExampleConvEncoder)


@pytest.mark.parametrize("size", [(64, 64), (45, 70)])
def test_returns_exactly_the_declared_pyramid(size: tuple[int, int]) -> None:
    enc = ExampleConvEncoder(width=4)
    h, w = size
    out = enc(enc.normalize(torch.rand(2, 3, h, w)))
    assert enc.pyramid == {4: 4, 8: 8, 16: 16, 32: 32}
    assert {s: tuple(f.shape) for s, f in out.items()} == {
        s: (2, c, math.ceil(h / s), math.ceil(w / s)) for s, c in enc.pyramid.items()
    }


def test_weights_round_trip_and_mismatch(tmp_path: Path) -> None:
    source = ExampleConvEncoder(width=4).eval()
    torch.save(source.state_dict(), tmp_path / "example.pt")
    loaded = ExampleConvEncoder(width=4, weights=tmp_path / "example.pt").eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(source(x)[32], loaded(x)[32])
    with pytest.raises(WeightsError, match="mis-shaped"):
        ExampleConvEncoder(width=8, weights=tmp_path / "example.pt")


def test_frozen_stays_frozen_in_a_training_parent() -> None:
    enc = ExampleConvEncoder(width=4).freeze()
    nn.ModuleDict({"aux": enc}).train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
