"""Principal-component scores of batched feature maps, exact for small problems, subspace iteration for large.

Data come channels-first, `(B, C, n)` (a flattened feature map), and are centered over the `n`
positions and optionally scaled per channel *implicitly*: the centering and scaling are folded
into the small matrices, so large maps are never copied.

Exact: `eigh` of the smaller of the `C x C` and `n x n` second-moment matrices. When both are
larger than `EXACT_LIMIT` (e.g. 4096 positions of 768 channels, where the covariance and `eigh`
take ~100 ms on one core), a seeded block subspace iteration with oversampling and a final
Rayleigh-Ritz step finds the leading components to float32 precision for a fraction of that
(Halko, Martinsson & Tropp 2011, Algorithm 4.4).
"""

from __future__ import annotations

import torch
from torch import Tensor

EXACT_LIMIT = 128
OVERSAMPLING = 8
MIN_BLOCK = 16
POWER_ITERATIONS = 2


def principal_scores(
    x: Tensor, d: int, seed: int = 0, scale: Tensor | None = None, iterations: int = POWER_ITERATIONS
) -> Tensor:
    """Scores `(B, n, d)` of the `n` positions of `x` `(B, C, n)` on its first `d` principal components.

    Each channel is centered over the positions and multiplied by `scale` `(B, C)` (default 1).
    Components come in decreasing order of variance; each sign is arbitrary. Deterministic for a
    given `seed`; `seed` and `iterations` (of the subspace iteration) matter only for large problems.
    """
    b, c, n = x.shape
    if not 1 <= d <= min(n, c):
        raise ValueError(f"cannot take {d} principal components of {n} positions with {c} channels")
    x = x.float()
    mean = x.mean(dim=2)  # (B, C)
    scale = torch.ones_like(mean) if scale is None else scale.float().expand_as(mean)
    if min(n, c) <= EXACT_LIMIT:
        return _exact_scores((x - mean[..., None]) * scale[..., None], d)
    return _subspace_scores(x, mean, scale, d, seed, iterations)


def _exact_scores(m: Tensor, d: int) -> Tensor:
    """`m` `(B, C, n)` centered and scaled."""
    c, n = m.shape[1:]
    if c <= n:
        _, vectors = torch.linalg.eigh(m @ m.transpose(1, 2))  # ascending eigenvalues
        return m.transpose(1, 2) @ vectors[..., -d:].flip(-1)
    values, vectors = torch.linalg.eigh(m.transpose(1, 2) @ m)
    # Eigenvectors u of the n x n Gram matrix with eigenvalue s^2 give the scores s * u.
    return vectors[..., -d:].flip(-1) * values[:, -d:].flip(-1).clamp_min(0).sqrt()[:, None, :]


def _subspace_scores(x: Tensor, mean: Tensor, scale: Tensor, d: int, seed: int, iterations: int) -> Tensor:
    """Block power iteration on `M M^T` with `M = scale * (x - mean)` `(B, C, n)`, never formed."""
    b, c, n = x.shape
    q = min(max(d + OVERSAMPLING, MIN_BLOCK), c, n)

    def scores_of(v: Tensor) -> Tensor:  # M^T V: (B, n, q)
        sv = v * scale[..., None]
        return (sv.transpose(1, 2) @ x - sv.transpose(1, 2) @ mean[..., None]).transpose(1, 2)

    def back(z: Tensor) -> Tensor:  # M Z: (B, C, q)
        return scale[..., None] * (x @ z - mean[..., None] * z.sum(dim=1, keepdim=True))

    gen = torch.Generator().manual_seed(seed)
    v = torch.linalg.qr(torch.randn(c, q, generator=gen).to(x.device).expand(b, c, q)).Q
    for _ in range(iterations):
        v = torch.linalg.qr(back(scores_of(v))).Q
    z = scores_of(v)  # scores in the q-dimensional subspace
    values, vectors = torch.linalg.eigh(z.transpose(1, 2) @ z)  # Rayleigh-Ritz rotation
    return z @ vectors[..., -d:].flip(-1)
