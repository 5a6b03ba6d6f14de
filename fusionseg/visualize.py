"""Pictures of features and of profiles: PCA colour maps, feature edges over image edges, profile plots.

The image functions return `(B, H, W, 3)` float arrays in `[0, 1]` (TensorBoard's `HWC` format,
e.g. `writer.add_image(tag, pca_rgb(feat)[0], dataformats="HWC")`); figures are matplotlib
`Figure`s built without pyplot, so no display or global backend is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from fusionseg.metrics import feature_edges, image_edges, pca_map, principal_scores
from fusionseg.metrics.maps import minmax, sanitize, valid_mask
from fusionseg.plan import FusionPlan
from fusionseg.profiling import Profile

# Colours of the edge overlay: image edges green, feature edges red, both yellow.
IMAGE_EDGE_RGB = (0.1, 0.9, 0.2)
FEATURE_EDGE_RGB = (1.0, 0.15, 0.1)
BOTH_RGB = (1.0, 0.9, 0.1)


@torch.no_grad()
def pca_rgb(feat: Tensor, seed: int = 0) -> np.ndarray:
    """First three principal components of `(B, C, h, w)` features as RGB: `(B, h, w, 3)` in `[0, 1]`.

    Channels are standardized first; each component is min-max rescaled on its own. With fewer than
    three channels (or positions) the missing components stay black.
    """
    x, _ = sanitize(feat)
    b, c, h, w = x.shape
    rows = x.flatten(2).transpose(1, 2)
    rows = rows - rows.mean(1, keepdim=True)
    rows = rows / rows.std(1, correction=0, keepdim=True).clamp_min(1e-6)
    d = min(3, c, h * w)
    rgb = torch.zeros(b, h * w, 3)
    rgb[..., :d] = principal_scores(rows.transpose(1, 2), d, seed=seed).cpu()
    rgb = minmax(rgb.permute(0, 2, 1).reshape(b * 3, h * w)).view(b, 3, h * w)
    return rgb.permute(0, 2, 1).reshape(b, h, w, 3).numpy()


@torch.no_grad()
def edge_overlay(feat: Tensor, images: Tensor, q_img: float = 0.10, q_feat: float = 0.10) -> np.ndarray:
    """Feature edges over image edges at feature resolution, on the dimmed image: `(B, h, w, 3)`.

    Green: the image's edge centerline `L`; red: the features' top-q edges `E_F`; yellow: both.
    """
    x, _ = sanitize(feat)
    h, w = x.shape[-2:]
    ref = image_edges(images.to(x.device), (h, w), q_img=q_img)
    _, feature = feature_edges(pca_map(x), valid_mask(h, w, device=x.device), q_feat)
    small = F.interpolate(images.float().clamp(0, 1), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    out = (0.35 * small).permute(0, 2, 3, 1).cpu()
    image_edge, feat_edge = ref.centerline.cpu(), feature.cpu()
    for mask, colour in ((image_edge & ~feat_edge, IMAGE_EDGE_RGB), (feat_edge & ~image_edge, FEATURE_EDGE_RGB),
                         (feat_edge & image_edge, BOTH_RGB)):
        out[mask] = torch.tensor(colour)
    return out.numpy()


def to_uint8(image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """`(H, W, 3)` float `[0, 1]` -> uint8, enlarged with nearest neighbours to `size` (H, W) if given."""
    arr = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if size is not None and arr.shape[:2] != tuple(size):
        arr = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.NEAREST))
    return arr


def save_image(path: str | Path, image: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image, size)).save(path)
    return path


def save_feature_maps(
    out_dir: str | Path, encoder: str, feats: Mapping[int, Tensor], images: Tensor
) -> list[Path]:
    """Write `<out_dir>/<encoder>/stride<s>_img<i>_pca.png` and `..._edges.png` for every image and stride,
    enlarged to the image size."""
    size = tuple(images.shape[-2:])
    written = []
    for stride, feat in sorted(feats.items()):
        pcas, overlays = pca_rgb(feat), edge_overlay(feat, images)
        for i in range(feat.shape[0]):
            stem = Path(out_dir) / encoder / f"stride{stride}_img{i}"
            written.append(save_image(f"{stem}_pca.png", pcas[i], size))
            written.append(save_image(f"{stem}_edges.png", overlays[i], size))
    return written


def profile_figure(profile: Profile, plan: FusionPlan | None = None, metrics: Sequence[str] = ("sc", "ef")) -> Figure:
    """One panel per metric: mean (± std) per stride, a line per encoder; the plan's stride is marked
    on the curve of the encoder injected there."""
    fig = Figure(figsize=(5.0 * len(metrics), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    strides = sorted({s for e in profile.encoders for s in profile.strides(e)})
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for encoder in profile.encoders:
            xs = profile.strides(encoder)
            means = np.array([profile.mean(encoder, s, metric) for s in xs])
            stds = np.array([profile.std(encoder, s, metric) for s in xs])
            role = ""
            if plan is not None:
                role = " (master)" if encoder == plan.master else " (aux)" if encoder == plan.aux else ""
            (line,) = ax.plot(xs, means, marker="o", label=f"{encoder}{role}")
            ax.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.15)
            if plan is not None and encoder == plan.aux:
                for s in plan.strides:
                    if s in xs:
                        ax.plot([s], [profile.mean(encoder, s, metric)], marker="*", markersize=16,
                                color=line.get_color(), markeredgecolor="black", linestyle="none")
        if plan is not None:
            for s in plan.strides:
                ax.axvline(s, color="gray", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(strides, [f"OS {s}" for s in strides])
        ax.minorticks_off()
        ax.set_title(metric.upper())
        ax.set_xlabel("output stride")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if plan is not None:
        fig.suptitle(plan.summary(), fontsize=9)
    return fig


def save_profile_figure(
    path: str | Path, profile: Profile, plan: FusionPlan | None = None, metrics: Sequence[str] = ("sc", "ef")
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile_figure(profile, plan, metrics).savefig(path, dpi=120)
    return path
