"""`align: sample` reproduces the released code's channel selection and fill, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusionseg.encoders import build
from fusionseg.fusion import MasterAuxPyramid, SampleAlign


def released_align(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """A short re-statement of `align_channels_and_spatial` in gyc-code/metric-guided-fusion,
    mask2former/vlm_fusion/create_fusion_model_1.py (called by `align_and_replace`)."""
    src = src.type_as(tgt)
    n, c_tgt, h, w = tgt.shape
    src = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False)
    c_src = src.shape[1]
    if c_src >= c_tgt:
        return src[:, (torch.arange(c_tgt) * (c_src / c_tgt)).floor().long()]  # float32 arithmetic, as released
    return torch.cat([src, src.mean(dim=1, keepdim=True).repeat(1, c_tgt - c_src, 1, 1)], dim=1)


@pytest.mark.parametrize(
    "aux, master",
    [
        (896, 768),  # SAM2-B+ trunk stride 32 into DINOv3-B: float32 picks 16 other channels than exact arithmetic
        (448, 384),
        (1152, 768),
        (112, 768),  # SAM2-B+ trunk stride 4: fill with the channel mean
        (256, 256),
        (30, 22),
    ],
)
def test_sample_align_equals_the_released_formula(aux: int, master: int) -> None:
    g = torch.Generator().manual_seed(aux * 7 + master)
    src = torch.randn(2, aux, 5, 9, generator=g)
    tgt = torch.randn(2, master, 10, 17, generator=g)
    ours = SampleAlign(aux, master)(F.interpolate(src, size=tgt.shape[-2:], mode="bilinear", align_corners=False))
    assert torch.equal(ours, released_align(src, tgt))


def test_the_fused_pyramid_injects_the_released_alignment() -> None:
    master, aux = build("regions", channels=48), build("edges", channels=40)
    pyramid = MasterAuxPyramid(master, aux, strides=(8, 32), align="sample")
    parts = pyramid.parts(torch.rand(2, 3, 64, 96))
    for s in (8, 32):
        assert torch.equal(parts.fused[s], released_align(parts.aux[s], parts.master[s]))
    assert not any(p.requires_grad for p in pyramid.align.parameters())  # "no new modules": nothing to train
