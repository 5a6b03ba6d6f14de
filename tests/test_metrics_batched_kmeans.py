"""Batched k-means (what SCS clusters with): finds clear clusters, is seeded, does not depend on the batch."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionseg.metrics import batched_kmeans
from fusionseg.metrics.batched_kmeans import greedy_kmeans_plusplus


def blobs(n: int, k: int, d: int, seed: int, spread: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` rows around `k` well separated centers in `d` dimensions, and their true clusters."""
    g = torch.Generator().manual_seed(seed)
    centers = 10 * torch.randn(k, d, generator=g)
    truth = torch.arange(n) % k
    return centers[truth] + spread * torch.randn(n, d, generator=g), truth


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings group the rows alike (up to the clusters' numbering)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_finds_well_separated_clusters_for_every_k_of_every_map():
    maps = [blobs(600, k, 12, seed=k) for k in (3, 5)]
    x = torch.stack([rows for rows, _ in maps])
    labels = batched_kmeans(x, ks=(3, 5), seed=0)
    assert labels.shape == (2, 600, 2) and labels.dtype == torch.long
    assert same_partition(labels[0, :, 0], maps[0][1])  # 3 clusters where there are 3
    assert same_partition(labels[1, :, 1], maps[1][1])  # 5 where there are 5
    for i, j in itertools.product(range(2), range(2)):
        assert set(labels[i, :, j].tolist()) <= set(range((3, 5)[j]))


def test_is_seeded_and_a_map_does_not_depend_on_its_batch():
    x = torch.stack([blobs(700, 6, 32, seed=s, spread=3.0)[0] for s in range(3)])
    alone = batched_kmeans(x[1:2], ks=(6, 8, 10), seed=4)
    together = batched_kmeans(x, ks=(6, 8, 10), seed=4)
    assert torch.equal(together[1], alone[0])
    assert torch.equal(batched_kmeans(x, ks=(6, 8, 10), seed=4), together)


def test_more_restarts_never_end_at_a_worse_optimum_on_the_rows_they_learn_from():
    x, _ = blobs(400, 7, 8, seed=1, spread=4.0)

    def inertia(labels: torch.Tensor) -> float:
        return sum(float(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum()) for c in labels.unique())

    # All rows, all columns, no refinement: the restart of lowest inertia is the answer.
    args = dict(restart_rows=400, restart_dims=None, train_rows=400, refine_iter=0, restart_iter=50)
    one = batched_kmeans(x[None], ks=(5,), restarts=1, **args)[0, :, 0]
    eight = batched_kmeans(x[None], ks=(5,), restarts=8, **args)[0, :, 0]
    assert inertia(eight) <= inertia(one) + 1e-3


def test_greedy_starts_are_distinct_rows_and_their_prefixes_are_starts_for_smaller_k():
    x, _ = blobs(300, 4, 5, seed=2)
    starts = greedy_kmeans_plusplus(x[None], k=4, restarts=3, seed=0)
    assert starts.shape == (1, 3, 4, 5)
    for r in range(3):
        rows = [int((x == c).all(1).nonzero()[0]) for c in starts[0, r]]
        assert len(set(rows)) == 4  # distinct rows of x
    # k-means++ spreads the starts: one in each of the 4 separated clusters
    nearest = torch.cdist(starts[0, 0], x).argmin(1) % 4
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(12, 80), d=st.integers(1, 6), seed=st.integers(0, 50))
def test_labels_are_valid_for_any_rows(n, d, seed):
    x = torch.randn(2, n, d, generator=torch.Generator().manual_seed(seed))
    x[1] = x[1].round()  # ties and repeated rows
    ks = (2, min(5, n))
    labels = batched_kmeans(x, ks, seed=seed, restart_rows=16, train_rows=32, restart_dims=max(1, d - 1))
    assert labels.shape == (2, n, 2)
    for j, k in enumerate(ks):
        assert int(labels[..., j].min()) >= 0 and int(labels[..., j].max()) < k


def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ValueError, match=r"\(B, n, d\) rows"):
        batched_kmeans(torch.randn(10, 3), ks=(2,))
    with pytest.raises(ValueError, match="1 <= k <= n"):
        batched_kmeans(torch.randn(1, 5, 3), ks=(6,))
    with pytest.raises(ValueError, match="restarts >= 1"):
        batched_kmeans(torch.randn(1, 50, 3), ks=(2,), restarts=0)
