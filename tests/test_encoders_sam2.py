"""SAM2 loads Meta's SAM2.1 checkpoint layout, gives the Hiera trunk's stages (default, the paper's) or the FPN
neck's levels at all four strides, declares the channels of sam2's own configs, and explains a missing sam2 package."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fusionseg.encoders import WeightsError, build
from fusionseg.encoders.sam2_hiera import TRUNK_CHANNELS, build_image_encoder, sam2_pyramid


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A random Hiera-T image encoder saved like Meta's `sam2.1_hiera_tiny.pt`: {"model": {full model's keys}}."""
    torch.manual_seed(1)
    image_encoder = build_image_encoder("tiny", "neck").eval()
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


def test_checkpoint_gives_the_trunk_stages_by_default(
    source: tuple[torch.nn.Module, Path], caplog: pytest.LogCaptureFixture
) -> None:
    image_encoder, path = source
    with caplog.at_level(logging.INFO, logger="fusionseg.encoders.sam2_hiera"):
        enc = build("sam2", size="tiny", weights=str(path)).eval()
    assert enc.pyramid == {4: 96, 8: 192, 16: 384, 32: 768}
    assert not any(name.startswith("image_encoder.neck") for name, _ in enc.named_parameters())
    assert "image_encoder.neck: 8" in caplog.text  # the neck's 4 convs (weight + bias) are left out, and said so
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = enc(x)
        expected = image_encoder.trunk(x)
    for stride, level in zip((4, 8, 16, 32), expected, strict=True):
        assert out[stride].shape[1] == enc.pyramid[stride]
        torch.testing.assert_close(out[stride], level)


def test_checkpoint_gives_the_neck_levels_with_features_neck(
    source: tuple[torch.nn.Module, Path], caplog: pytest.LogCaptureFixture
) -> None:
    image_encoder, path = source
    with caplog.at_level(logging.INFO, logger="fusionseg.encoders.sam2_hiera"):
        enc = build("sam2", size="tiny", weights=str(path), features="neck").eval()
    assert "ignored 3 keys outside the image_encoder" in caplog.text
    assert enc.pyramid == {4: 256, 8: 256, 16: 256, 32: 256}
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = enc(x)
        expected, _ = image_encoder.neck(image_encoder.trunk(x))
    assert len(expected) == 4
    for stride, level in zip((4, 8, 16, 32), expected, strict=True):
        torch.testing.assert_close(out[stride], level)


@pytest.mark.parametrize("size, config", [("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l")])
def test_declared_channels_are_those_of_sam2s_own_configs(size: str, config: str) -> None:
    import sam2

    cfg = yaml.safe_load((Path(sam2.__file__).parent / "configs" / "sam2.1" / f"sam2.1_hiera_{config}.yaml").read_text())
    encoder = cfg["model"]["image_encoder"]
    embed = encoder["trunk"]["embed_dim"]
    assert TRUNK_CHANNELS[size] == (embed, 2 * embed, 4 * embed, 8 * embed)
    assert list(TRUNK_CHANNELS[size]) == list(reversed(encoder["neck"]["backbone_channel_list"]))
    assert sam2_pyramid(size, "trunk") == dict(zip((4, 8, 16, 32), TRUNK_CHANNELS[size], strict=True))
    assert sam2_pyramid(size, "neck") == dict.fromkeys((4, 8, 16, 32), encoder["neck"]["d_model"])


def test_unknown_feature_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match=r"features must be one of \['trunk', 'neck'\]"):
        build("sam2", size="tiny", features="fpn")


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
