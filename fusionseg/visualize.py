"""Pictures of features and of profiles: PCA colour maps, feature edges over image edges, profile plots.

The image functions return `(B, H, W, 3)` float arrays in `[0, 1]` (TensorBoard's `HWC` format,
e.g. `writer.add_image(tag, pca_rgb(feat)[0], dataformats="HWC")`); figures are matplotlib
`Figure`s built without pyplot, so no display or global backend is touched.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
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


EDGE_LEGEND = tuple((name, tuple(round(255 * c) for c in rgb)) for name, rgb in (
    ("image edges only", IMAGE_EDGE_RGB), ("feature edges only", FEATURE_EDGE_RGB), ("both (what EF rewards)", BOTH_RGB)))


@torch.no_grad()
def contact_sheet(encoder: str, feats: Mapping[int, Tensor], images: Tensor, cell: int = 128,
                  profile: Profile | None = None) -> np.ndarray:
    """All of an encoder's maps on one page: a row per image (the image, then per stride its PCA map and
    its edges over the image's edges), titled columns, a legend of the edge colours: `(H, W, 3)` uint8.

    With `profile`, the column titles carry the encoder's mean SC and EF at that stride.
    """
    from fusionseg.grids import titled_grid

    strides = sorted(feats)
    size = tuple(images.shape[-2:])
    pcas = {s: pca_rgb(feats[s]) for s in strides}
    edges = {s: edge_overlay(feats[s], images) for s in strides}
    rows = []
    for i in range(images.shape[0]):
        row = [to_uint8(images[i].permute(1, 2, 0).cpu().numpy())]
        for s in strides:
            row += [to_uint8(pcas[s][i], size), to_uint8(edges[s][i], size)]
        rows.append(row)
    titles = ["image"]
    for s in strides:
        h, w = feats[s].shape[-2:]
        scores = ""
        if profile is not None and encoder in profile.encoders and s in profile.strides(encoder):
            scores = f"\nSC {profile.mean(encoder, s, 'sc'):.2f}  EF {profile.mean(encoder, s, 'ef'):.2f}"
        titles += [f"OS {s} PCA\n{h}x{w} map{scores}", f"OS {s} edges"]
    notes = ("PCA: the first three principal components of the features as RGB (similar colour = similar "
             "features).\nEdges: the features' strongest edges over the image's edges, at feature resolution.")
    return titled_grid(rows, titles, title=f"{encoder}: feature maps per output stride", notes=notes,
                       legend_entries=EDGE_LEGEND, row_height=cell)


def save_contact_sheet(path: str | Path, encoder: str, feats: Mapping[int, Tensor], images: Tensor,
                       cell: int = 128, profile: Profile | None = None) -> Path:
    """`contact_sheet` written as a PNG (one per encoder instead of a file per map, image and stride)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(encoder, feats, images, cell, profile)).save(path)
    return path


# What each metric's axis says, so a figure reads without the docs.
METRIC_AXIS = {
    "sc": "SC: structural coherence\n(higher = features form clearer regions)",
    "ef": "EF: edge fidelity\n(higher = feature edges lie on image edges)",
    "ef_cc": "EF_cc: edge fidelity, chance-corrected\n(higher = feature edges on image edges)",
}


def _excluded(plan: FusionPlan | None, encoder: str) -> list[int]:
    """Strides of `encoder` the plan left out (feature maps too small to score), from the plan's scores."""
    if plan is None:
        return []
    return [int(s) for s in (plan.scores.get("excluded_strides") or {}).get(encoder, [])]


def profile_figure(profile: Profile, plan: FusionPlan | None = None, metrics: Sequence[str] = ("sc", "ef"),
                   columns: int | None = None, font_size: float = 10.0) -> Figure:
    """One panel per metric: mean (band: ± 1 std over images) per stride, a line per encoder.

    With a plan: the metric the plan chose the stride by is drawn too (when the profile holds it), the
    injection stride is starred on the aux's curve of that metric, and strides the plan left out (maps
    smaller than `min_map_side`) are shaded and their points drawn hollow, so a peak there is not
    mistaken for the choice.

    `columns` panels side by side (default all in one row; 1 stacks them, which stays legible where a
    viewer shrinks the picture to a narrow card, as TensorBoard does); `font_size` is the base text size.
    """
    with rc_context({"font.size": font_size}):
        return _profile_figure(profile, plan, metrics, columns, font_size)


