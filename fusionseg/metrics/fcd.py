"""FCD: the stride score of the paper's released code, per image, batched.

Public API::

    fcd(feat, images) -> Tensor                # (B,) float32 in [0, 100], rounded to 2 decimals
    fcd_parts(feat, images) -> dict[str, Tensor]   # FCD_KEYS: fcd and its four factors, (B,) each

- `feat`: the features of ONE stride of ONE encoder, `(B, C, h, w)`, any float dtype.
- `images`: the same images, `(B, 3, H, W)`, float sRGB in `[0, 1]` (not normalized), any size;
  they are resized to `(h, w)` inside. This is the input contract of `edge_fidelity`.
- One value per image. An image whose features are not all finite, or a map without an interior
  (`h` or `w` <= 2), scores 0 (the released code gives NaN or 0 there).

The released code (github gyc-code/metric-guided-fusion, `mask2former/vfm_metric_batch_fastter.py`,
`compute_FCD_for_stages_fast` -> `compute_FCD_from_features_fast` -> `compute_FCD_from_cached`)
scores each stage with the settings that function hard-codes (its own keyword arguments are
ignored): `q_top = q_img = 0.10`, `dilate_r = 2` (rings at 2 and 4), `border = 1`, full-resolution
SCL over 8 directions and 16 radii without early stop, PCA by `eigh`. With `P` the PCA map:

    FCD = 100 * clip(near * (1 - far) * hf_share * fine_scale, 0, 1), rounded to 2 decimals
    near = E[ring] / E[all],  far = E[far zone] / E[all]   (E: raw Sobel energy of P on its top-10% edges)
    ring = image centerline dilated by 4, minus dilated by 2;  far zone = outside the radius-4 dilation
    hf_share = spectral energy of the Hann-windowed z-scored P at rho >= 0.15
    fine_scale = 64 / (64 + SCL), SCL = first shift radius whose mean NCC (8 directions) of the
                 high-passed norm map drops below 0.5

It differs from EF (`edge_fidelity`) where docs/metrics.md says: the gain is the energy 2-4 px OFF
the image edges (EF's EC counts the energy ON them), stds are sample stds (n - 1), the image is
resized without antialiasing, and the high-pass averages zero padding in. Written from that
formula; tests/test_metrics_fcd.py holds numbers produced by the released function itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fusionseg.metrics.edges import srgb_to_linear
from fusionseg.metrics.maps import sanitize, sobel_magnitude

FCD_KEYS = ("fcd", "fcd_near", "fcd_far", "fcd_hf", "fcd_fine")
# Epsilons and fixed values of the released code, kept so the numbers match it.
EPS = 1e-8
PCA_MIN_STD = 1e-6
MINMAX_MIN_SPAN = 1e-8
TOPK_MIN_SPAN = 1e-6
CENTERLINE_TOL = 1e-6
Z_CLAMP = 8.0
# Opposite shifts pair the same two overlaps (same NCC), so these 4 give the mean of the 8 directions.
HALF_DIRECTIONS = ((1, 0), (0, 1), (1, 1), (-1, 1))


def _interior(h: int, w: int, device: torch.device) -> Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    mask[1 : h - 1, 1 : w - 1] = True
    return mask


def _minmax_interior(x: Tensor, valid: Tensor) -> Tensor:
    """Rescale `(B, h, w)` by the min and max over `valid`, clipped to [0, 1]; a span <= 1e-8 divides by 1."""
    inside = x[:, valid]
    lo, hi = inside.amin(1)[:, None, None], inside.amax(1)[:, None, None]
    span = hi - lo
    return ((x - lo) / torch.where(span > MINMAX_MIN_SPAN, span, torch.ones_like(span))).clamp(0, 1)


def _top_fraction(x: Tensor, valid: Tensor, q: float) -> Tensor:
    """The `max(1, ceil(q * n))` largest of the `n` valid values per image (empty when n < 4 or flat)."""
    out = torch.zeros_like(x, dtype=torch.bool)
    n = int(valid.sum())
    if n < 4:
        return out
    k = max(1, math.ceil(q * float(n)))
    positions = valid.flatten().nonzero().flatten()
    for i, vals in enumerate(x[:, valid].float()):  # one 1-D topk per image: the released tie order
        if float(vals.max() - vals.min()) < TOPK_MIN_SPAN:
            continue
        out[i].view(-1)[positions[vals.topk(k, sorted=False).indices]] = True
    return out


def _pca_map(x: Tensor) -> Tensor:
    """First principal component of channels standardized with the sample std, min-max to [0, 1]: `(B, h, w)`."""
    b, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, N, C)
    n = flat.shape[1]
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(PCA_MIN_STD)
    cov = z.transpose(1, 2) @ z / float(max(n - 1, 1))
    _, vectors = torch.linalg.eigh(0.5 * (cov + cov.transpose(1, 2)))
    scores = torch.einsum("bnc,bc->bn", z, vectors[:, :, -1])
    lo, hi = scores.amin(1, keepdim=True), scores.amax(1, keepdim=True)
    return ((scores - lo) / (hi - lo + 1e-6)).view(b, h, w).clamp(0, 1)


def _zscore(m: Tensor) -> Tensor:
    flat = m.flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(EPS)).view_as(m)


def _hf_share(pca: Tensor, rho_low: float) -> Tensor:
    """Share of the Hann-windowed power spectrum of the z-scored map (clamped to mean +- 8) at rho >= rho_low."""
    _, h, w = pca.shape
    z = _zscore(pca)
    mu = z.mean((1, 2), keepdim=True)
    z = torch.maximum(torch.minimum(z, mu + Z_CLAMP), mu - Z_CLAMP)
    window = (torch.hann_window(h, periodic=False, device=z.device).view(h, 1)
              * torch.hann_window(w, periodic=False, device=z.device).view(1, w)).clamp_min(0)
    spectrum = torch.fft.fft2(z * window)
    power = torch.fft.fftshift(spectrum.real.square() + spectrum.imag.square(), dim=(-2, -1))
    u = torch.linspace(-1.0, 1.0, h, device=z.device).view(h, 1)
    v = torch.linspace(-1.0, 1.0, w, device=z.device).view(1, w)
    rho = torch.sqrt(u.square() + v.square())
    rho = rho / rho.max().clamp_min(1e-6)
    low = (power * (rho < rho_low)).flatten(1).sum(1)
    high = (power * (rho >= rho_low)).flatten(1).sum(1)
    return (high / (low + high).clamp_min(EPS)).clamp(0, 1)


def _radii(h: int, w: int, num_radii: int, r_max_frac: float) -> list[int]:
    r_max = max(1, int(r_max_frac * min(h, w)))
    end = torch.log10(torch.tensor(float(r_max), dtype=torch.float32))
    radii = torch.logspace(0, end, steps=max(1, num_radii)).round().clamp(1, r_max).long()
    return radii.unique().tolist() or [1]


def _ncc(m: Tensor, dx: int, dy: int) -> Tensor:
    """NCC of `(B, h, w)` maps with their shift by `(dx, dy)` over the overlap; 0 without an overlap."""
    h, w = m.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return torch.zeros(m.shape[0], device=m.device)
    a = m[:, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)].flatten(1)
    b = m[:, max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)].flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def _scl(x: Tensor, tau: float, num_radii: int, r_max_frac: float) -> Tensor:
    """Correlation length `(B,)` in feature pixels: the first radius whose mean NCC is below `tau`, else the last."""
    _, _, h, w = x.shape
    norm = torch.linalg.vector_norm(x, ord=2, dim=1)
    high = norm - F.avg_pool2d(norm[:, None], 3, stride=1, padding=1)[:, 0]  # zero padding averaged in
    z = _zscore(high)
    radii = _radii(h, w, num_radii, r_max_frac)
    scl = torch.full((x.shape[0],), float(radii[-1]), device=x.device)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for r in radii:
        corr = torch.stack([_ncc(z, dx * r, dy * r) for dx, dy in HALF_DIRECTIONS]).mean(0)
        first = (corr < tau) & ~found
        scl = torch.where(first, torch.full_like(scl, float(r)), scl)
        found |= first
        if bool(found.all()):
            break
    return scl


def _image_centerline(images: Tensor, size: tuple[int, int], valid: Tensor, q_img: float) -> Tensor:
    """Local maxima of the image's Sobel luminance gradient among its top-q, at the feature size."""
    srgb = F.interpolate(images.float().clamp(0, 1), size=size, mode="bilinear", align_corners=False)
    lin = srgb_to_linear(srgb)
    luma = (0.2126 * lin[:, 0] + 0.7152 * lin[:, 1] + 0.0722 * lin[:, 2]).clamp(0, 1)
    g = _minmax_interior(sobel_magnitude(luma), valid)
    peak = F.max_pool2d(g[:, None], 3, stride=1, padding=1)[:, 0]
    return (g >= peak - CENTERLINE_TOL) & valid & _top_fraction(g, valid, q_img)


