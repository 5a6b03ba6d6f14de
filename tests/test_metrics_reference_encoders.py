"""The metrics on the shipped sample photographs: the `edges` reference encoder is edge-strong,
`regions` structure-strong, and white noise has no chance-corrected edge fidelity."""

from __future__ import annotations

import pytest
import torch

from fusionseg.commands.profile import folder_images, sample_images_dir
from fusionseg.encoders import build
from fusionseg.metrics import pyramid_metrics

SIZE = 256


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return folder_images(sample_images_dir(), num_images=8, size=SIZE)


@pytest.fixture(scope="module")
def means(photos: torch.Tensor) -> dict[str, dict[int, dict[str, float]]]:
    """Mean over the photographs of every metric, per stride, for both reference encoders and noise."""
    out = {}
    with torch.no_grad():
        for name in ("edges", "regions"):
            enc = build(name).eval()
            metrics = pyramid_metrics(enc(enc.normalize(photos)), photos)
            out[name] = {s: {k: v.mean().item() for k, v in m.items()} for s, m in metrics.items()}
    g = torch.Generator().manual_seed(0)
    draws = [
        pyramid_metrics({s: torch.randn(len(photos), 64, SIZE // s, SIZE // s, generator=g) for s in (4, 8, 16, 32)}, photos)
        for _ in range(2)
    ]
    out["noise"] = {s: {k: sum(d[s][k].mean().item() for d in draws) / 2 for k in draws[0][s]} for s in draws[0]}
    return out


def test_there_are_several_sample_photographs(photos):
    assert photos.shape[0] >= 4 and photos.shape[1:] == (3, SIZE, SIZE)
    assert 0.0 <= photos.min() and photos.max() <= 1.0


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_edges_encoder_has_higher_ef_and_regions_higher_sc(means, stride):
    assert means["edges"][stride]["ef"] > means["regions"][stride]["ef"]
    assert means["regions"][stride]["sc"] > means["edges"][stride]["sc"]


@pytest.mark.parametrize("stride", [4, 8, 16, 32])
def test_white_noise_scores_lower_chance_corrected_ef_than_the_edges_encoder(means, stride):
    assert means["noise"][stride]["ef_cc"] < means["edges"][stride]["ef_cc"]