def _profile_figure(profile: Profile, plan: FusionPlan | None, metrics: Sequence[str], columns: int | None,
                    font_size: float) -> Figure:
    plan_metric = str(plan.scores.get("plan_metric", "ef")) if plan is not None else None
    metrics = list(metrics)
    if plan_metric is not None and plan_metric not in metrics and _holds(profile, plan_metric):
        metrics.append(plan_metric)
    columns = min(columns or len(metrics), len(metrics))
    rows = -(-len(metrics) // columns)
    narrow = columns == 1 and len(metrics) > 1  # stacked panels: one legend column, wrapped titles
    fig = Figure(figsize=(6.0, 3.6 * rows + 2.2) if narrow else (5.0 * columns, 3.6 * rows + 1.2),
                 layout="constrained")
    FigureCanvasAgg(fig)
    strides = sorted({s for e in profile.encoders for s in profile.strides(e)})
    excluded = sorted({s for e in profile.encoders for s in _excluded(plan, e)})
    legend: dict[str, Any] = {}  # one legend for all panels, below them
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, columns, i + 1)
        for encoder in profile.encoders:
            xs = profile.strides(encoder)
            used = [s for s in xs if s not in _excluded(plan, encoder)]
            left_out = [s for s in xs if s not in used]
            role = ""
            if plan is not None:
                role = " (master)" if encoder == plan.master else " (aux)" if encoder == plan.aux else ""
            means = np.array([profile.mean(encoder, s, metric) for s in used])
            stds = np.array([profile.std(encoder, s, metric) for s in used])
            (line,) = ax.plot(used, means, marker="o", label=f"{encoder}{role}")
            legend.setdefault(line.get_label(), line)
            ax.fill_between(used, means - stds, means + stds, color=line.get_color(), alpha=0.15)
            if left_out:  # drawn hollow and dotted: measured, but not part of the choice
                joined = used[-1:] + left_out if used and used[-1] < left_out[0] else left_out
                ax.plot(joined, [profile.mean(encoder, s, metric) for s in joined], linestyle=":",
                        color=line.get_color())
                ax.plot(left_out, [profile.mean(encoder, s, metric) for s in left_out], marker="o",
                        linestyle="none", markerfacecolor="white", markeredgecolor=line.get_color())
            if plan is not None and encoder == plan.aux and metric == plan_metric:
                for s in plan.strides:
                    if s in xs:
                        (star,) = ax.plot([s], [profile.mean(encoder, s, metric)], marker="*", markersize=17,
                                          color=line.get_color(), markeredgecolor="black", linestyle="none",
                                          label=f"injection stride OS {s} ({plan.aux}'s {metric.upper()} peak)")
                        legend.setdefault(star.get_label(), star)
        if plan is not None:
            for s in plan.strides:
                ax.axvline(s, color="gray", linestyle="--", linewidth=1)
        for s in excluded:
            ax.axvspan(s / 2**0.5, s * 2**0.5, facecolor="0.93", zorder=0, hatch="//", edgecolor="0.8", linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xlim(strides[0] / 1.4, strides[-1] * 1.4)
        ax.set_xticks(strides, [f"OS {s}" for s in strides])
        ax.minorticks_off()
        ax.set_title(metric.upper() + ("  (the plan's metric)" if metric == plan_metric else ""))
        ax.set_xlabel("output stride (feature map = image size / stride)")
        axis = METRIC_AXIS.get(metric, metric.upper())
        ax.set_ylabel(axis.split("\n")[0] if narrow else axis)  # the "higher = ..." line would not fit
        ax.grid(alpha=0.3)
    band = Patch(facecolor="gray", alpha=0.25, label=f"band: ± 1 std over {_images(profile)} images")
    legend[band.get_label()] = band
    if excluded:
        side = plan.scores.get("min_map_side", "?") if plan is not None else "?"
        shade = Patch(facecolor="0.93", hatch="//", edgecolor="0.8",
                      label=f"hollow, shaded: not used for the plan (maps < {side} px, unreliable)")
        legend[shade.get_label()] = shade
    fig.legend(handles=list(legend.values()), loc="outside lower center", ncols=1 if narrow else min(3, len(legend)),
               fontsize=0.8 * font_size, frameon=False)
    if plan is not None:
        fig.suptitle(textwrap.fill(plan.summary(), 48) if narrow else plan.summary(), fontsize=font_size)
    return fig


def _holds(profile: Profile, metric: str) -> bool:
    """Whether the profile has `metric` (a plan may rank strides by a score it does not store)."""
    try:
        return all(np.isfinite(profile.mean(e, profile.strides(e)[0], metric)) for e in profile.encoders)
    except (KeyError, ValueError):
        return False


def _images(profile: Profile) -> str:
    counts = sorted({profile.num_images(e) for e in profile.encoders})
    return "/".join(str(c) for c in counts)


def save_profile_figure(
    path: str | Path, profile: Profile, plan: FusionPlan | None = None, metrics: Sequence[str] = ("sc", "ef")
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile_figure(profile, plan, metrics).savefig(path, dpi=120)
    return path
