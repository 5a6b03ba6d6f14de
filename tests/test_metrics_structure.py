"""Structural Coherence: SFC against its closed form, SCS on clusters and noise, SC_GT, invariances."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.metrics import sc_gt, scs, sfc, structural_coherence


def block_map(levels: torch.Tensor, block: tuple[int, int], sigma: float, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Features whose norm is `10 + level of the block + noise`, the noise of every block having
    mean exactly 0 and population std exactly `sigma`."""
    g = torch.Generator().manual_seed(seed)
    ky, kx = levels.shape
    bh, bw = block
    noise = torch.randn(ky, kx, bh * bw, generator=g)
    noise = noise - noise.mean(-1, keepdim=True)
    noise = sigma * noise / noise.std(-1, correction=0, keepdim=True)
    value = (10 + levels[..., None] + noise).view(ky, kx, bh, bw).permute(0, 2, 1, 3).reshape(ky * bh, kx * bw)
    direction = torch.randn(channels, generator=g)
    return (direction / direction.norm())[None, :, None, None] * value  # ||feat|| = value


def segments(h: int, w: int, n: int, seed: int) -> torch.Tensor:
    """A Voronoi segment map `(h, w)` with `n` segments."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy, xx], -1).float()
    return ((pos[None] - centers[:, None, None]) ** 2).sum(-1).argmin(0)


def clustered_features(c: int, h: int, w: int, n: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = segments(h, w, n, seed)
    protos = 3 * torch.randn(n, c, generator=g)
    return (protos[labels].permute(2, 0, 1) + noise * torch.randn(c, h, w, generator=g))[None]


@pytest.mark.parametrize(
    ("size", "block"),
    [((64, 64), (4, 4)), ((16, 16), (2, 2)), ((30, 20), (2, 2)), ((8, 48), (2, 3))],
)
def test_sfc_of_block_constant_map_with_known_noise_is_the_closed_form(size, block):
    # K = 16 cuts an (h, w) map into min(16, h // 2) x min(16, w // 2) blocks.
    h, w = size
    ky, kx = min(16, h // 2), min(16, w // 2)
    assert (h // ky, w // kx) == block
    levels = torch.randn(ky, kx, generator=torch.Generator().manual_seed(3))
    sigma = 0.7
    feat = block_map(levels, block, sigma)
    between = levels.var(correction=0)
    expected = between / (between + sigma**2)
    assert sfc(feat).item() == pytest.approx(expected.item(), abs=1e-5)


def test_sfc_blocks_are_never_smaller_than_2x2_so_noise_scores_low():
    # With the paper's 1x1 blocks a 16x16 map would score ~1 for pure noise; 2x2 blocks of iid
    # noise give Var(mu) / (Var(mu) + E var) = (1/4) / (1/4 + 3/4) = 0.25 in expectation.
    values = sfc(torch.randn(16, 8, 16, 16))
    assert values.mean().item() == pytest.approx(0.25, abs=0.08)
    assert values.max().item() < 0.5


def test_sfc_of_a_map_constant_on_its_blocks_is_one():
    levels = torch.randn(8, 8)
    feat = block_map(levels, (2, 2), sigma=0.0)
    assert sfc(feat).item() == pytest.approx(1.0, abs=1e-4)


def test_scs_separates_clustered_features_from_noise():
    clustered = clustered_features(16, 24, 24, n=8, noise=0.1, seed=0)
    noise = torch.randn(1, 16, 24, 24)
    high, low = scs(clustered).item(), scs(noise).item()
    assert high > 0.75 and low < 0.6 and high > low + 0.2


def test_structural_coherence_is_the_geometric_mean_of_its_parts():
    feat = clustered_features(8, 20, 20, n=6, noise=0.5, seed=1)
    out = structural_coherence(feat)
    assert set(out) == {"sc", "sfc", "scs"}
    assert all(v.shape == (1,) and v.dtype == torch.float32 for v in out.values())
    assert out["sc"].item() == pytest.approx(math.sqrt(out["sfc"].item() * out["scs"].item()), rel=1e-6)


def test_scs_is_zero_when_no_k_has_two_members_per_cluster():
    # Three distinct feature vectors cannot fill 6, 8 or 10 clusters with 2 members each.
    feat = clustered_features(4, 12, 12, n=3, noise=0.0, seed=2)
    assert scs(feat).item() == 0.0


def test_sc_gt_scores_features_that_follow_the_segments_above_features_that_do_not():
    labels = segments(24, 24, 5, seed=4)
    g = torch.Generator().manual_seed(5)
    protos = torch.randn(5, 8, generator=g)
    following = (protos[labels].permute(2, 0, 1) + 0.2 * torch.randn(8, 24, 24, generator=g))[None]
    unrelated = clustered_features(8, 24, 24, n=5, noise=0.2, seed=99)
    big = labels.repeat_interleave(4, 0).repeat_interleave(4, 1)[None]  # labels at 4x the feature size
    big[:, :8] = 255  # ignored rows
    assert sc_gt(following, big).item() > sc_gt(unrelated, big).item() + 0.1
    assert sc_gt(following, torch.full((1, 24, 24), 255)).item() == 0.0  # everything ignored
    with pytest.raises(ValueError, match="integer"):
        sc_gt(following, big.float())


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        sfc(torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match="floating point"):
        scs(torch.ones(1, 2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="silhouette_samples"):
        scs(torch.randn(1, 2, 4, 4), silhouette_samples=10)


@given(
    seed=st.integers(0, 10_000),
    channels=st.integers(2, 12),
    h=st.integers(6, 20),
    w=st.integers(6, 20),
    scale=st.floats(0.05, 20.0),
)
def test_sc_is_unchanged_by_channel_permutation_and_positive_scaling(seed, channels, h, w, scale):
    feat = clustered_features(channels, h, w, n=1 + seed % 7, noise=0.3, seed=seed)
    perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
    ref = structural_coherence(feat)
    for other in (feat[:, perm], feat * scale):
        out = structural_coherence(other)
        for key in ("sc", "sfc", "scs"):
            assert out[key].item() == pytest.approx(ref[key].item(), abs=1e-4), key
