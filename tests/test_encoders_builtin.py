"""Every built-in encoder returns exactly its declared pyramid, for any input size, and freezing sticks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusionseg.encoders import Encoder, EncoderSpec, build

# The smallest configuration of each built-in: timm's tiny test models (one hierarchical, one
# plain ViT, one NHWC Swin shrunk by model_kwargs), DINOv3 ViT-S and SAM2.1 Hiera-T.
CONFIGS = {
    "timm:model_name=test_resnet": {4: 32, 8: 48, 16: 192, 32: 96},
    "timm:model_name=test_vit": {4: 16, 8: 32, 16: 64, 32: 64},
    "timm:model_name=swin_tiny_patch4_window7_224,model_kwargs={embed_dim: 16, depths: [1, 1, 1, 1], "
    "num_heads: [1, 1, 1, 1]}": {4: 16, 8: 32, 16: 64, 32: 128},
    "dinov3:size=small": {4: 96, 8: 192, 16: 384, 32: 384},
    "sam2:size=tiny": {4: 96, 8: 192, 16: 384, 32: 768},  # the Hiera trunk (default)
    "sam2:size=tiny,features=neck": {4: 256, 8: 256, 16: 256, 32: 256},
}
SIZES = [(64, 64), (50, 70)]  # the second is not a multiple of 32


@pytest.fixture(scope="module", params=list(CONFIGS))
def configured(request: pytest.FixtureRequest) -> tuple[str, Encoder]:
    torch.manual_seed(0)
    return request.param, EncoderSpec.parse(request.param).build().eval()


def test_returns_exactly_the_declared_pyramid(configured: tuple[str, Encoder]) -> None:
    spec, enc = configured
    assert enc.pyramid == CONFIGS[spec]
    for h, w in SIZES:
        with torch.no_grad():
            out = enc(enc.normalize(torch.rand(2, 3, h, w)))
        assert {s: tuple(f.shape) for s, f in out.items()} == {
            s: (2, c, math.ceil(h / s), math.ceil(w / s)) for s, c in CONFIGS[spec].items()
        }
        assert all(torch.isfinite(f).all() for f in out.values())


def test_frozen_encoder_stays_frozen_through_a_parent_train(configured: tuple[str, Encoder]) -> None:
    _, enc = configured
    enc.freeze()
    parent = nn.ModuleDict({"aux": enc, "head": nn.Conv2d(1, 1, 1)}).train()
    assert parent["head"].training
    assert not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc(torch.rand(1, 3, 32, 32))[4].requires_grad


@pytest.mark.parametrize("spec", ["dinov3:size=small", "timm:model_name=test_vit"])
def test_untrained_vit_pyramids_carry_the_stride_16_features(spec: str) -> None:
    enc = EncoderSpec.parse(spec).build().eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 64, 96))
    f16 = out[16]
    b, c, h, w = f16.shape
    group_mean = lambda g: f16.reshape(b, c // g, g, h, w).mean(2)  # noqa: E731
    torch.testing.assert_close(out[8], F.interpolate(group_mean(2), scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(out[4], F.interpolate(group_mean(4), scale_factor=4.0, mode="nearest"))
    torch.testing.assert_close(out[32], F.max_pool2d(f16, 2))


def test_timm_mean_and_std_come_from_the_pretrained_config() -> None:
    assert build("timm", model_name="test_resnet").mean == (0.5, 0.5, 0.5)
    with torch.device("meta"):
        assert build("timm", model_name="resnet18").std == (0.229, 0.224, 0.225)


def test_default_configurations_build_on_the_meta_device() -> None:
    with torch.device("meta"):
        dinov3, timm = build("dinov3"), build("timm")
    assert dinov3.pyramid == {4: 192, 8: 384, 16: 768, 32: 768} and dinov3.size_divisor == 32
    assert timm.pyramid == {4: 256, 8: 512, 16: 1024, 32: 2048}
