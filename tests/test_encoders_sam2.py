"""SAM2 loads Meta's SAM2.1 checkpoint layout, keeps all four levels, and explains a missing sam2 package."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from fusionseg.encoders import WeightsError, build
from fusionseg.encoders.sam2_hiera import build_image_encoder


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A random Hiera-T image encoder saved like Meta's `sam2.1_hiera_tiny.pt`: {"model": {full model's keys}}."""
    torch.manual_seed(1)
    image_encoder = build_image_encoder("tiny").eval()
    with torch.no_grad():  # positional embeddings start at zero: make every value distinctive
        for p in image_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = {f"image_encoder.{k}": v for k, v in image_encoder.state_dict().items()}
    model |= {
        "maskmem_tpos_enc": torch.zeros(7, 1, 1, 64),
        "memory_attention.layers.0.norm1.weight": torch.ones(256),
        "sam_mask_decoder.iou_token.weight": torch.zeros(1, 256),
    }
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model}, path)
    return image_encoder, path


def test_checkpoint_gives_the_source_outputs_at_all_four_strides(
    source: tuple[torch.nn.Module, Path], caplog: pytest.LogCaptureFixture
) -> None:
    image_encoder, path = source
    with caplog.at_level(logging.INFO, logger="fusionseg.encoders.sam2_hiera"):
        enc = build("sam2", size="tiny", weights=str(path)).eval()
    assert "ignored 3 keys outside the image encoder" in caplog.text
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = enc(x)
        expected, _ = image_encoder.neck(image_encoder.trunk(x))
    assert len(expected) == 4
    for stride, level in zip((4, 8, 16, 32), expected, strict=True):
        torch.testing.assert_close(out[stride], level)


def test_a_checkpoint_of_another_size_reports_missing_keys(source: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(WeightsError, match=r"not match SAM2Encoder: \d+ missing \(e\.g\. image_encoder\.trunk\.blocks"):
        build("sam2", size="small", weights=source[1])


def test_unreadable_missing_and_unwrapped_files(tmp_path: Path) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="could not read weights"):
        build("sam2", size="tiny", weights=tmp_path / "corrupt.pt")
    with pytest.raises(WeightsError, match="weights file not found"):
        build("sam2", size="tiny", weights=tmp_path / "sam2.1_hiera_tiny.pt")
    torch.save({"image_encoder.neck.convs.0.conv.weight": torch.zeros(1)}, tmp_path / "flat.pt")
    with pytest.raises(WeightsError, match="expected the weights under key 'model'"):
        build("sam2", size="tiny", weights=tmp_path / "flat.pt")


def test_a_missing_sam2_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sam2.modeling.backbones.hieradet", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install 'fusionseg\[sam2\]'.*SAM2_BUILD_CUDA=0 pip install sam2"):
        build("sam2", size="tiny")


def test_unknown_size_lists_the_sizes() -> None:
    with pytest.raises(ValueError, match=r"\['tiny', 'small', 'base_plus', 'large'\]"):
        build("sam2", size="huge")
