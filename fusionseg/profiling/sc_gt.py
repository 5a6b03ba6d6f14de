"""SC against labels: the label-free SC beside the supervised SC_GT, per encoder and stride, and how well they agree.

SC_GT (`fusionseg.metrics.sc_gt`) is SC with the ground-truth segments as the clusters. The paper checks
that SC measures structure by ranking encoders x strides by both: Spearman 0.726. Here:

    images, segments = labelled_images(datamodule, num_images=16, size=512)
    values = sc_and_sc_gt(encoders, images, segments)        # {encoder: {stride: {"sc": (N,), "sc_gt": (N,)}}}
    agreement = sc_agreement(values)                         # Spearman over encoders x strides, bootstrap spread
    print(agreement_markdown(agreement))

The spread comes from a bootstrap over images: the images are drawn again with replacement, the means
recomputed and the correlation taken again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionseg.metrics import sc_gt, structural_coherence
from fusionseg.structures import IGNORE_INDEX, SegTarget

Values = dict[str, dict[int, dict[str, Tensor]]]  # encoder -> stride -> {"sc", "sc_gt"} -> (N,) per image


def segment_map(target: SegTarget, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """`(H, W)` int64 map: mask `i` of the target (crowd masks left out) is segment `i`, the rest `ignore_index`.

    Semantic targets hold one mask per class, instance and panoptic ones one per object or region: the
    segments are what the labels call one thing.
    """
    h, w = target.masks.shape[-2:]
    out = torch.full((h, w), ignore_index, dtype=torch.int64)
    for i, (mask, crowd) in enumerate(zip(target.masks.cpu(), target.iscrowd.cpu())):
        if not crowd:
            out[mask] = i
    return out


def _square(x: Tensor, size: int, mode: str) -> Tensor:
    """Center-crop `(C, H, W)` to a square and resize it to `size x size`."""
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = x[None, :, top : top + side, left : left + side].float()
    if mode == "nearest":
        return F.interpolate(crop, size=(size, size), mode="nearest")[0]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def labelled_images(datamodule: Any, num_images: int, size: int) -> tuple[Tensor, Tensor]:
    """The first `num_images` validation images `(N, 3, size, size)` in [0, 1] and their segment maps
    `(N, size, size)`, both center-cropped to a square (images bilinear, segments nearest)."""
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    # Read in this process, not through the loader's workers: persistent workers of a loader left
    # half-read outlive it, and ignoring SIGTERM (fusionseg.data.workers) they hang the interpreter's exit.
    dataset, step = loader.dataset, loader.batch_size or 1
    images, segments = [], []
    for start in range(0, len(dataset), step):
        batch = loader.collate_fn([dataset[i] for i in range(start, min(start + step, len(dataset)))])
        for i, target in enumerate(batch.targets):
            h, w = (int(v) for v in batch.image_sizes[i])
            image = batch.images[i, :, :h, :w]
            seg = segment_map(target)
            if tuple(seg.shape) != (h, w):  # evaluation targets are at the original size
                seg = F.interpolate(seg[None, None].double(), size=(h, w), mode="nearest")[0, 0].long()
            images.append(_square(image, size, "bilinear"))
            segments.append(_square(seg[None], size, "nearest")[0].long())
            if len(images) == num_images:
                return torch.stack(images), torch.stack(segments)
    if not images:
        raise ValueError("the validation split holds no images: SC_GT needs labelled images")
    return torch.stack(images), torch.stack(segments)


@torch.no_grad()
def sc_and_sc_gt(encoders: Mapping[str, nn.Module], images: Tensor, segments: Tensor, batch_size: int = 4,
                 seed: int = 0) -> Values:
    """Per encoder and stride, SC (with its parts SFC and SCS) and SC_GT of every image:
    `{encoder: {stride: {"sc": (N,), "sfc": (N,), "scs": (N,), "sc_gt": (N,)}}}`.

    `images` `(N, 3, H, W)` in [0, 1]; `segments` `(N, H, W)` integer segment ids (`IGNORE_INDEX` left out).
    Each encoder sees `encoder.normalize(images)` in eval mode; its training mode is restored afterwards.
    """
    if images.dim() != 4 or segments.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"images (N, 3, H, W) and segments (N, H, W) of the same images are needed, got "
                         f"{tuple(images.shape)} and {tuple(segments.shape)}")
    out: Values = {}
    for name, encoder in encoders.items():
        mode = encoder.training
        device = next(encoder.parameters(), torch.empty(0)).device
        encoder.eval()
        parts: dict[int, dict[str, list[Tensor]]] = {}
        try:
            for start in range(0, images.shape[0], batch_size):
                x = images[start : start + batch_size].to(device)
                labels = segments[start : start + batch_size].to(device)
                for stride, feat in encoder(encoder.normalize(x)).items():
                    slot = parts.setdefault(int(stride), {"sc": [], "sfc": [], "scs": [], "sc_gt": []})
                    for key, value in structural_coherence(feat, seed=seed).items():
                        slot[key].append(value.cpu())
                    slot["sc_gt"].append(sc_gt(feat, labels, seed=seed).cpu())
        finally:
            encoder.train(mode)
        out[name] = {s: {k: torch.cat(v) for k, v in slot.items()} for s, slot in sorted(parts.items())}
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def _rank_agreement(x: np.ndarray, y: np.ndarray, bootstrap: int, seed: int) -> dict[str, Any]:
    """Spearman of the per-point means of `(points, images)` arrays, and its spread when images are redrawn."""
    n = x.shape[1]
    rng = np.random.default_rng(seed)
    draws = np.array([_spearman(x[:, idx].mean(1), y[:, idx].mean(1))
                      for idx in (rng.integers(0, n, n) for _ in range(bootstrap))])
    draws = draws[np.isfinite(draws)]
    return {
        "spearman": _spearman(x.mean(1), y.mean(1)),
        "bootstrap": {"draws": int(draws.size), "mean": float(draws.mean()) if draws.size else math.nan,
                      "std": float(draws.std(ddof=1)) if draws.size > 1 else math.nan,
                      "ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
                      if draws.size else [math.nan, math.nan]},
    }


def sc_agreement(values: Values, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """How well SC ranks encoders x strides as SC_GT does.

    Returns `spearman` (over every encoder and stride, of the mean SC and mean SC_GT over images, as the
    paper), its `bootstrap` spread over images (`mean`, `std`, `ci95`), `pearson`, `within_encoder`
    (Spearman over strides, per encoder), `scs_vs_gt_clustering` (the same for SCS against the labels'
    clustering score `SC_GT^2 / SFC`: the comparison without the SFC factor SC and SC_GT share; None when
    the values lack `sfc`/`scs`) and the `points` themselves.
    """
    points = [(e, s, v) for e, strides in values.items() for s, v in strides.items()]
    if len(points) < 3:
        raise ValueError(f"SC vs SC_GT needs at least 3 encoder x stride points, got {len(points)}")
    counts = {v["sc"].numel() for _, _, v in points} | {v["sc_gt"].numel() for _, _, v in points}
    if len(counts) != 1:
        raise ValueError(f"every encoder and stride must be measured on the same images; image counts {counts}")

    def stack(key: str) -> np.ndarray:  # (points, images)
        return np.stack([v[key].double().numpy() for _, _, v in points])

    sc, gt = stack("sc"), stack("sc_gt")
    result = {**_rank_agreement(sc, gt, bootstrap, seed),
              "pearson": float(np.corrcoef(sc.mean(1), gt.mean(1))[0, 1]),
              "num_points": len(points), "num_images": counts.pop()}
    clustering = None
    if all("sfc" in v and "scs" in v for _, _, v in points):
        scs, sfc = stack("scs"), stack("sfc")
        gt_clusters = np.divide(gt**2, sfc, out=np.zeros_like(gt), where=sfc > 0)
        clustering = {**_rank_agreement(scs, gt_clusters, bootstrap, seed),
                      "scs_mean": scs.mean(1).tolist(), "gt_clustering_mean": gt_clusters.mean(1).tolist()}
    within = {}
    for encoder, strides in values.items():
        x = np.array([v["sc"].double().mean().item() for v in strides.values()])
        y = np.array([v["sc_gt"].double().mean().item() for v in strides.values()])
        within[encoder] = _spearman(x, y)
    result["within_encoder"] = within
    result["scs_vs_gt_clustering"] = clustering
    result["points"] = [{"encoder": e, "stride": s,
                         "sc_mean": float(v["sc"].double().mean()), "sc_std": float(v["sc"].double().std(0)),
                         "sc_gt_mean": float(v["sc_gt"].double().mean()),
                         "sc_gt_std": float(v["sc_gt"].double().std(0))}
                        for e, s, v in points]
    return result


def agreement_markdown(agreement: Mapping[str, Any]) -> str:
    """The encoders x strides table of SC and SC_GT (mean ± std over images) and the rank agreement."""
    boot = agreement["bootstrap"]
    lines = ["| encoder | stride | SC | SC_GT |", "|---|---|---|---|"]
    for p in agreement["points"]:
        lines.append(f"| {p['encoder']} | {p['stride']} | {p['sc_mean']:.3f} ± {p['sc_std']:.3f} "
                     f"| {p['sc_gt_mean']:.3f} ± {p['sc_gt_std']:.3f} |")
    within = ", ".join(f"{e} {r:.2f}" if math.isfinite(r) else f"{e} -" for e, r in agreement["within_encoder"].items())
    lines += ["", f"Spearman(SC, SC_GT) over {agreement['num_points']} encoder x stride points: "
              f"**{agreement['spearman']:.3f}** (bootstrap over {agreement['num_images']} images: "
              f"{boot['mean']:.3f} ± {boot['std']:.3f}, 95% interval [{boot['ci95'][0]:.3f}, {boot['ci95'][1]:.3f}]); "
              f"Pearson {agreement['pearson']:.3f}; the paper reports Spearman 0.726.",
              f"Within each encoder, over strides: {within}."]
    clustering = agreement.get("scs_vs_gt_clustering")
    if clustering is not None:
        cb = clustering["bootstrap"]
        lines.append(f"SC and SC_GT share the SFC factor; without it, SCS against the labels' clustering score "
                     f"(SC_GT^2 / SFC): Spearman {clustering['spearman']:.3f} (bootstrap {cb['mean']:.3f} ± "
                     f"{cb['std']:.3f}, 95% interval [{cb['ci95'][0]:.3f}, {cb['ci95'][1]:.3f}]).")
    return "\n".join(lines) + "\n"


def sc_gt_report(datamodule: Any, encoders: Mapping[str, nn.Module], num_images: int, size: int, out: Path,
                 batch_size: int = 4, seed: int = 0, bootstrap: int = 1000) -> str:
    """SC vs SC_GT of `encoders` on the labelled validation images of `datamodule` (the images `fusionseg
    profile --data` profiles): writes `out/sc_gt.json` and `out/sc_gt.md` and returns the Markdown (and what
    it wrote), or why there was nothing to compare."""
    images, segments = labelled_images(datamodule, num_images, size)
    if bool((segments == IGNORE_INDEX).all()):
        return "SC_GT: the validation images carry no labelled segments; nothing to compare SC with\n"
    values = sc_and_sc_gt(encoders, images, segments, batch_size, seed)
    if sum(len(strides) for strides in values.values()) < 3:
        return "SC_GT: fewer than 3 encoder x stride points; no rank correlation to report\n"
    agreement = sc_agreement(values, bootstrap, seed)
    text = agreement_markdown(agreement)
    Path(out, "sc_gt.json").write_text(json.dumps(agreement, indent=2) + "\n")
    Path(out, "sc_gt.md").write_text(text)
    return f"{text}wrote {Path(out) / 'sc_gt.json'}, sc_gt.md\n"
