"""Edge Fidelity: hand-computed FC, SP, EC and NC cases; invariance; every metric finite and in range."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.metrics import (
    EF_KEYS,
    METRIC_NAMES,
    correlation_radius,
    edge_fidelity,
    feature_metrics,
    frequency_characteristics,
    shift_radii,
)

RANGES = {name: (0.0, 100.0) if name in ("ef", "ef_cc") else (0.0, 1.0) for name in METRIC_NAMES}


def stripes(h: int, w: int, period: float, offset: float = 2.0) -> torch.Tensor:
    """One positive channel `offset + cos(2 pi x / period)`, constant down the columns: `(1, 1, h, w)`."""
    x = torch.arange(w, dtype=torch.float32)
    return (offset + torch.cos(2 * math.pi * x / period)).expand(h, w)[None, None].clone()


def numpy_fc(p: np.ndarray, rho_low: float = 0.15) -> float:
    """FC as the spec writes it, independently in numpy."""
    z = (p - p.mean()) / max(p.std(), 1e-8)
    z = np.clip(z, -8, 8) * np.outer(np.hanning(p.shape[0]), np.hanning(p.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(z))) ** 2
    u, v = np.meshgrid(np.linspace(-1, 1, p.shape[0]), np.linspace(-1, 1, p.shape[1]), indexing="ij")
    rho = np.sqrt(u**2 + v**2)
    rho /= rho.max()
    return float(power[rho >= rho_low].sum() / power.sum())


def test_fc_of_a_pure_low_and_a_pure_high_frequency_sinusoid():
    low = (stripes(64, 64, period=64) - 2).squeeze(1)  # one cycle across the map
    high = (stripes(64, 64, period=4) - 2).squeeze(1)  # sixteen cycles
    fc_low, fc_high = frequency_characteristics(low).item(), frequency_characteristics(high).item()
    assert fc_low < 0.01 and fc_high > 0.99
    assert fc_low == pytest.approx(numpy_fc(low[0].numpy()), abs=1e-5)
    assert fc_high == pytest.approx(numpy_fc(high[0].numpy()), abs=1e-5)
    # through edge_fidelity: the PCA map of one channel is that channel, min-max rescaled
    images = torch.rand(1, 3, 64, 64)
    assert edge_fidelity(stripes(64, 64, 4), images)["fc"].item() == pytest.approx(fc_high, abs=1e-4)


def test_sp_of_stripes_with_a_known_correlation_length():
    # High-passed stripes stay cos(w x) (constant down the columns); shifted by r they correlate
    # cos(w r) in the 6 directions with a horizontal step and 1 in the 2 vertical ones, so the mean
    # NCC is (6 cos(w r) + 2) / 8 and r_tau is the first radius where it falls below tau = 0.5.
    h = w = 128
    period = 64
    radii = shift_radii(h, w)
    expected = next(r for r in radii if (6 * math.cos(2 * math.pi * r / period) + 2) / 8 < 0.5)
    assert expected == 13
    feat = stripes(h, w, period)
    assert correlation_radius(feat[:, 0]).item() == expected
    sp = edge_fidelity(feat, torch.rand(1, 3, h, w))["sp"].item()
    assert sp == pytest.approx(1 / (1 + expected / 64), abs=1e-6)


def test_sp_of_white_noise_is_the_first_radius():
    noise = torch.rand(2, 8, 40, 40) + 1
    assert torch.equal(correlation_radius(noise.norm(dim=1)), torch.ones(2))
    assert torch.allclose(edge_fidelity(noise, torch.rand(2, 3, 40, 40))["sp"], torch.full((2,), 1 / (1 + 1 / 64)))


def step_edge(column: int, size: int = 22) -> torch.Tensor:
    """One positive channel with a vertical step between `column - 1` and `column`."""
    feat = torch.ones(1, 1, size, size)
    feat[..., column:] = 2.0
    return feat


@pytest.mark.parametrize(
    ("column", "ec", "nc"),
    [
        (11, 1.0, 1.0),  # on the image edge: all energy in the core zone A_in
        (14, 0.5, 0.5),  # beside it: half in A_in, half in the near band A_near
        (18, 0.0, 1.0),  # away from it: outside both
    ],
)
def test_ec_and_nc_of_feature_edges_on_beside_and_away_from_the_image_edge(column, ec, nc):
    # A 22x22 map: valid = the inner 20x20 = 400 positions. The image (black | white at column 11)
    # has gradient 1 in columns 10 and 11, exactly the top 10% (40 positions), which are also its
    # centerline; A_in = columns 8..13 (radius 2), A_near = columns 6, 7, 14, 15 (radius 4).
    # A feature step at column c has gradient 1 in columns c - 1 and c: 40 positions = top 10%.
    images = torch.zeros(1, 3, 22, 22)
    images[..., 11:] = 1.0
    out = edge_fidelity(step_edge(column), images)
    a_in = 6 * 20 / 400
    assert out["ec"].item() == pytest.approx(ec, abs=1e-6)
    assert out["nc"].item() == pytest.approx(nc, abs=1e-6)
    assert out["ec_cc"].item() == pytest.approx(max(0.0, (ec - a_in) / (1 - a_in)), abs=1e-6)
    parts = out["fc"] * out["sp"] * 100
    assert out["ef"].item() == pytest.approx((parts * out["ec"] * out["nc"]).item(), rel=1e-5)
    assert out["ef_cc"].item() == pytest.approx((parts * out["ec_cc"] * out["nc"]).item(), rel=1e-5, abs=1e-6)


def test_flat_image_or_flat_features_have_no_edges():
    flat_image = edge_fidelity(torch.randn(1, 4, 16, 16), torch.full((1, 3, 64, 64), 0.5))
    assert flat_image["ec"].item() == 0.0 and flat_image["nc"].item() == 0.0 and flat_image["ef"].item() == 0.0
    flat_feat = edge_fidelity(torch.ones(1, 4, 16, 16), torch.rand(1, 3, 64, 64))
    assert all(flat_feat[k].item() == 0.0 for k in EF_KEYS)


def test_images_of_the_wrong_shape_get_a_clear_error():
    with pytest.raises(ValueError, match=r"\(2, 3, H, W\)"):
        edge_fidelity(torch.randn(2, 4, 8, 8), torch.rand(1, 3, 32, 32))


def structured(seed: int, c: int, h: int, w: int) -> torch.Tensor:
    """A smooth pattern along one channel direction (a clear first principal component) plus weaker texture.

    Without a dominant component the first principal component is ill-defined (two nearly equal
    eigenvalues), and rounding alone may turn it.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, max(2, h // 4), max(2, w // 4), generator=g)
    pattern = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    direction = torch.randn(1, c, 1, 1, generator=g)
    return 3 * direction / direction.norm() * pattern + 0.3 * torch.randn(1, c, h, w, generator=g)


@given(seed=st.integers(0, 10_000), c=st.integers(1, 10), h=st.integers(5, 24), w=st.integers(5, 24),
       scale=st.floats(0.01, 100.0))
def test_ef_is_unchanged_by_feature_scaling(seed, c, h, w, scale):
    feat = structured(seed, c, h, w)
    images = torch.rand(1, 3, 4 * h, 4 * w, generator=torch.Generator().manual_seed(seed))
    ref, scaled = edge_fidelity(feat, images), edge_fidelity(feat * scale, images)
    for key in EF_KEYS:
        assert scaled[key].item() == pytest.approx(ref[key].item(), abs=1e-3 if key.startswith("ef") else 1e-5), key


SHAPES = [(1, 1), (2, 2), (3, 3), (1, 30), (30, 1), (2, 40), (40, 2), (5, 64)]
KINDS = ["constant", "random", "nan", "inf", "zeros", "huge"]


def degenerate(kind: str, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(1, c, h, w, generator=g)
    if kind == "constant":
        return torch.full((1, c, h, w), 0.37)
    if kind == "zeros":
        return torch.zeros(1, c, h, w)
    if kind == "huge":
        return feat * 1e30
    if kind in ("nan", "inf"):
        feat.view(-1)[seed % feat.numel()] = float("nan") if kind == "nan" else float("-inf")
    return feat


@given(shape=st.sampled_from(SHAPES), kind=st.sampled_from(KINDS), c=st.integers(1, 6), seed=st.integers(0, 1000),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
def test_every_metric_is_finite_and_in_range_on_degenerate_maps(shape, kind, c, seed, dtype):
    h, w = shape
    feat = torch.cat([degenerate(kind, c, h, w, seed), torch.randn(1, c, h, w)]).to(dtype)
    images = torch.rand(2, 3, 8 * h, 8 * w)
    out = feature_metrics(feat, images)
    assert set(out) == set(METRIC_NAMES)
    for name, value in out.items():
        lo, hi = RANGES[name]
        assert value.dtype == torch.float32 and value.shape == (2,), name
        assert torch.isfinite(value).all() and (value >= lo).all() and (value <= hi + 1e-4).all(), (name, value)
    if kind in ("nan", "inf"):
        assert all(out[name][0].item() == 0.0 for name in METRIC_NAMES)


def test_an_image_scores_the_same_alone_and_in_a_batch():
    feats = torch.stack([structured(s, 6, 16, 16)[0] for s in range(3)])
    images = torch.rand(3, 3, 64, 64)
    batch = feature_metrics(feats, images)
    alone = feature_metrics(feats[1:2], images[1:2])
    for name in METRIC_NAMES:
        assert batch[name][1].item() == pytest.approx(alone[name].item(), abs=1e-5), name
