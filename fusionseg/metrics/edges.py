"""Edge Fidelity: how well the features' edges sit on the image's edges (EC, NC), how much of
their energy is high-frequency (FC), how fast they decorrelate under shifts (SP), and EF.

Follows docs/spec `metrics.md` ("Edge Fidelity"), with the chance-corrected `ec_cc`/`ef_cc`.
Every value is a float32 `(B,)` tensor in its range; an image whose features are not all finite
scores 0 on all of them, and so does a flat one (no feature edges, nothing to localize). EC and NC
are 0 when there are no feature edges or the image itself is flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fusionseg.metrics.maps import (
    dilate,
    is_constant,
    local_maxima,
    norm_map,
    pca_map,
    sanitize,
    sobel_magnitude,
    top_q_mask,
    valid_mask,
    zscore,
)

EF_KEYS = ("ef", "ef_cc", "ec", "ec_cc", "nc", "fc", "sp")
FC_CLAMP = 8.0
# An image whose luminance gradient spans less than this (of the [0, 1] range) is flat: resizing a
# constant image leaves rounding noise that min-max normalization would blow up into fake edges.
FLAT_IMAGE_GRADIENT = 1e-6
NCC_MIN_DENOM = 1e-12
# Shifts (dx, dy); the opposite shift pairs the same two overlaps, so 4 directions give the mean of 8.
HALF_DIRECTIONS = ((1, 0), (0, 1), (1, 1), (1, -1))


@dataclass
class ImageEdges:
    """Image-edge reference at the feature size, all `(B, h, w)` except `valid` `(h, w)`."""

    gradient: Tensor  # G_I, min-max normalized over valid
    edges: Tensor  # E_I, top-q mask
    centerline: Tensor  # L
    core: Tensor  # A_in
    near: Tensor  # A_near
    valid: Tensor


def srgb_to_linear(c: Tensor) -> Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def luminance(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Linear luminance `(B, h, w)` of sRGB `[0, 1]` images resized (bilinear, antialiased) to `size`."""
    x = images.detach().float().clamp(0, 1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    lin = srgb_to_linear(x.clamp(0, 1))
    return 0.2126 * lin[:, 0] + 0.7152 * lin[:, 1] + 0.0722 * lin[:, 2]


def _minmax_over(x: Tensor, valid: Tensor, min_span: float = 0.0) -> Tensor:
    """Rescale `(B, h, w)` maps by their min and max over `valid` (positions outside follow the same
    affine map); all zeros where that range is empty or not above `min_span`."""
    if not bool(valid.any()):
        return torch.zeros_like(x)
    inside = x[:, valid]
    lo, hi = inside.amin(dim=1)[:, None, None], inside.amax(dim=1)[:, None, None]
    span = hi - lo
    scaled = (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny)
    return torch.where(span > min_span, scaled, torch.zeros_like(x))


def image_edges(
    images: Tensor, size: tuple[int, int], q_img: float = 0.10, r_in: int = 2, r_near: int = 4
) -> ImageEdges:
    """The image's edges at feature resolution: gradient, top-q edges, centerline, core and near zones."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) sRGB in [0, 1], got shape {tuple(images.shape)}")
    valid = valid_mask(*size, device=images.device)
    g = _minmax_over(sobel_magnitude(luminance(images, size)), valid, FLAT_IMAGE_GRADIENT)
    edges = top_q_mask(g, valid, q_img)
    centerline = edges & local_maxima(g)
    core = dilate(centerline, r_in) & valid
    near = dilate(centerline, r_near) & ~core & valid
    return ImageEdges(g, edges, centerline, core, near, valid)


def feature_edges(pca: Tensor, valid: Tensor, q_feat: float = 0.10) -> tuple[Tensor, Tensor]:
    """`(G_F, E_F)`: Sobel magnitude of the PCA map and its top-q mask over valid."""
    g = sobel_magnitude(pca)
    return g, top_q_mask(g, valid, q_feat)


def frequency_characteristics(pca: Tensor, rho_low: float = 0.15) -> Tensor:
    """Share of the Hann-windowed power spectrum of the z-scored PCA map at radius `rho >= rho_low`."""
    b, h, w = pca.shape
    z = zscore(pca).clamp(-FC_CLAMP, FC_CLAMP)
    window = torch.outer(
        torch.hann_window(h, periodic=False, device=pca.device), torch.hann_window(w, periodic=False, device=pca.device)
    )
    power = torch.fft.fftshift(torch.fft.fft2(z * window).abs() ** 2, dim=(-2, -1))
    u, v = torch.meshgrid(
        torch.linspace(-1, 1, h, device=pca.device), torch.linspace(-1, 1, w, device=pca.device), indexing="ij"
    )
    rho = torch.sqrt(u**2 + v**2)
    rho = rho / rho.max()
    total = power.flatten(1).sum(1)
    high = (power * (rho >= rho_low)).flatten(1).sum(1)
    return torch.where(total > 0, high / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def shift_radii(h: int, w: int, num_radii: int = 16, r_max_frac: float = 0.6) -> list[int]:
    """`unique(round(logspace(0, log10(r_max), num_radii)))` clipped to `[1, r_max]`."""
    r_max = max(1, math.floor(r_max_frac * min(h, w)))
    radii = np.unique(np.clip(np.round(np.logspace(0, math.log10(r_max), num_radii)), 1, r_max))
    return [int(r) for r in radii]


def _overlap_ncc(z: Tensor, dy: int, dx: int) -> Tensor:
    """Pearson correlation over the overlap of `(B, h, w)` maps and their shift by `(dy, dx)`; 0 when undefined."""
    h, w = z.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return torch.zeros(z.shape[0], device=z.device)
    a = z[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)].flatten(1)
    b = z[:, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)].flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return torch.where(denom > NCC_MIN_DENOM, (a * b).sum(1) / denom.clamp_min(NCC_MIN_DENOM), torch.zeros_like(denom))


def correlation_radius(norm: Tensor, tau: float = 0.5, num_radii: int = 16, r_max_frac: float = 0.6) -> Tensor:
    """`r_tau` `(B,)`: the first shift radius at which the high-passed norm map's mean NCC over the
    8 directions drops below `tau` (else `r_max`).

    The high-pass is `N - avgpool3x3(N)` averaging only positions inside the map
    (`count_include_pad=False`), so a constant map has no high-frequency content and the
    map's border does not light up as an artificial frame.
    """
    h, w = norm.shape[-2:]
    high = norm - F.avg_pool2d(norm[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    z = zscore(high)
    radii = shift_radii(h, w, num_radii, r_max_frac)
    r_tau = torch.full((norm.shape[0],), float(radii[-1]), device=norm.device)
    found = torch.zeros(norm.shape[0], dtype=torch.bool, device=norm.device)
    for r in radii:
        ncc = torch.stack([_overlap_ncc(z, dy * r, dx * r) for dx, dy in HALF_DIRECTIONS]).mean(0)
        first = (ncc < tau) & ~found
        r_tau = torch.where(first, torch.full_like(r_tau, float(r)), r_tau)
        found |= first
        if bool(found.all()):
            break
    return r_tau


def spatial_precision(
    norm: Tensor, tau: float = 0.5, num_radii: int = 16, r_max_frac: float = 0.6, gamma: float = 1 / 64
) -> Tensor:
    """`1 / (1 + gamma * r_tau)` of `(B, h, w)` norm maps; 0 for a constant map (nothing to localize)."""
    r_tau = correlation_radius(norm, tau, num_radii, r_max_frac)
    sp = 1.0 / (1.0 + gamma * r_tau)
    return torch.where(is_constant(norm.flatten(1), 1), torch.zeros_like(sp), sp)


@torch.no_grad()
def edge_fidelity(
    feat: Tensor,
    images: Tensor,
    q_img: float = 0.10,
    q_feat: float = 0.10,
    r_in: int = 2,
    r_near: int = 4,
    rho_low: float = 0.15,
    tau: float = 0.5,
    num_radii: int = 16,
    r_max_frac: float = 0.6,
    gamma: float = 1 / 64,
    alpha: float = 100.0,
    seed: int = 0,
) -> dict[str, Tensor]:
    """EF and its parts for `(B, C, h, w)` features of `(B, 3, H, W)` sRGB `[0, 1]` images.

    Returns float32 `(B,)` tensors: `ef = alpha * ec * nc * fc * sp` in `[0, alpha]`, the
    chance-corrected `ef_cc = alpha * ec_cc * nc * fc * sp`, and `ec, ec_cc, nc, fc, sp` in `[0, 1]`.
    """
    x, finite = sanitize(feat)
    b, _, h, w = x.shape
    if images.dim() != 4 or images.shape[0] != b or images.shape[1] != 3:
        raise ValueError(
            f"images must be ({b}, 3, H, W) sRGB in [0, 1] for {b} feature maps, got {tuple(images.shape)}"
        )
    ref = image_edges(images.to(x.device), (h, w), q_img, r_in, r_near)
    p = pca_map(x, seed=seed)
    g_f, e_f = feature_edges(p, ref.valid, q_feat)
    energy = g_f * e_f
    e_tot = energy.flatten(1).sum(1)
    e_in = (energy * ref.core).flatten(1).sum(1)
    e_near = (energy * ref.near).flatten(1).sum(1)
    # Nothing to measure without feature edges (E_tot = 0) or without image edges (a flat image).
    has_edges = (e_tot > 0) & ref.edges.flatten(1).any(dim=1)
    safe_tot = e_tot.clamp_min(torch.finfo(e_tot.dtype).tiny)
    zeros = torch.zeros_like(e_tot)
    ec = torch.where(has_edges, e_in / safe_tot, zeros).clamp(0, 1)
    nc = torch.where(has_edges, 1 - e_near / safe_tot, zeros).clamp(0, 1)
    num_valid = int(ref.valid.sum())
    a_in = ref.core.flatten(1).sum(1).float() / max(num_valid, 1)
    ec_cc = torch.where(a_in < 1, (ec - a_in) / (1 - a_in).clamp_min(1e-12), zeros).clamp(0, 1)
    fc = frequency_characteristics(p, rho_low)
    sp = spatial_precision(norm_map(x), tau, num_radii, r_max_frac, gamma)
    out = {
        "ef": alpha * ec * nc * fc * sp,
        "ef_cc": alpha * ec_cc * nc * fc * sp,
        "ec": ec,
        "ec_cc": ec_cc,
        "nc": nc,
        "fc": fc,
        "sp": sp,
    }
    return {key: torch.where(finite, value, zeros).float() for key, value in out.items()}
