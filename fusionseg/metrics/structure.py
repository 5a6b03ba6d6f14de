"""Structural Coherence: SFC (block contrast of the norm map), SCS (clustering score), SC, and SC_GT.

Follows docs/spec `metrics.md` ("Structural Coherence"). Every function takes `(B, C, h, w)`
features of any float dtype, computes in float32 on their device without gradients, and returns
a float32 `(B,)` tensor in `[0, 1]`. An image whose features are not all finite scores 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fusionseg.metrics.batched_kmeans import RESTART_DIMS, batched_kmeans
from fusionseg.metrics.maps import channel_stats, mean_std, norm_map, sanitize, zscore
from fusionseg.metrics.pca import principal_scores
from fusionseg.metrics.silhouette import batch_silhouettes, subset_silhouettes

SFC_MIN_WITHIN = 1e-6
SCS_STD_EPS = 1e-6
# The PCA of SCS: two subspace iterations on a quarter of the positions, then the best components
# within the subspace found, over all positions (fusionseg.metrics.pca). Of the variance of the exact
# first 32 components this leaves uncaptured < 0.1% on the benchmark's maps and 3-7% on maps whose
# spectrum decays as 1/i (one iteration on all positions, as before: < 0.1% and 7-10%).
SCS_PCA_ITERATIONS = 2
SCS_PCA_SKETCH_FRACTION = 4
# SCS's k-means is fusionseg.metrics.batched_kmeans: greedy k-means++ restarts as scikit-learn's
# KMeans(n_init=10) draws them, cheapened (module docstring there). faiss's k-means as SCS ran it before
# (best of 2 plain k-means++ runs on 64 rows per cluster) ended 7% above scikit-learn's inertia on average,
# and SCS's rank agreement with the reference over benchmarks/bench_metrics.py's broad set was 0.958.
IGNORE_INDEX = 255
# Features of the maps SCS prepares together (at least one map): temporaries of 32 MiB would be mapped
# fresh from the system (and page-faulted) on every call, smaller ones are reused.
GROUP_BYTES = 16 << 20
# On a GPU memory is plentiful and every operation costs a kernel launch: a whole batch goes at once.
GPU_GROUP_BYTES = 2 << 30


@torch.no_grad()
def sfc(feat: Tensor, K: int = 16) -> Tensor:
    """Structured Feature Contrast: between-block over total variance of the z-scored norm map.

    The grid has `min(K, h // 2)` x `min(K, w // 2)` blocks (at least 1), so blocks are never
    smaller than 2x2 (beyond the paper: 1x1 blocks would make SFC ~1 for pure noise).
    """
    if K < 1:
        raise ValueError(f"sfc needs a grid size K >= 1, got {K}")
    return _sfc(*sanitize(feat), K)


def _sfc(x: Tensor, finite: Tensor, K: int) -> Tensor:
    z = zscore(norm_map(x))
    b, h, w = z.shape
    ky, kx = max(1, min(K, h // 2)), max(1, min(K, w // 2))
    bh, bw = h // ky, w // kx
    blocks = z[:, : bh * ky, : bw * kx].reshape(b, ky, bh, kx, bw).permute(0, 1, 3, 2, 4).reshape(b, ky * kx, -1)
    mu_p, sd_p = mean_std(blocks, 2)
    between = mean_std(mu_p[..., 0], 1)[1][:, 0] ** 2
    within = (sd_p[..., 0] ** 2).mean(dim=1).clamp_min(SFC_MIN_WITHIN)
    return torch.where(finite, between / (between + within), torch.zeros_like(between))


def _prepared_rows(x: Tensor, idx: Tensor | None, pca_dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """The rows SCS clusters, `(B, m, d)`, and the `(B,)` mask of images with a non-constant channel.

    Channels of `(B, C, h, w)` features are standardized over all `h*w` positions (population
    std + 1e-6); the positions `idx` (default all) are kept and projected on their first
    `d = min(pca_dim, C, m - 1)` principal components when C is larger than d. The projection
    centers the kept rows, which moves them all alike and leaves every distance unchanged.
    """
    flat = x.flatten(2)
    mean, std, constant = channel_stats(flat)
    scale = torch.where(constant, torch.zeros_like(std), 1 / (std + SCS_STD_EPS))  # constant channels: exact 0
    kept = flat if idx is None else flat.gather(2, idx.expand(*flat.shape[:2], -1))  # far faster than [..., idx]
    c, m = kept.shape[1:]
    d = min(pca_dim, c, m - 1)
    if c > d >= 1:
        rows = principal_scores(
            kept,
            d,
            seed=seed,
            scale=scale[..., 0],
            iterations=SCS_PCA_ITERATIONS,
            sketch_rows=max(1, m // SCS_PCA_SKETCH_FRACTION),
            mean=mean[..., 0] if idx is None else None,  # all positions kept: their mean is known
        )
    else:
        # Channels in an order of their own (mean over std): a permutation of the channels then gives the
        # very same rows, bit for bit, and so the same k-means, which float rounding could otherwise tip.
        order = torch.argsort((mean * scale)[..., 0], dim=1, stable=True)[..., None]  # (B, C, 1)
        kept, mean, scale = (t.gather(1, order.expand_as(t)) for t in (kept, mean, scale))
        rows = ((kept - mean) * scale).transpose(1, 2)
    return rows.contiguous(), ~constant.all(dim=1)[:, 0]


def _sample(n: int, max_samples: int, seed: int, device: torch.device) -> Tensor | None:
    """Sorted indices of a seeded random subset of at most `max_samples` of `n` rows (None: keep all).

    Sorted, so gathering them from a large map reads memory in order.
    """
    if n <= max_samples:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:max_samples].sort().values.to(device)


def _min_cluster_sizes(labels: Tensor, ks: Sequence[int]) -> Tensor:
    """`(M, L)` size of the smallest cluster of each map under each labeling `labels` `(M, n, L)` (`ks[l]` clusters)."""
    m, _, num = labels.shape
    counts = torch.zeros(m, num, max(ks), dtype=torch.long, device=labels.device)
    counts.scatter_add_(2, labels.transpose(1, 2), torch.ones_like(labels).transpose(1, 2))
    too_many = torch.arange(max(ks), device=labels.device) >= torch.tensor(list(ks), device=labels.device)[:, None]
    return counts.masked_fill_(too_many, labels.shape[1]).amin(2)


def _median_score(silhouettes: Sequence[float | Tensor]) -> float:
    """`(median + 1) / 2`; the median of an even count is the mean of the two middle values."""
    return (statistics.median(float(v) for v in silhouettes) + 1) / 2


def _check_scs_args(ks: Sequence[int], pca_dim: int, max_samples: int, silhouette_samples: int) -> tuple[int, ...]:
    ks = tuple(int(v) for v in ks)
    if not ks or min(ks) < 2:
        raise ValueError(f"scs needs cluster counts k >= 2, got {ks}")
    if pca_dim < 1 or max_samples < 3:
        raise ValueError(f"scs needs pca_dim >= 1 and max_samples >= 3, got {pca_dim} and {max_samples}")
    if silhouette_samples < 2 * max(ks):
        raise ValueError(
            f"silhouette_samples={silhouette_samples} must hold 2 rows per cluster, i.e. >= {2 * max(ks)} for k={ks}"
        )
    return ks


@torch.no_grad()
def scs(
    feat: Tensor,
    k: Sequence[int] = (6, 8, 10),
    pca_dim: int = 32,
    max_samples: int = 4096,
    silhouette_samples: int = 2000,
    seed: int = 0,
) -> Tensor:
    """Structural Clustering Score: `(median_k silhouette(k-means_k) + 1) / 2` of the feature vectors.

    0 for an image whose features are constant or not finite, or when no `k` gives a clustering
    with at least 2 members per cluster.
    """
    ks = _check_scs_args(k, pca_dim, max_samples, silhouette_samples)
    return _scs(*sanitize(feat), ks, pca_dim, max_samples, silhouette_samples, seed)


def _scs(
    x: Tensor, finite: Tensor, ks: tuple[int, ...], pca_dim: int, max_samples: int, silhouette_samples: int, seed: int
) -> Tensor:
    b, c, h, w = x.shape
    idx = _sample(h * w, max_samples, seed, x.device)
    out = torch.zeros(b, dtype=torch.float32, device=x.device)
    # Maps are prepared (standardized, projected) and scored a group at a time: batched, yet with
    # temporaries of bounded size.
    group = max(1, (GPU_GROUP_BYTES if x.is_cuda else GROUP_BYTES) // (c * h * w * 4))
    for start in range(0, b, group):
        rows, varying = _prepared_rows(x[start : start + group], idx, pca_dim, seed)
        n = rows.shape[1]
        usable_ks = [kk for kk in ks if 2 <= kk <= n - 1]
        maps = (finite[start : start + group] & varying).nonzero()[:, 0]
        if not usable_ks or maps.numel() == 0:
            continue
        rows = rows[maps]
        # Restarts in the leading columns only where they are principal components (not plain channels).
        dims = RESTART_DIMS if rows.shape[2] < c else None
        labels = batched_kmeans(rows, usable_ks, seed=seed, restart_dims=dims)  # (M, n, L): all maps and k at once
        usable = _min_cluster_sizes(labels, usable_ks) >= 2  # else skip this k
        # One distance computation per map serves all its k.
        scores = batch_silhouettes(rows, labels, usable_ks, silhouette_samples, seed, usable).cpu()
        usable = usable.cpu()
        for i, m in enumerate(maps.tolist()):
            if usable[i].any():
                out[start + m] = _median_score(scores[i][usable[i]].tolist())
    return out


@torch.no_grad()
def structural_coherence(
    feat: Tensor,
    K: int = 16,
    k: Sequence[int] = (6, 8, 10),
    pca_dim: int = 32,
    max_samples: int = 4096,
    silhouette_samples: int = 2000,
    seed: int = 0,
) -> dict[str, Tensor]:
    """`{"sc": sqrt(SFC * SCS), "sfc": SFC, "scs": SCS}`, each a float32 `(B,)` tensor in `[0, 1]`."""
    if K < 1:
        raise ValueError(f"sfc needs a grid size K >= 1, got {K}")
    ks = _check_scs_args(k, pca_dim, max_samples, silhouette_samples)
    x, finite = sanitize(feat)
    s = _sfc(x, finite, K)
    c = _scs(x, finite, ks, pca_dim, max_samples, silhouette_samples, seed)
    return {"sc": torch.sqrt(s * c), "sfc": s, "scs": c}


def _labels_at(labels: Tensor, h: int, w: int) -> Tensor:
    if labels.dim() != 3 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer (B, H, W) map, got {labels.dtype} of shape {tuple(labels.shape)}")
    if labels.shape[-2:] == (h, w):
        return labels.long()
    return F.interpolate(labels[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()


@torch.no_grad()
def sc_gt(
    feat: Tensor,
    labels: Tensor,
    K: int = 16,
    pca_dim: int = 32,
    max_samples: int = 4096,
    silhouette_samples: int = 2000,
    seed: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """The paper's supervised SC_GT: SC with ground-truth segments as the clusters.

    `labels` `(B, h, w)` or `(B, H, W)` integer segment ids are resized (nearest) to the feature
    size; `ignore_index` positions are left out. The silhouette is taken over the segments with
    at least 2 positions (on a stratified subset, as in SCS); fewer than 2 such segments give 0.
    `SC_GT = sqrt(SFC * (silhouette + 1) / 2)`.
    """
    x, finite = sanitize(feat)
    b, _, h, w = x.shape
    if not isinstance(labels, Tensor) or labels.shape[0] != b:
        raise ValueError(f"labels must be a (B={b}, H, W) integer tensor, one map per feature map")
    seg = _labels_at(labels.to(x.device), h, w).flatten(1)
    structure = torch.zeros(b, dtype=torch.float32, device=x.device)
    for i in finite.nonzero()[:, 0].tolist():
        keep = (seg[i] != ignore_index).nonzero()[:, 0]
        idx = _sample(keep.numel(), max_samples, seed, x.device)
        if idx is not None:
            keep = keep[idx]
        _, inverse, counts = torch.unique(seg[i, keep], return_inverse=True, return_counts=True)
        if int((counts >= 2).sum()) < 2:
            continue
        big = counts[inverse] >= 2  # a segment needs 2 positions to have a silhouette
        keep = keep[big]
        segments = torch.unique(inverse[big], return_inverse=True)[1]
        sample, varying = _prepared_rows(x[i : i + 1], keep, pca_dim, seed)
        if bool(varying[0]):
            structure[i] = _median_score(subset_silhouettes(sample[0], [segments], silhouette_samples, seed))
    return torch.sqrt(_sfc(x, finite, K) * structure)
