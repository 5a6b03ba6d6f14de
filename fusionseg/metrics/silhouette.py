"""Mean Euclidean silhouette coefficient in torch, on stratified subsets of the rows.

`silhouette_score(x, labels)` matches `sklearn.metrics.silhouette_score` (singleton clusters
score 0). `subset_silhouettes` scores several labelings of the same rows on subsets drawn per
cluster in proportion to cluster size (at least 2 per cluster); one random order of priority of
the rows is shared by all labelings, so their subsets overlap and one distance matrix serves them
all. `batch_silhouettes` does the same for a batch of maps at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Distances made at a time, per slab of rows (all maps of a batch together): a slab that stays in cache.
SLAB_ENTRIES = 256 * 1024
# On a GPU the slabs are as large as the whole matrix of a batch of 16 maps of 2000 rows: fewer kernel launches.
GPU_SLAB_ENTRIES = 64 * 1024 * 1024
MIN_SLAB_ROWS = 32


def distance_sums(x: Tensor, weights: Tensor) -> Tensor:
    """`D @ weights` for the Euclidean distance matrix `D` of the rows of `x` `(p, d)`, without forming `D`.

    `weights` is `(p, k)`; with a leading batch dimension on both, each map's own. `D` is made a
    slab of rows at a time, each entry `|a|^2 + |b|^2 - 2 a.b` in one matmul of rows augmented
    with their squared norms, with exact zeros for self-distances (the matmul form leaves
    rounding noise there). `D` is symmetric, so each slab covers only its own and later columns;
    the part right of its diagonal block serves the later rows too. That halves the distances and
    square roots, and the slabs stay in cache.
    """
    if x.dim() == 2:
        return distance_sums(x[None], weights[None])[0]
    x = x.float()
    b, p, _ = x.shape
    sq = (x * x).sum(dim=2, keepdim=True)
    ones = torch.ones_like(sq)
    left, right = torch.cat([x, sq, ones], 2), torch.cat([-2 * x, ones, sq], 2)  # left_i . right_j = |x_i - x_j|^2
    weights_t = weights.float().transpose(1, 2).contiguous()
    out_t = torch.zeros_like(weights_t)  # (B, k, p): k rows make faster matmuls
    chunk = max(MIN_SLAB_ROWS, (GPU_SLAB_ENTRIES if x.is_cuda else SLAB_ENTRIES) // (b * p))
    for start in range(0, p, chunk):
        stop = min(start + chunk, p)
        slab = left[:, start:stop] @ right[:, start:].transpose(1, 2)  # rows start:stop, columns start:p
        slab.diagonal(dim1=1, dim2=2).zero_()  # column j of the slab is row start + j
        slab.clamp_min_(0).sqrt_()
        out_t[:, :, start:stop].baddbmm_(weights_t[:, :, start:], slab.transpose(1, 2))
        if stop < p:
            out_t[:, :, stop:].baddbmm_(weights_t[:, :, start:stop], slab[:, :, stop - start :])
    return out_t.transpose(1, 2).contiguous()


def _offsets(clusters: Sequence[int], device: torch.device | None = None) -> Tensor:
    """First column of each labeling's clusters when they are laid side by side."""
    return torch.tensor([sum(clusters[:i]) for i in range(len(clusters))], device=device)


def _mean_silhouettes(sums: Tensor, weights: Tensor, labels: Tensor, clusters: Sequence[int], member: Tensor) -> Tensor:
    """Mean silhouette of the member rows of each map under each of `L` labelings: `(B, L)`.

    `labels` `(B, p, L)` are the rows' clusters, numbered `0..k_l-1` per labeling; `member`
    `(B, p, L)` says which rows take part in each; `weights` `(B, p, sum k_l)` is the members'
    one-hot clusters, the labelings' clusters side by side, and `sums = D @ weights` each row's
    summed distance to the members of each cluster. A labeling without members scores 0.
    """
    b, p, _ = labels.shape
    widest = max(clusters)
    offsets = _offsets(clusters, labels.device)
    own = labels + offsets  # (B, p, L): column of the row's own cluster
    sizes = weights.sum(1)  # (B, K) members per cluster
    # Mean distance to each cluster, laid out (B, p, L, widest); padding and empty clusters are never the nearest.
    to_cluster = torch.cat([sums / sizes.clamp_min(1)[:, None], sums.new_full((b, p, 1), float("inf"))], 2)
    to_cluster[..., :-1].masked_fill_((sizes == 0)[:, None], float("inf"))
    layout = [[o + i if i < k else sums.shape[2] for i in range(widest)] for o, k in zip(offsets.tolist(), clusters)]
    by_labeling = to_cluster.index_select(2, torch.tensor(layout, device=labels.device).flatten())
    nearest_other = by_labeling.view(b, p, len(clusters), widest).scatter_(3, labels[..., None], float("inf")).amin(3)
    own_size = sizes.gather(1, own.flatten(1)).view_as(own)
    within = sums.gather(2, own) / (own_size - 1).clamp_min(1)
    denom = torch.maximum(within, nearest_other)
    ok = member & (own_size > 1) & (denom > 0) & torch.isfinite(nearest_other)
    s = torch.where(ok, (nearest_other - within) / denom.clamp_min(1e-30), 0.0)
    return s.sum(1) / member.sum(1).clamp_min(1)


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
    weights = torch.nn.functional.one_hot(labels, num_clusters).float()[None]
    member = torch.ones(1, x.shape[0], 1, dtype=torch.bool, device=x.device)
    sums = distance_sums(x[None], weights)
    return _mean_silhouettes(sums, weights, labels[None, :, None], [num_clusters], member)[0, 0]