def _dilate(mask: Tensor, radius: int) -> Tensor:
    return F.max_pool2d(mask.float()[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


@torch.no_grad()
def fcd_parts(
    feat: Tensor,
    images: Tensor,
    q_feat: float = 0.10,
    q_img: float = 0.10,
    r_in: int = 2,
    r_near: int = 4,
    rho_low: float = 0.15,
    tau: float = 0.5,
    num_radii: int = 16,
    r_max_frac: float = 0.6,
    scl_ref: float = 64.0,
    alpha: float = 100.0,
    decimals: int | None = 2,
) -> dict[str, Tensor]:
    """FCD and its factors for `(B, C, h, w)` features of `(B, 3, H, W)` sRGB `[0, 1]` images.

    Returns float32 `(B,)` tensors under `FCD_KEYS`: `fcd` in `[0, alpha]` (rounded to `decimals`
    as the released code does; None keeps every digit), `fcd_near` (energy share in the ring),
    `fcd_far` (share beyond it), `fcd_hf` (high-frequency share) and `fcd_fine` (`64 / (64 + SCL)`).
    The defaults are the released code's.
    """
    x, finite = sanitize(feat)
    b, _, h, w = x.shape
    if images.dim() != 4 or images.shape[0] != b or images.shape[1] != 3:
        raise ValueError(
            f"images must be ({b}, 3, H, W) sRGB in [0, 1] for {b} feature maps, got {tuple(images.shape)}"
        )
    zeros = torch.zeros(b, device=x.device)
    if h <= 2 or w <= 2:  # no interior: nothing to measure
        return {key: zeros.clone() for key in FCD_KEYS}
    valid = _interior(h, w, x.device)
    pca = _pca_map(x)
    g_raw = sobel_magnitude(pca)
    feature_edges = _top_fraction(_minmax_interior(g_raw, valid), valid, q_feat)
    centerline = _image_centerline(images.to(x.device), (h, w), valid, q_img)
    core, outer = _dilate(centerline, r_in), _dilate(centerline, max(r_near, 3))
    ring, far_zone = outer & ~core & valid, ~outer & valid
    energy = (g_raw * valid).clamp_min(0) * feature_edges
    total = energy.flatten(1).sum(1).clamp_min(EPS)
    near = ((energy * ring).flatten(1).sum(1) / total).clamp(0, 1)
    far = ((energy * far_zone).flatten(1).sum(1) / total).clamp(0, 1)
    hf = _hf_share(pca, rho_low)
    fine = (scl_ref / (_scl(x, tau, num_radii, r_max_frac) + scl_ref)).clamp(0, 1)
    score = alpha * (near * (1.0 - far) * hf * fine).clamp(0, 1)
    if decimals is not None:
        score = score.round(decimals=decimals)
    out = {"fcd": score, "fcd_near": near, "fcd_far": far, "fcd_hf": hf, "fcd_fine": fine}
    return {key: torch.where(finite, value, zeros).float() for key, value in out.items()}


def fcd(feat: Tensor, images: Tensor, **options: float | int | None) -> Tensor:
    """The released code's FCD `(B,)` for one stride's features; see `fcd_parts` for the options."""
    return fcd_parts(feat, images, **options)["fcd"]  # type: ignore[arg-type]
