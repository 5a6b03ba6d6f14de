"""FCD, the released code's stride score: equal to the released function on recorded inputs, in range, degenerate maps 0.

The expected numbers were produced by running the released function itself
(gyc-code/metric-guided-fusion, mask2former/vfm_metric_batch_fastter.py at commit d37f2c94,
`compute_FCD_for_stages_fast({"s": feat}, images)["s"]`, torch 2.14 on CPU; its one `.cuda()` call
removed) on exactly the inputs `make_case` builds below. "unrounded" is the value of its
`compute_FCD_from_cached` before the final `round(decimals=2)`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusionseg.metrics import FCD_KEYS, fcd, fcd_parts

# name: (released FCD per image, released FCD before rounding)
RELEASED = {
    "noise": ([42.07, 23.85], [42.067822, 23.847038]),
    "edges": ([10.55, 10.96], [10.549441, 10.962088]),
    "smooth": ([2.53, 0.0, 23.23], [2.531319, 0.0, 23.231054]),
    "tiny": ([0.0, 0.0, 47.72], [0.0, 0.0, 47.716343]),
    "wide": ([16.19, 2.04], [16.193817, 2.039517]),
}


def scene(b: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Images of a few flat rectangles on a gradient, colours from g: (b, 3, h, w) in [0, 1]."""
    ys = torch.linspace(0, 1, h).view(h, 1)
    xs = torch.linspace(0, 1, w).view(1, w)
    out = []
    for _ in range(b):
        img = torch.stack([0.2 + 0.3 * xs * ys.new_ones(h, 1), 0.3 + 0.2 * ys * xs.new_ones(1, w), 0.4 * torch.ones(h, w)])
        for _ in range(4):
            y0, x0 = (torch.rand(2, generator=g) * torch.tensor([h * 0.7, w * 0.7])).long().tolist()
            dy, dx = (8 + torch.rand(2, generator=g) * torch.tensor([h * 0.4, w * 0.4])).long().tolist()
            img[:, y0 : y0 + dy, x0 : x0 + dx] = torch.rand(3, 1, 1, generator=g)
        out.append(img)
    return torch.stack(out).clamp(0, 1)


def make_case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, images) of one recorded case."""
    if name == "noise":
        g = torch.Generator().manual_seed(0)
        return torch.randn(2, 16, 32, 32, generator=g), torch.rand(2, 3, 128, 128, generator=g)
    if name == "edges":  # features = the image's blurred, shifted luminance edges: FCD well above 0
        g = torch.Generator().manual_seed(1)
        images = scene(2, 96, 160, g)
        luma = F.interpolate(images, size=(24, 40), mode="bilinear", align_corners=False).mean(1, keepdim=True)
        gy, gx = torch.gradient(luma[:, 0], dim=(1, 2))
        edge = (gx.square() + gy.square()).sqrt()[:, None]
        chans = [torch.roll(F.avg_pool2d(edge, 3, 1, 1), shifts=(s % 3, s // 3), dims=(2, 3)) for s in range(9)]
        feat = torch.cat(chans, 1) + 0.01 * torch.randn(2, 9, 24, 40, generator=g)
        return feat, images
    if name == "smooth":  # low-frequency features (long correlation length) over scenes
        g = torch.Generator().manual_seed(2)
        low = F.interpolate(torch.randn(3, 64, 4, 4, generator=g), size=(16, 16), mode="bilinear", align_corners=False)
        return low + 0.05 * torch.randn(3, 64, 16, 16, generator=g), scene(3, 64, 64, g)
    if name == "tiny":
        g = torch.Generator().manual_seed(3)
        return torch.randn(3, 4, 5, 7, generator=g), torch.rand(3, 3, 20, 28, generator=g)
    if name == "wide":  # many channels, non-square map, image not a multiple of the map
        g = torch.Generator().manual_seed(4)
        return 3 * torch.randn(2, 256, 12, 20, generator=g) + 1, scene(2, 100, 170, g)
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_fcd_equals_the_released_function(name: str) -> None:
    feat, images = make_case(name)
    rounded, unrounded = RELEASED[name]
    torch.testing.assert_close(fcd(feat, images), torch.tensor(rounded), atol=1e-4, rtol=0)
    torch.testing.assert_close(fcd(feat, images, decimals=None), torch.tensor(unrounded), atol=1e-4, rtol=0)


def test_fcd_is_the_product_of_its_parts_in_range() -> None:
    feat, images = make_case("wide")
    parts = fcd_parts(feat, images, decimals=None)
    assert set(parts) == set(FCD_KEYS)
    for key in FCD_KEYS[1:]:
        assert bool(((parts[key] >= 0) & (parts[key] <= 1)).all()), key
    product = 100 * parts["fcd_near"] * (1 - parts["fcd_far"]) * parts["fcd_hf"] * parts["fcd_fine"]
    torch.testing.assert_close(parts["fcd"], product)


def test_non_finite_images_and_maps_without_interior_score_zero() -> None:
    feat, images = make_case("noise")
    feat[1, 0, 3, 3] = float("nan")
    scores = fcd(feat, images)
    assert scores[1] == 0 and scores[0] == 42.07  # the finite image keeps its released score
    assert fcd(torch.randn(2, 8, 2, 9), torch.rand(2, 3, 8, 36)).tolist() == [0.0, 0.0]


def test_images_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match=r"images must be \(2, 3, H, W\)"):
        fcd(torch.randn(2, 8, 8, 8), torch.rand(3, 3, 32, 32))


def test_fcd_rewards_energy_beside_the_edges_where_ef_cc_rewards_it_on_them() -> None:
    """docs/metrics.md, "Three EF variants": on real photographs, features that are the image's own edges beat
    white noise under ef_cc, and lose to it under fcd (whose gain is the ring 2-4 px off the edges)."""
    from pathlib import Path

    from fusionseg.data.io import read_image
    from fusionseg.metrics import edge_fidelity

    samples = Path(__file__).parents[1] / "fusionseg" / "assets" / "samples"
    images = torch.stack([
        F.interpolate(read_image(samples / f"{name}.jpg")[None].float() / 255, size=(256, 256), mode="bilinear",
                      antialias=True)[0]
        for name in ("astronaut", "coffee")
    ])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 32, 32, 32, generator=g)
    luma = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True).mean(1)
    gy, gx = torch.gradient(luma, dim=(1, 2))
    edges = F.avg_pool2d((gx.square() + gy.square()).sqrt()[:, None], 3, 1, 1).repeat(1, 8, 1, 1)
    edges = edges + 0.01 * torch.randn(edges.shape, generator=g)
    assert bool((edge_fidelity(edges, images)["ef_cc"] > edge_fidelity(noise, images)["ef_cc"]).all())
    assert bool((fcd(noise, images) > fcd(edges, images)).all())
