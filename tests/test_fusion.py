"""The master-aux pyramid: the aux's features land at the planned strides and nowhere else, and it never trains."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.encoders import build
from fusionseg.fusion import MasterAuxPyramid, SampleAlign, sample_channel_indices


def images(h: int = 64, w: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, h, w)


@pytest.mark.parametrize("align", ["project", "sample"])
def test_replace_puts_the_aligned_aux_at_the_planned_stride_only(align: str) -> None:
    master, aux = build("regions", channels=32), build("edges", channels=32)
    pyramid = MasterAuxPyramid(master, aux, strides=(16,), align=align)
    parts = pyramid.parts(images())

    assert sorted(parts.fused) == [4, 8, 16, 32]
    for s in (4, 8, 32):
        assert torch.equal(parts.fused[s], parts.master[s])
    expected = pyramid.align["16"](parts.aux[16])
    assert torch.equal(parts.fused[16], expected)
    assert not torch.allclose(parts.fused[16], parts.master[16])
    if align == "sample":  # equal widths: the selection is the identity, the aux's features themselves
        assert torch.equal(parts.fused[16], parts.aux[16])


def test_several_strides_and_add_mode() -> None:
    master, aux = build("regions", channels=32), build("edges", channels=32)
    pyramid = MasterAuxPyramid(master, aux, strides=(8, 32), align="sample", mode="add")
    parts = pyramid.parts(images())
    for s in (8, 32):
        assert torch.allclose(parts.fused[s], parts.master[s] + parts.aux[s])
    for s in (4, 16):
        assert torch.equal(parts.fused[s], parts.master[s])


def test_without_aux_the_pyramid_is_the_masters_own() -> None:
    master = build("regions", channels=16)
    x = images(50, 70)  # not a multiple of 32
    fused = MasterAuxPyramid(master)(x)
    direct = master(master.normalize(x))
    assert set(fused) == set(direct) == {4, 8, 16, 32}
    for s, f in fused.items():
        assert f.shape == (2, 16, math.ceil(50 / s), math.ceil(70 / s))
        assert torch.equal(f, direct[s])


def test_the_aux_is_frozen_and_keeps_no_graph() -> None:
    master, aux = build("regions", channels=16), build("edges", channels=16)
    pyramid = MasterAuxPyramid(master, aux, strides=(16,))
    pyramid.train()
    assert not aux.training and all(not p.requires_grad for p in aux.parameters())
    parts = pyramid.parts(images())
    assert all(f.grad_fn is None for f in parts.aux.values())  # no activations kept for backward
    sum(f.sum() for f in parts.fused.values()).backward()
    assert all(p.grad is None for p in aux.parameters())
    assert all(p.grad is not None for p in pyramid.align.parameters())
    assert master.proj["4"].weight.grad is not None


def test_a_frozen_master_runs_without_gradients() -> None:
    master = build("regions", channels=16).freeze()
    fused = MasterAuxPyramid(master)(images())
    assert all(f.grad_fn is None for f in fused.values())


def test_aux_features_of_another_size_are_resized_to_the_masters() -> None:
    master, aux = build("regions", channels=8), build("edges", channels=8)
    pyramid = MasterAuxPyramid(master, aux, strides=(8,), align="sample")
    master_feats = {s: torch.randn(1, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)}
    aux_feats = {s: torch.ones(1, 8, 3, 5) for s in (4, 8, 16, 32)}
    fused = pyramid.inject(master_feats, aux_feats)
    assert fused[8].shape == (1, 8, 8, 8)
    assert torch.allclose(fused[8], torch.ones(1, 8, 8, 8))


def test_sample_alignment_selects_evenly_or_fills_with_the_mean() -> None:
    x = torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 2, 2)
    assert SampleAlign(8, 4)(x)[0, :, 0, 0].tolist() == [0.0, 2.0, 4.0, 6.0]
    widened = SampleAlign(8, 11)(x)[0, :, 0, 0]
    assert widened[:8].tolist() == list(range(8)) and widened[8:].tolist() == [3.5] * 3


@given(aux=st.integers(1, 2048), master=st.integers(1, 2048))
def test_sampled_channels_are_increasing_and_in_range(aux: int, master: int) -> None:
    if aux < master:
        with pytest.raises(ValueError):
            sample_channel_indices(aux, master)
        return
    idx = sample_channel_indices(aux, master)
    assert idx.numel() == master and idx[0] == 0 and int(idx[-1]) < aux
    assert bool((idx[1:] > idx[:-1]).all())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strides": (64,)}, r"injection strides \[64\] are not in both pyramids"),
        ({"strides": ()}, "needs at least one injection stride"),
        ({"strides": (16,), "align": "concat"}, "align='concat'"),
        ({"strides": (16,), "mode": "mix"}, "mode='mix'"),
    ],
)
def test_bad_settings_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MasterAuxPyramid(build("regions", channels=8), build("edges", channels=8), **kwargs)


def test_strides_without_an_aux_are_rejected() -> None:
    with pytest.raises(ValueError, match="need an auxiliary encoder"):
        MasterAuxPyramid(build("regions", channels=8), None, strides=(16,))
