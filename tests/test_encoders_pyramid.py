"""ViTDet's simple feature pyramid: untrained, every level is a parameter-free resampling of the ViT map."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from fusionseg.encoders.simple_pyramid import SimpleFeaturePyramid, vitdet_channels


def group_mean(x: torch.Tensor, groups_of: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c // groups_of, groups_of, h, w).mean(dim=2)


def test_channels_follow_vitdet() -> None:
    assert vitdet_channels(768) == {4: 192, 8: 384, 16: 768, 32: 768}
    assert SimpleFeaturePyramid(384).channels == {4: 96, 8: 192, 16: 384, 32: 384}


@given(dim=st.sampled_from([4, 8, 12, 24]), h=st.integers(1, 6), w=st.integers(1, 6), batch=st.integers(1, 2))
def test_untrained_levels_are_resamplings_of_the_input(dim: int, h: int, w: int, batch: int) -> None:
    x = torch.randn(batch, dim, 2 * h, 2 * w)
    with torch.no_grad():
        out = SimpleFeaturePyramid(dim)(x)
    nearest = lambda t, f: F.interpolate(t, scale_factor=f, mode="nearest")  # noqa: E731
    torch.testing.assert_close(out[16], x)
    torch.testing.assert_close(out[32], F.max_pool2d(x, 2))
    torch.testing.assert_close(out[8], nearest(group_mean(x, 2), 2))
    torch.testing.assert_close(out[4], nearest(group_mean(x, 4), 4))


def test_custom_channels_also_start_as_resamplings() -> None:
    x = torch.randn(1, 16, 4, 6)
    pyramid = SimpleFeaturePyramid(16, channels={4: 2, 8: 4, 16: 8, 32: 16})
    with torch.no_grad():
        out = pyramid(x)
    assert {s: f.shape[1] for s, f in out.items()} == {4: 2, 8: 4, 16: 8, 32: 16}
    torch.testing.assert_close(out[16], group_mean(x, 2))
    torch.testing.assert_close(out[4], F.interpolate(group_mean(x, 8), scale_factor=4.0, mode="nearest"))


def test_the_pyramid_is_trainable() -> None:
    pyramid = SimpleFeaturePyramid(8)
    sum(f.sum() for f in pyramid(torch.randn(1, 8, 4, 4)).values()).backward()
    assert all(p.grad is not None for p in pyramid.parameters())


def test_channels_that_cannot_average_groups_are_rejected() -> None:
    with pytest.raises(ValueError, match="divides 16"):
        SimpleFeaturePyramid(16, channels={4: 3, 8: 8, 16: 16, 32: 16})
    with pytest.raises(ValueError, match=r"strides \[4, 8, 16, 32\]"):
        SimpleFeaturePyramid(16, channels={8: 8, 16: 16, 32: 16})
