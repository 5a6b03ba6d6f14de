"""k-means of many maps, several k and restarts at once, in torch on the rows' device: what SCS clusters with.

The paper's setting is scikit-learn's `KMeans(n_init=10)`: per k, the lowest-inertia of 10 runs of
Lloyd's algorithm, each from a greedy k-means++ start, on all rows. SCS's agreement with it is lost
where a k-means finds a worse optimum: scikit-learn's best of 10 often isolates a few outlying rows
into small clusters, which reshapes the other clusters and moves the silhouette by up to 0.2.
faiss's plain k-means++ start on 64 rows per centroid (our earlier k-means) ended 1-74% above
scikit-learn's inertia (mean 7%); the greedy starts and restarts here end 1% above on average.

Done cheaply, in three phases:

1. restarts: `restarts` greedy k-means++ starts per map (one start of `max(ks)` centers also
   serves every smaller k: its first k centers are a k-means++ start for k), each run
   `restart_iter` Lloyd iterations, on a seeded subset of `restart_rows` rows and on the first
   `restart_dims` columns only (the rows SCS clusters are principal-component scores, so the
   first columns carry most of every distance);
2. per map and k the restart of lowest inertia is kept and refined by `refine_iter` iterations on
   at most `train_rows` rows, in all columns;
3. every row takes its nearest center.

All maps, k and restarts run together: one matmul per iteration for the distances and one for
the new centers, with the rows along the last dimension so that the nearest center of a group is
an elementwise minimum. Random numbers are drawn on the CPU from `seed`, so the result depends on
the rows and the seed, not on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Measured on benchmarks/bench_metrics.py's broad set: these settings agree with scikit-learn's
# KMeans(n_init=10) about as well as 8 restarts on 1024 rows in 8 columns (Spearman of SCS 0.979 vs
# 0.981, mean over 3 seeds) for 40% of the cost on 32 x 32 maps; 3 restarts of 15 iterations on all
# rows agree less (0.972) for more.
RESTARTS = 8
RESTART_ROWS = 512
RESTART_DIMS = 16
RESTART_ITER = 6
TRAIN_ROWS = 2048
REFINE_ITER = 6
TOL = 1e-4  # scikit-learn's default: relative to the mean variance of the columns


def greedy_kmeans_plusplus(x: Tensor, k: int, restarts: int, seed: int = 0) -> Tensor:
    """Greedy k-means++ starts, as scikit-learn's `KMeans` draws them: `(B, restarts, k, d)` rows of `x` `(B, m, d)`.

    Each next center is the best (lowest summed squared distance of all rows to their nearest
    center) of `2 + floor(ln k)` rows drawn with probability proportional to that distance. The
    first `k'` centers of a start are a start for `k' < k` as well.
    """
    b, m, d = x.shape
    trials = 2 + int(math.log(k))
    gen = torch.Generator().manual_seed(seed)
    # The same random numbers for every map: a map's starts do not depend on the others in its batch.
    first = (torch.rand(1, restarts, generator=gen) * m).long().clamp_max(m - 1).to(x.device).expand(b, -1)
    draws = torch.rand(k - 1, 1, restarts, trials, generator=gen, dtype=torch.float64).to(x.device)
    sq = (x * x).sum(2)  # (B, m)

    def to_rows(idx: Tensor) -> tuple[Tensor, Tensor]:  # (B, p) row indices -> squared distances (B, p, m), rows
        rows = x.gather(1, idx[..., None].expand(-1, -1, d))
        dist = torch.baddbmm(sq.gather(1, idx)[..., None] + sq[:, None], rows, x.transpose(1, 2), alpha=-2)
        return dist.clamp_min_(0), rows

    closest, centers = to_rows(first)  # (B, R, m), (B, R, d)
    chosen = [centers]
    for step in range(k - 1):
        # `trials` rows per start, each drawn with probability proportional to its distance (inverse CDF).
        cdf = closest.double().cumsum(2)
        cand = torch.searchsorted(cdf, draws[step] * cdf[..., -1:]).clamp_max_(m - 1)  # (B, R, T)
        dist, rows = to_rows(cand.flatten(1))
        potential = torch.minimum(closest[:, :, None], dist.view(b, restarts, trials, m))  # (B, R, T, m)
        best = potential.sum(3).argmin(2)[:, :, None, None]  # (B, R, 1, 1)
        closest = potential.gather(2, best.expand(-1, -1, 1, m))[:, :, 0]
        chosen.append(rows.view(b, restarts, trials, d).gather(2, best.expand(-1, -1, 1, d))[:, :, 0])
    return torch.stack(chosen, 2)


def _distances(x_t: Tensor, centers: Tensor) -> Tensor:
    """`|c|^2 - 2 c.x` `(B, J, m)` of centers `(B, J, d)` to rows given transposed, `x_t` `(B, d, m)`.

    Rows run along the last dimension, so the minimum over a group's centers is an elementwise
    minimum of contiguous rows (torch's min over a small innermost dimension is ~50x slower).
    """
    return torch.baddbmm((centers * centers).sum(2, keepdim=True), centers, x_t, alpha=-2)


def _runs(ks: Sequence[int]) -> list[tuple[int, int]]:
    """`[(k, how many times in a row)]` of a sequence: (6, 6, 8) -> [(6, 2), (8, 1)]."""
    runs: list[tuple[int, int]] = []
    for k in ks:
        if runs and runs[-1][0] == k:
            runs[-1] = (k, runs[-1][1] + 1)
        else:
            runs.append((k, 1))
    return runs


def _members(dist: Tensor, ks: Sequence[int], out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One-hot nearest center `(B, J, m)` (float) and `|c|^2 - 2 c.x` to it `(B, G, m)`, per group of `ks[g]` centers.

    The groups' centers lie one group after the other along dimension 1. A row exactly as near to
    two centers of a group joins both (a measure-zero event for real data). `out` receives the
    memberships when given.
    """
    b, _, m = dist.shape
    members = torch.empty_like(dist) if out is None else out
    nearest, start = [], 0
    for k, count in _runs(ks):  # consecutive groups of the same k: one reduction each
        block = dist[:, start : start + k * count].view(b, count, k, m)
        low = block.amin(2, keepdim=True)
        # Written as float directly: a bool result converted afterwards costs 7x more.
        torch.eq(block, low, out=members[:, start : start + k * count].view(b, count, k, m))
        nearest.append(low[:, :, 0])
        start += k * count
    return members, torch.cat(nearest, 1)


def _lloyd(x: Tensor, centers: Tensor, ks: Sequence[int], max_iter: int, tol: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Lloyd iterations of `G` groups of centers (group `g` has `ks[g]`; `(B, sum(ks), d)` in all) on `x` `(B, m, d)`.

    As scikit-learn's `KMeans` runs them, per map: until the map's centers together move by at most
    `tol[map]` (summed squared shifts; 0 once no row changes its center), or `max_iter`; a map that
    stopped keeps its centers while the others go on, so a map's result does not depend on its batch.
    Returns the centers, the memberships `(B, sum(ks), m)` and each group's inertia `(B, G)`. A
    center that loses all its rows stays where it was.
    """
    x_t = x.transpose(1, 2).contiguous()
    members, nearest = _members(_distances(x_t, centers), ks)
    active = torch.ones(x.shape[0], 1, 1, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        counts = members.sum(2, keepdim=True)  # (B, J, 1)
        moved = torch.where((counts > 0) & active, torch.bmm(members, x) / counts.clamp_min(1), centers)
        shift = (moved - centers).square().sum((1, 2))
        centers = moved
        members, nearest = _members(_distances(x_t, centers), ks, out=members)
        # Unchanged labels leave every center where it was (shift 0), so the shift test covers scikit-learn's
        # other test, one iteration later, without comparing all the memberships every iteration.
        active = active & (shift > tol)[:, None, None]
        if not bool(active.any()):
            break
    return centers, members, (nearest + (x * x).sum(2)[:, None]).clamp_min_(0).sum(2)


def _labels(members: Tensor, ks: Sequence[int]) -> Tensor:
    """Labels `(B, m, G)` from one-hot memberships `(B, sum(ks), m)`: each row's (first) center in its group."""
    out, start = [], 0
    for k in ks:
        # The number of leading zeros of a row's one-hot column (argmax over a non-innermost dimension is slow).
        out.append((members[:, start : start + k].cumsum(1) == 0).sum(1))
        start += k
    return torch.stack(out, 2)


def _subset(x: Tensor, rows: int, seed: int) -> Tensor:
    """A seeded random subset of at most `rows` of the rows of `x` `(B, n, d)`, the same for every map, in order."""
    n = x.shape[1]
    if n <= rows:
        return x
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows].sort().values
    return x.index_select(1, picked.to(x.device))


def batched_kmeans(
    x: Tensor,
    ks: Sequence[int],
    seed: int = 0,
    restarts: int = RESTARTS,
    restart_rows: int = RESTART_ROWS,
    restart_dims: int | None = RESTART_DIMS,
    restart_iter: int = RESTART_ITER,
    train_rows: int = TRAIN_ROWS,
    refine_iter: int = REFINE_ITER,
    tol: float = TOL,
) -> Tensor:
    """Labels `(B, n, len(ks))` of the rows of each map `x` `(B, n, d)` under k-means with each `k` of `ks`.

    The three phases of the module docstring; `restart_dims=None` restarts in all columns.
    """
    if x.dim() != 3:
        raise ValueError(f"batched k-means takes (B, n, d) rows, got shape {tuple(x.shape)}")
    ks = tuple(int(k) for k in ks)
    b, n, d = x.shape
    if not ks or min(ks) < 1 or max(ks) > n:
        raise ValueError(f"batched k-means needs 1 <= k <= n = {n} rows for every k, got {ks}")
    if restarts < 1 or min(train_rows, restart_rows) < max(ks) or (restart_dims is not None and restart_dims < 1):
        raise ValueError(f"need restarts >= 1, train_rows and restart_rows >= max(ks) = {max(ks)} and restart_dims "
                         f">= 1; got {restarts}, {train_rows}, {restart_rows}, {restart_dims}")
    x = x.float()
    train = _subset(x, train_rows, seed)
    small = _subset(train, restart_rows, seed + 1)
    # scikit-learn's tolerance: `tol` times the mean variance of the columns (one pass; torch.var over rows is slow).
    tol_abs = tol * ((train - train.mean(1, keepdim=True)).square().mean((1, 2)))  # (B,)
    dims = d if restart_dims is None else min(restart_dims, d)
    low = small[..., :dims].contiguous()
    # Groups k-major (every restart of the first k, then of the next): (B, sum over k of R * k, dims).
    starts = greedy_kmeans_plusplus(low, max(ks), restarts, seed)  # (B, R, K, dims)
    groups = [k for k in ks for _ in range(restarts)]
    centers = torch.cat([starts[:, :, :k].reshape(b, restarts * k, dims) for k in ks], 1)
    _, members, inertia = _lloyd(low, centers, groups, restart_iter, tol_abs * dims / d)
    # The lowest-inertia restart of each k; its centers in all columns are the means of its rows.
    best = inertia.view(b, len(ks), restarts).argmin(2)  # (B, L)
    chosen, start = [], 0
    for i, k in enumerate(ks):
        block = members[:, start : start + restarts * k].view(b, restarts, k, -1)
        chosen.append(block.gather(1, best[:, i, None, None, None].expand(-1, 1, k, block.shape[3]))[:, 0])
        start += restarts * k
    kept = torch.cat(chosen, 1)  # (B, sum(ks), m)
    centers = torch.bmm(kept, small) / kept.sum(2, keepdim=True).clamp_min(1)
    if refine_iter > 0:
        centers = _lloyd(train, centers, ks, refine_iter, tol_abs)[0]
    return _labels(_members(_distances(x.transpose(1, 2), centers), ks)[0], ks)
