"""Label-free feature metrics: Structural Coherence (SC), Edge Fidelity (EF) and the released code's FCD, per image, batched.

>>> import torch
>>> from fusionseg.metrics import structural_coherence, edge_fidelity
>>> feat, images = torch.randn(2, 16, 24, 24), torch.rand(2, 3, 96, 96)
>>> sorted(structural_coherence(feat))
['sc', 'scs', 'sfc']
>>> edge_fidelity(feat, images)["ef"].shape
torch.Size([2])
"""

from fusionseg.metrics.batched_kmeans import batched_kmeans
from fusionseg.metrics.edges import (
    EF_KEYS,
    ImageEdges,
    correlation_radius,
    edge_fidelity,
    feature_edges,
    frequency_characteristics,
    image_edges,
    luminance,
    shift_radii,
    spatial_precision,
)
from fusionseg.metrics.fcd import FCD_KEYS, fcd, fcd_parts
from fusionseg.metrics.kmeans import faiss_has_gpu, kmeans
from fusionseg.metrics.maps import norm_map, pca_map, sobel_magnitude, top_q_mask, valid_mask, zscore
from fusionseg.metrics.pca import principal_scores
from fusionseg.metrics.pyramid import MAP_SIDE, METRIC_NAMES, feature_metrics, pyramid_metrics
from fusionseg.metrics.silhouette import silhouette_score, subset_silhouettes
from fusionseg.metrics.structure import sc_gt, scs, sfc, structural_coherence

# Bump when any metric's values change for the same input, so that cached profiles are computed again.
# 2: SCS clusters with batched k-means++ restarts (scikit-learn's rule) instead of faiss; fcd added.
IMPLEMENTATION = 2

__all__ = [
    "IMPLEMENTATION",
    "EF_KEYS",
    "FCD_KEYS",
    "MAP_SIDE",
    "METRIC_NAMES",
    "ImageEdges",
    "batched_kmeans",
    "correlation_radius",
    "edge_fidelity",
    "faiss_has_gpu",
    "fcd",
    "fcd_parts",
    "feature_edges",
    "feature_metrics",
    "frequency_characteristics",
    "image_edges",
    "kmeans",
    "luminance",
    "norm_map",
    "pca_map",
    "principal_scores",
    "pyramid_metrics",
    "sc_gt",
    "scs",
    "sfc",
    "shift_radii",
    "silhouette_score",
    "sobel_magnitude",
    "spatial_precision",
    "structural_coherence",
    "subset_silhouettes",
    "top_q_mask",
    "valid_mask",
    "zscore",
]
