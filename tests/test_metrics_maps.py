"""Building blocks of the metrics: z-score, PCA, valid mask, Sobel, top-q, k-means, silhouette."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score as sklearn_silhouette

from fusionseg.metrics import (
    kmeans,
    norm_map,
    pca_map,
    principal_scores,
    silhouette_score,
    sobel_magnitude,
    subset_silhouettes,
    top_q_mask,
    valid_mask,
    zscore,
)
from fusionseg.metrics import pca as pca_module
from fusionseg.metrics.silhouette import batch_silhouettes, stratified_subset


def test_norm_map_is_the_channel_l2_norm():
    feat = torch.tensor([[3.0, 0.0], [4.0, 1.0]])[None, :, :, None].expand(1, 2, 2, 3)  # (1, C=2, 2, 3)
    assert torch.allclose(norm_map(feat), torch.tensor([[5.0] * 3, [1.0] * 3])[None])


def test_zscore_has_zero_mean_unit_population_std_and_zeros_for_a_constant_map():
    x = torch.randn(2, 5, 7) * 3 + 10
    z = zscore(x)
    assert torch.allclose(z.flatten(1).mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.flatten(1).std(1, correction=0), torch.ones(2), atol=1e-5)
    assert torch.equal(zscore(torch.full((1, 4, 4), 0.1)), torch.zeros(1, 4, 4))


def test_valid_mask_leaves_out_a_one_pixel_frame():
    mask = valid_mask(4, 5)
    assert mask.sum() == 2 * 3 and not mask[0].any() and not mask[:, -1].any()
    assert not valid_mask(2, 9).any()


def test_sobel_of_a_ramp_is_the_central_difference_and_half_of_it_at_replicated_borders():
    ramp = torch.arange(6.0).repeat(5, 1)[None]  # value = column index
    g = sobel_magnitude(ramp)
    # (1 + 2 + 1) / 4 * (x[c + 1] - x[c - 1]) = 2 inside; the replicated border column sees a step of 1
    assert torch.allclose(g[0, :, 1:-1], torch.full((5, 4), 2.0))
    assert torch.allclose(g[0, :, 0], torch.ones(5)) and torch.allclose(g[0, :, -1], torch.ones(5))


def test_top_q_mask_takes_exactly_ceil_q_of_the_valid_positions():
    values = torch.arange(100.0).view(1, 10, 10)
    mask = top_q_mask(values, valid_mask(10, 10), 0.10)  # |valid| = 64 -> ceil(6.4) = 7
    assert int(mask.sum()) == 7
    assert set(values[mask].tolist()) == {88.0, 87.0, 86.0, 85.0, 84.0, 83.0, 82.0}
    # 0.1 * 70 is 7.000000000000001 in floating point; the count must still be 7
    wide = top_q_mask(torch.rand(1, 9, 16), valid_mask(9, 16), 0.10)  # |valid| = 7 * 14 = 98 -> 10
    assert int(wide.sum()) == 10
    assert not top_q_mask(torch.ones(1, 10, 10), valid_mask(10, 10), 0.10).any()


def test_pca_map_recovers_a_rank_one_pattern_up_to_sign():
    pattern = torch.linspace(0, 1, 64).view(8, 8)
    feat = torch.stack([2 * pattern + 1, -3 * pattern, 0.5 * pattern])[None] + 1e-4 * torch.randn(1, 3, 8, 8)
    p = pca_map(feat)[0]
    assert torch.allclose(p, pattern, atol=1e-3) or torch.allclose(p, 1 - pattern, atol=1e-3)
    assert torch.equal(pca_map(torch.ones(1, 3, 8, 8)), torch.zeros(1, 8, 8))


def test_subspace_iteration_matches_the_exact_principal_components(monkeypatch):
    # Low-rank structure plus noise, as feature maps have; 300 channels x 400 positions > EXACT_LIMIT.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 6, generator=g) @ (torch.randn(2, 6, 400, generator=g) * torch.tensor([8, 6, 4, 3, 2, 1.0])[:, None])
    x = x + 0.1 * torch.randn(2, 300, 400, generator=g)
    fast = principal_scores(x, 4)
    monkeypatch.setattr(pca_module, "EXACT_LIMIT", 10_000)
    exact = principal_scores(x, 4)
    assert torch.allclose(fast.abs(), exact.abs(), rtol=1e-3, atol=1e-2 * float(exact.abs().max()))
    # Iterating on a quarter of the positions, with the given channel means, finds the same components.
    sketched = pca_module.principal_scores(x, 4, sketch_rows=100, mean=x.mean(2))
    assert torch.allclose(sketched.abs(), exact.abs(), rtol=1e-3, atol=1e-2 * float(exact.abs().max()))


def test_kmeans_is_seeded_and_finds_well_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centers[:, None] + 0.1 * torch.randn(3, 40, 2, generator=g)).reshape(-1, 2)
    cent, labels = kmeans(x, 3, seed=0)
    assert cent.shape == (3, 2) and labels.shape == (120,)
    assert all(len(set(labels[i * 40 : (i + 1) * 40].tolist())) == 1 for i in range(3))
    assert torch.equal(kmeans(x, 3, seed=0)[1], labels)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        kmeans(x[:2], 3)


def test_silhouette_matches_scikit_learn():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 4, generator=g) + torch.repeat_interleave(torch.eye(4) * 3, 50, dim=0)
    labels = torch.repeat_interleave(torch.arange(4), 50)
    labels[::17] = 3  # some mixing, and unequal cluster sizes
    assert silhouette_score(x, labels).item() == pytest.approx(sklearn_silhouette(x.numpy(), labels.numpy()), abs=1e-5)


def test_stratified_subset_takes_at_least_two_per_cluster_in_proportion():
    labels = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(97, dtype=torch.long), torch.full((3,), 2)])
    keep = stratified_subset(labels, 3, 100, torch.rand(1000))
    counts = torch.bincount(labels[keep], minlength=3).tolist()
    assert sum(counts) <= 100 and counts[2] >= 2 and counts[0] == 2 + (94 * 900) // 1000
    assert stratified_subset(labels, 3, 1000, torch.rand(1000)).all()


def test_subset_silhouettes_equal_the_full_silhouette_when_every_row_fits():
    x = torch.randn(150, 3)
    labels = [torch.arange(150) % k for k in (2, 3)]
    full = [silhouette_score(x, lab) for lab in labels]
    sub = subset_silhouettes(x, labels, num_samples=2000)
    assert np.allclose([float(v) for v in sub], [float(v) for v in full], atol=1e-6)


def test_batch_silhouettes_score_each_map_as_alone_and_unusable_labelings_zero():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2500, 4, generator=g)  # more rows than num_samples: stratified subsets
    labels = torch.stack([torch.randint(k, (3, 2500), generator=g) for k in (3, 5)], 2)
    usable = torch.tensor([[True, True], [True, False], [False, True]])
    scores = batch_silhouettes(x, labels, [3, 5], num_samples=600, usable=usable)
    for i in range(3):
        alone = subset_silhouettes(x[i], list(labels[i].unbind(1)), num_samples=600)
        for j in range(2):
            expected = float(alone[j]) if usable[i, j] else 0.0
            assert float(scores[i, j]) == pytest.approx(expected, abs=1e-5)
