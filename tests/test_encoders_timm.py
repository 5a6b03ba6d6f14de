"""timm encoders load local timm state dicts (classifier dropped) and refuse models without a usable pyramid."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fusionseg.encoders import WeightsError, build


@pytest.mark.parametrize("model_name", ["test_resnet", "test_vit"])
def test_timm_checkpoint_gives_the_source_outputs(
    model_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(1)
    source = timm.create_model(model_name).eval()  # a classifier, as timm's hub files hold
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    with caplog.at_level(logging.INFO, logger="fusionseg.encoders.timm_backbone"):
        enc = build("timm", model_name=model_name, weights=str(tmp_path / "model.safetensors")).eval()
    assert "classifier keys" in caplog.text
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = enc(x)
        expected = source.forward_intermediates(x, indices=enc.take_indices, norm=enc.plain_vit,
                                                intermediates_only=True)
    torch.testing.assert_close(out[16] if enc.plain_vit else out[32], expected[-1])


def test_a_checkpoint_of_another_model_reports_missing_keys(tmp_path: Path) -> None:
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    mismatch = r"vit\.pth do not match VisionTransformer: \d+ missing \(e\.g\. .*\); \d+ unexpected \(e\.g\. cls_token"
    with pytest.raises(WeightsError, match=mismatch):
        build("timm", model_name="test_vit2", weights=tmp_path / "vit.pth")


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(WeightsError, match="could not read weights"):
        build("timm", model_name="test_resnet", weights=tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="weights file not found"):
        build("timm", model_name="test_resnet", weights=tmp_path / "absent.pth")


def test_models_without_a_usable_pyramid_are_explained() -> None:
    with pytest.raises(ValueError, match=r"strides \[14\].*plain ViT with patch 16"):
        build("timm", model_name="vit_small_patch14_dinov2")
    with pytest.raises(ValueError, match="timm has no model 'resnet_does_not_exist'"):
        build("timm", model_name="resnet_does_not_exist")
