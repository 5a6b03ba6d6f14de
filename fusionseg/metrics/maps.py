"""Shared building blocks of the metrics: norm map, z-score, PCA map, valid mask, Sobel, top-q mask.

Every function works on a batch, in float32, on the device of its input.
Definitions follow docs/spec `metrics.md` ("Shared building blocks").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fusionseg.metrics.pca import principal_scores

ZSCORE_MIN_STD = 1e-8
# A constant channel's two-pass std is the rounding error of its mean, far below this fraction of
# the mean; only channels under it need the exact (two more passes) constancy test.
CONSTANT_SUSPECT_RATIO = 1e-3
PCA_MIN_STD = 1e-6
BORDER = 1


def check_features(feat: Tensor) -> None:
    """Raise a clear error unless `feat` is a `(B, C, h, w)` floating-point tensor with B, C, h, w >= 1."""
    if not isinstance(feat, Tensor) or feat.dim() != 4 or min(feat.shape) < 1:
        shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
        raise ValueError(f"features must be a (B, C, h, w) tensor with every size >= 1, got {shape}")
    if not feat.is_floating_point():
        raise TypeError(f"features must be floating point (any float dtype), got {feat.dtype}")


def sanitize(feat: Tensor) -> tuple[Tensor, Tensor]:
    """`feat` as contiguous float32 with non-finite values set to 0, and the `(B,)` mask of all-finite images.

    Metrics score an image whose features are not all finite as 0; zeroing keeps the batched
    arithmetic of the other images clean.
    """
    check_features(feat)
    x = feat.detach().float().contiguous()  # channels-last features would slow every reduction below
    flat = x.flatten(1)
    # A sum is finite only when every value is: one fast pass instead of an isfinite mask of the whole map.
    # Where it is not (a value is not finite, or the sum overflowed), amax/amin tell exactly.
    finite = torch.isfinite(flat.sum(dim=1))
    if not bool(finite.all()):
        finite = torch.isfinite(flat.amax(dim=1)) & torch.isfinite(flat.amin(dim=1))
    if not bool(finite.all()):
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x, finite


def norm_map(feat: Tensor) -> Tensor:
    """`||feat||_2` over channels: `(B, C, h, w)` -> `(B, h, w)`."""
    x = feat.float()
    # Per image, so the squared copy stays one map large; far faster than vector_norm over dim 1 on CPU.
    norm = torch.stack([f.square().sum(dim=0) for f in x]).sqrt_()
    if not bool(torch.isfinite(norm).all()):  # squares overflowed: take the slow, scaled route
        norm = torch.linalg.vector_norm(x, dim=1)
    return norm


def is_constant(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """True where `x` holds exactly one value along `dim` (exact test, free of rounding)."""
    return x.amax(dim=dim) == x.amin(dim=dim)


def mean_std(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Mean and population std along `dim` (kept), two-pass: exact enough and, on CPU, much faster
    than `torch.std_mean` (the norm of the centered values is one pass, without a squared copy)."""
    mean = x.mean(dim=dim, keepdim=True)
    norm = torch.linalg.vector_norm(x - mean, dim=dim, keepdim=True)
    return mean, norm.div_(math.sqrt(max(x.shape[dim], 1)))


def zscore(x: Tensor) -> Tensor:
    """Per image: subtract the mean, divide by the population std clamped to >= 1e-8.

    `x` is `(B, h, w)`. An exactly constant map gives zeros (the mean of equal floats can miss
    their value by a rounding step, which the division would blow up).
    """
    flat = x.flatten(1)
    mean, std = mean_std(flat, 1)
    z = (flat - mean) / std.clamp_min(ZSCORE_MIN_STD)
    z = torch.where(is_constant(flat, 1)[:, None], torch.zeros_like(z), z)
    return z.view_as(x)


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per channel of `(B, C, n)`: mean and population std over the `n` positions, and whether the
    channel is exactly constant; each `(B, C, 1)`."""
    mean, std = mean_std(x, 2)
    constant = torch.zeros_like(std, dtype=torch.bool)
    suspect = ((std <= CONSTANT_SUSPECT_RATIO * mean.abs()) | ~torch.isfinite(std))[..., 0]  # inf: squares overflowed
    if bool(suspect.any()):
        constant[suspect] = is_constant(x[suspect], 1)[:, None]
    return mean, std, constant


def minmax(x: Tensor) -> Tensor:
    """Per image min-max rescale of `(B, ...)` to `[0, 1]`; a constant image gives zeros."""
    flat = x.flatten(1)
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.view_as(x)


def pca_map(feat: Tensor, seed: int = 0) -> Tensor:
    """First principal component of the standardized channels, min-max rescaled: `(B, h, w)` in `[0, 1]`.

    Channels are standardized over the `h*w` positions (population std clamped to >= 1e-6);
    the sign of the component is arbitrary; constant features give all zeros.
    """
    b, c, h, w = feat.shape
    scores = []
    for flat in feat.float().flatten(2).split(1):  # one map at a time: small temporaries
        _, std, constant = channel_stats(flat)
        scale = torch.where(constant, torch.zeros_like(std), 1 / std.clamp_min(PCA_MIN_STD))[..., 0]
        scores.append(principal_scores(flat, 1, seed=seed, scale=scale)[..., 0])  # (1, n)
    return minmax(torch.cat(scores).view(b, h, w))


def valid_mask(h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """`(h, w)` bool: every position except a `border = 1` frame (empty when h or w <= 2)."""
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    mask[BORDER : h - BORDER, BORDER : w - BORDER] = True
    return mask


def sobel_magnitude(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of `(B, h, w)` maps, kernels `/4`, replicate padding."""
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device) / 4
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    padded = F.pad(x.float()[:, None], (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)
    return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2)


def top_q_count(q: float, num_valid: int) -> int:
    """`ceil(q * num_valid)`, immune to float noise such as `0.1 * 70 = 7.000000000000001`."""
    return min(num_valid, math.ceil(round(q * num_valid, 9)))


def top_q_mask(values: Tensor, valid: Tensor, q: float) -> Tensor:
    """Exactly `ceil(q * |valid|)` valid positions with the largest values, per image.

    `values` is `(B, h, w)`, `valid` `(h, w)`. Empty for an image whose values are constant over valid.
    """
    b = values.shape[0]
    flat_valid = valid.flatten()
    count = top_q_count(q, int(flat_valid.sum()))
    mask = torch.zeros(b, flat_valid.numel(), dtype=torch.bool, device=values.device)
    if count == 0:
        return mask.view_as(values)
    flat = values.flatten(1).masked_fill(~flat_valid, float("-inf"))
    idx = flat.topk(count, dim=1).indices
    mask.scatter_(1, idx, True)
    inside = values.flatten(1)[:, flat_valid]
    mask &= ~is_constant(inside, 1)[:, None]
    return mask.view_as(values)


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Dilate `(B, h, w)` bool masks by a square of the given radius."""
    if radius <= 0:
        return mask.clone()
    grown = F.max_pool2d(mask.float()[:, None], 2 * radius + 1, stride=1, padding=radius)
    return grown[:, 0] > 0


def local_maxima(x: Tensor) -> Tensor:
    """`x >= maxpool3x3(x)` for `(B, h, w)` maps (padding never wins the max)."""
    return x >= F.max_pool2d(x[:, None], 3, stride=1, padding=1)[:, 0]