def stratified_subset(labels: Tensor, num_clusters: int, num_samples: int, priority: Tensor) -> Tensor:
    """Bool mask of at most `num_samples` rows: per cluster, `2 + floor((num_samples - 2k) * size / n)`
    rows (capped at the cluster's size), the ones of highest `priority`.

    Every row is kept when there are at most `num_samples` rows.
    """
    return _stratified_subset(labels, num_clusters, num_samples, torch.argsort(priority, descending=True))


def _stratified_subset(labels: Tensor, num_clusters: int, num_samples: int, order: Tensor) -> Tensor:
    """`stratified_subset` with the rows' order of decreasing priority given, so labelings can share it."""
    n = labels.numel()
    if n <= num_samples:
        return torch.ones(n, dtype=torch.bool, device=labels.device)
    if num_samples < 2 * num_clusters:
        raise ValueError(f"silhouette_samples={num_samples} cannot hold 2 rows of each of {num_clusters} clusters")
    sizes = torch.bincount(labels, minlength=num_clusters)
    quota = (2 + torch.div((num_samples - 2 * num_clusters) * sizes, n, rounding_mode="floor")).minimum(sizes)
    # A row's rank inside its cluster, in priority order: how many of its cluster come before it.
    ordered = labels[order]
    before = torch.nn.functional.one_hot(ordered, num_clusters).cumsum_(0).gather(1, ordered[:, None])[:, 0] - 1
    keep = torch.empty(n, dtype=torch.bool, device=labels.device)
    keep[order] = before < quota[ordered]
    return keep


def _subsets(labels: Tensor, clusters: Sequence[int], num_samples: int, seed: int) -> Tensor:
    """`(B, n, L)` stratified subsets of each labeling of each map, from one seeded priority order of the rows."""
    order = torch.randperm(labels.shape[1], generator=torch.Generator().manual_seed(seed)).to(labels.device)
    return torch.stack(
        [
            torch.stack([_stratified_subset(lab, k, num_samples, order) for lab, k in zip(map_labels.t(), clusters)], 1)
            for map_labels in labels
        ]
    )


def batch_silhouettes(
    x: Tensor,
    labels: Tensor,
    clusters: Sequence[int],
    num_samples: int,
    seed: int = 0,
    usable: Tensor | None = None,
) -> Tensor:
    """Mean silhouette `(B, L)` of each of `L` labelings of each map's rows, each on its stratified subset.

    `x` `(B, n, d)` are the rows of `B` maps, `labels` `(B, n, L)` their clusters, numbered
    `0..clusters[l]-1` under labeling `l`, with at least 2 members each where `usable` `(B, L)`
    (default everywhere); the others score 0.
    """
    b, n, num = labels.shape
    usable = torch.ones(b, num, dtype=torch.bool, device=x.device) if usable is None else usable
    if n <= num_samples:  # every row of every usable labeling takes part
        member = usable[:, None, :].expand(b, n, num)
    else:
        member = _subsets(labels, clusters, num_samples, seed) & usable[:, None, :]
        # Keep the rows some labeling takes part in, first in each map; the maps' tails are padding nobody counts.
        taking_part = member.any(2)
        rows = torch.argsort((~taking_part).to(torch.uint8), dim=1, stable=True)[:, : int(taking_part.sum(1).max())]
        x = x.gather(1, rows[..., None].expand(-1, -1, x.shape[2]))
        labels = labels.gather(1, rows[..., None].expand(-1, -1, num))
        member = member.gather(1, rows[..., None].expand(-1, -1, num))
    weights = torch.zeros(b, labels.shape[1], sum(clusters), device=x.device)
    weights.scatter_(2, labels + _offsets(clusters, x.device), member.float())
    # One pass over each map's distance matrix serves every labeling.
    return _mean_silhouettes(distance_sums(x, weights), weights, labels, clusters, member)


def subset_silhouettes(
    x: Tensor, labelings: Sequence[Tensor], num_samples: int, seed: int = 0
) -> list[Tensor]:
    """Mean silhouette of each labeling of the rows of `x` `(n, d)`, each on its stratified subset.

    Every labeling needs clusters numbered `0..k-1` with at least 2 members each.
    """
    if not labelings:
        return []
    labels = torch.stack([lab.long() for lab in labelings], 1)  # (n, L)
    clusters = [int(k) + 1 for k in labels.amax(0).tolist()]
    return list(batch_silhouettes(x[None], labels[None], clusters, num_samples, seed)[0].unbind())
