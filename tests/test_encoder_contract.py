"""The Encoder contract: declared pyramids are checked, inputs of any size work, freezing sticks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from fusionseg.encoders import Encoder, build


class Pooling(Encoder):
    """A minimal encoder: average pooling per stride, channels repeated to the declared width."""

    def __init__(self, channels: int = 4, lie_about: int | None = None) -> None:
        super().__init__(pyramid={4: channels, 8: channels, 16: channels, 32: channels})
        self.lie_about = lie_about
        self.scale = nn.Parameter(torch.ones(()))

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        out = {}
        for s, c in self.pyramid.items():
            f = nn.functional.avg_pool2d(x, s).repeat(1, math.ceil(c / 3), 1, 1)[:, :c] * self.scale
            out[s] = f[:, :-1] if s == self.lie_about else f
        return out


@given(h=st.integers(1, 80), w=st.integers(1, 80))
def test_any_input_size_gives_ceil_sized_levels(h: int, w: int) -> None:
    out = Pooling()(torch.rand(1, 3, h, w))
    assert {s: tuple(f.shape[-2:]) for s, f in out.items()} == {
        s: (math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)
    }


def test_padding_does_not_change_the_top_left_content() -> None:
    enc = Pooling()
    x = torch.rand(1, 3, 64, 64)
    full = enc(x)[4]
    cropped = enc(x[..., :61, :62])[4]  # padded back to 64 inside, cropped to 16x16 outside
    assert torch.allclose(full[..., :15, :15], cropped[..., :15, :15])


def test_a_level_with_the_wrong_channels_is_reported() -> None:
    with pytest.raises(RuntimeError, match=r"stride 8: expected \(B, 4, h, w\)"):
        Pooling(lie_about=8)(torch.rand(1, 3, 32, 32))


def test_pyramid_must_cover_strides_4_to_32() -> None:
    class TooShort(Pooling):
        def __init__(self) -> None:
            Encoder.__init__(self, pyramid={8: 4, 16: 4, 32: 4})

    with pytest.raises(ValueError, match=r"missing \[4\]"):
        TooShort()


def test_images_must_be_rgb_batches() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Pooling()(torch.rand(3, 32, 32))


def test_frozen_encoder_stays_frozen_inside_a_training_parent() -> None:
    enc = Pooling().freeze()
    parent = nn.ModuleDict({"enc": enc, "head": nn.Linear(2, 2)}).train()
    assert not enc.training and parent["head"].training
    assert not any(p.requires_grad for p in enc.parameters())


def test_normalize_uses_the_declared_mean_and_std() -> None:
    enc = build("edges")  # identity normalization: mean 0, std 1
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(enc.normalize(x), x)
    enc = Pooling()  # ImageNet statistics by default
    y = enc.normalize(torch.full((1, 3, 1, 1), 0.485))
    assert y[0, 0].abs().max() < 1e-6 and y[0, 1].item() > 0


@pytest.mark.parametrize("name", ["edges", "regions"])
def test_reference_encoders_follow_the_contract(name: str) -> None:
    enc = build(name, channels=8)
    for h, w in [(64, 64), (45, 70)]:
        out = enc(enc.normalize(torch.rand(2, 3, h, w)))
        assert {s: tuple(f.shape) for s, f in out.items()} == {
            s: (2, 8, math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)
        }


def test_edges_encoder_is_zero_on_flat_images_and_regions_is_not() -> None:
    flat = torch.full((1, 3, 64, 64), 0.4)
    assert all(f.abs().max() < 1e-6 for f in build("edges")(flat).values())
    assert all(f.abs().max() > 1e-3 for f in build("regions")(flat).values())


def test_reference_encoders_are_deterministic_by_seed() -> None:
    x = torch.rand(1, 3, 32, 32)
    a, b, c = build("edges", seed=1), build("edges", seed=1), build("edges", seed=2)
    assert torch.equal(a(x)[8], b(x)[8]) and not torch.equal(a(x)[8], c(x)[8])
