"""Seeded k-means through faiss: on the GPU when the rows are on a GPU and faiss has GPU support.

faiss learns the centroids: the best of `nredo` runs of Lloyd iterations, each from a seeded
k-means++ start (as scikit-learn's `KMeans`) where the installed faiss offers it, a seeded random
start on older faiss; on at most `max_points_per_centroid * k` training rows (a seeded random
subset), stopping early once an iteration improves the objective by less than `early_stop`. The
labels of all rows are then their nearest centroid, found by the same faiss index.

SCS clusters with `fusionseg.metrics.batched_kmeans` instead (many maps, k and restarts at once, in
torch, closer to scikit-learn's best of 10); this one clusters one set of rows, e.g. large ones.
"""

from __future__ import annotations

import functools
from typing import Any

import faiss
import numpy as np
import torch
from torch import Tensor

NITER = 25  # faiss's default number of Lloyd iterations
MAX_POINTS_PER_CENTROID = 256  # faiss's default training-set cap per centroid
# Best of 2 runs: a single run lands in a poor local optimum often enough to move SCS by ~0.1;
# 2 runs bring SCS within ~0.04 of scikit-learn's best of 10 (benchmarks/bench_metrics.py).
NREDO = 2
# Stop a run once an iteration improves the objective by less than this fraction (where faiss has
# the setting; scikit-learn's KMeans stops on a tolerance too).
EARLY_STOP = 1e-3


def faiss_has_gpu() -> bool:
    """True when the installed faiss is built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=None)
def _gpu_resources(device_index: int) -> Any:
    # One StandardGpuResources per GPU: creating it reserves scratch memory, so it is reused.
    return faiss.StandardGpuResources()


def _index(d: int, device: torch.device) -> Any:
    if device.type == "cuda" and faiss_has_gpu():
        index = device.index if device.index is not None else torch.cuda.current_device()
        config = faiss.GpuIndexFlatConfig()
        config.device = index
        return faiss.GpuIndexFlatL2(_gpu_resources(index), d, config)
    return faiss.IndexFlatL2(d)


def kmeans(
    x: Tensor,
    k: int,
    seed: int = 0,
    niter: int = NITER,
    nredo: int = NREDO,
    max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
    early_stop: float = EARLY_STOP,
) -> tuple[Tensor, Tensor]:
    """Cluster the rows of `x` `(n, d)` into `k` groups.

    Returns `(centroids (k, d) float32, labels (n,) int64)`, both on the device of `x`. Runs on
    the GPU (faiss `GpuIndexFlatL2`) when `x` is on a CUDA device and faiss has GPU support,
    on the CPU otherwise; the result depends only on `x`, `k` and the arguments.
    """
    if x.dim() != 2:
        raise ValueError(f"k-means takes (n, d) rows, got shape {tuple(x.shape)}")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n rows, got k={k} for n={n}")
    rows = x.detach().float()
    params = faiss.ClusteringParameters()
    params.niter = niter
    params.nredo = nredo
    params.seed = seed
    params.min_points_per_centroid = 1  # small maps are legitimate input; no warning for them
    params.max_points_per_centroid = max_points_per_centroid
    params.verbose = False
    if hasattr(params, "init_method") and hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
        # A random start often leaves two centroids in one cluster and one cluster split; k-means++ rarely does.
        params.init_method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    if hasattr(params, "early_stop_threshold"):
        params.early_stop_threshold = early_stop
    clustering = faiss.Clustering(d, k, params)
    points = np.ascontiguousarray(rows.cpu().numpy())
    index = _index(d, rows.device)
    clustering.train(points, index)
    centroids = torch.from_numpy(faiss.vector_to_array(clustering.centroids).reshape(k, d)).to(rows.device)
    labels = torch.from_numpy(index.search(points, 1)[1][:, 0]).to(rows.device)  # the index holds the centroids
    return centroids, labels
