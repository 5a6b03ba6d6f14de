"""Mean Euclidean silhouette coefficient in torch, on stratified subsets of the rows.

`silhouette_score(x, labels)` matches `sklearn.metrics.silhouette_score` (singleton clusters
score 0). `subset_silhouettes` scores several labelings of the same rows on subsets drawn per
cluster in proportion to cluster size (at least 2 per cluster); one random priority per row is
shared by all labelings, so their subsets overlap and one distance matrix serves them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


DISTANCE_CHUNK = 256  # rows of the distance matrix made at a time: a slab that stays in cache


def distance_sums(x: Tensor, weights: Tensor) -> Tensor:
    """`D @ weights` for the Euclidean distance matrix `D` of the rows of `x` `(p, d)`, without forming `D`.

    `weights` is `(p, k)`. Each slab of rows is `|a|^2 + |b|^2 - 2 a.b` in one matmul, with exact
    zeros for self-distances (the matmul form leaves rounding noise there); working slab by slab
    keeps the passes over `D` in cache.
    """
    x = x.float()
    sq = (x * x).sum(dim=1)
    out = torch.empty(x.shape[0], weights.shape[1], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], DISTANCE_CHUNK):
        stop = min(start + DISTANCE_CHUNK, x.shape[0])
        slab = torch.addmm(sq[None, :], x[start:stop], x.t(), alpha=-2).add_(sq[start:stop, None])
        slab.diagonal(offset=start).zero_()
        out[start:stop] = slab.clamp_min_(0).sqrt_() @ weights
    return out


def _member_weights(labels: Tensor, num_clusters: int, member: Tensor | None) -> Tensor:
    """`(p, k)` one-hot cluster membership, zero for the points that are not members."""
    onehot = torch.nn.functional.one_hot(labels, num_clusters).float()
    return onehot if member is None else onehot * member[:, None]


def _mean_silhouette(sums: Tensor, weights: Tensor, labels: Tensor, member: Tensor | None = None) -> Tensor:
    """Mean silhouette of the member points, from `sums = dist @ weights` `(p, k)`: each point's summed
    distance to each cluster's members; `weights` `(p, k)` the members' one-hot clusters."""
    sizes = weights.sum(0)  # (k,)
    if member is not None:
        sums, labels = sums[member], labels[member]
    own_size = sizes[labels]
    a = sums.gather(1, labels[:, None])[:, 0] / (own_size - 1).clamp_min(1)
    other = (sums / sizes.clamp_min(1)).masked_fill(sizes[None, :] == 0, float("inf"))
    b = other.scatter(1, labels[:, None], float("inf")).min(dim=1).values
    denom = torch.maximum(a, b)
    ok = (own_size > 1) & (denom > 0) & torch.isfinite(b)
    s = torch.where(ok, (b - a) / denom.clamp_min(1e-30), torch.zeros_like(a))
    return s.mean()


def silhouette_score(x: Tensor, labels: Tensor) -> Tensor:
    """Mean Euclidean silhouette coefficient of all rows of `x` `(n, d)` under `labels` `(n,)`.

    Needs at least 2 clusters; a point alone in its cluster scores 0 (as in scikit-learn).
    """
    labels = torch.unique(labels, return_inverse=True)[1]
    num_clusters = int(labels.max()) + 1
    if num_clusters < 2 or num_clusters >= x.shape[0]:
        raise ValueError(
            f"the silhouette needs 2 <= clusters <= n - 1, got {num_clusters} clusters of {x.shape[0]} rows"
        )
    weights = _member_weights(labels, num_clusters, None)
    return _mean_silhouette(distance_sums(x, weights), weights, labels)


def stratified_subset(labels: Tensor, num_clusters: int, num_samples: int, priority: Tensor) -> Tensor:
    """Bool mask of at most `num_samples` rows: per cluster, `2 + floor((num_samples - 2k) * size / n)`
    rows (capped at the cluster's size), the ones of highest `priority`.

    Every row is kept when there are at most `num_samples` rows.
    """
    n = labels.numel()
    if n <= num_samples:
        return torch.ones(n, dtype=torch.bool, device=labels.device)
    if num_samples < 2 * num_clusters:
        raise ValueError(f"silhouette_samples={num_samples} cannot hold 2 rows of each of {num_clusters} clusters")
    sizes = torch.bincount(labels, minlength=num_clusters)
    quota = (2 + torch.div((num_samples - 2 * num_clusters) * sizes, n, rounding_mode="floor")).minimum(sizes)
    # Sort by cluster, then by descending priority; a row's rank inside its cluster decides.
    order = torch.argsort(labels.double() * 2 - priority.double())
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty(n, dtype=torch.long, device=labels.device)
    rank[order] = torch.arange(n, device=labels.device) - starts[labels[order]]
    return rank < quota[labels]


def subset_silhouettes(
    x: Tensor, labelings: Sequence[Tensor], num_samples: int, seed: int = 0
) -> list[Tensor]:
    """Mean silhouette of each labeling of the rows of `x` `(n, d)`, each on its stratified subset.

    Every labeling needs clusters numbered `0..k-1` with at least 2 members each.
    """
    if not labelings:
        return []
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    priority = torch.rand(n, generator=gen).to(x.device)
    clusters = [int(lab.max()) + 1 for lab in labelings]
    subsets = [stratified_subset(lab, k, num_samples, priority) for lab, k in zip(labelings, clusters)]
    union = torch.stack(subsets).any(0)
    members = union.nonzero()[:, 0]
    weights = [_member_weights(lab[members], k, sub[members]) for lab, k, sub in zip(labelings, clusters, subsets)]
    # One pass over the distance matrix serves every labeling.
    sums = distance_sums(x[members], torch.cat(weights, dim=1)).split(clusters, dim=1)
    return [
        _mean_silhouette(s, w, lab[members], sub[members])
        for s, w, lab, sub in zip(sums, weights, labelings, subsets)
    ]
