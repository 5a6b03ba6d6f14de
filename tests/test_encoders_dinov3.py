"""DINOv3 loads Meta's checkpoint layout and transformers' directories, and says clearly what does not match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from fusionseg.encoders import WeightsError, build
from fusionseg.encoders.dinov3_vit import dinov3_config, layers_prefix


def to_meta_layout(model: DINOv3ViTModel) -> dict[str, torch.Tensor]:
    """The state dict of Meta's `dinov3_vit*16_pretrain_*.pth` files, from a transformers model.

    Meta's keys: cls_token, storage_tokens, mask_token (1, D), patch_embed.proj.*, rope_embed.periods,
    blocks.N.{norm1, attn.qkv (+ bias_mask), attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm.*
    """
    sd, layers, dim = model.state_dict(), layers_prefix(model), model.config.hidden_size
    meta = {
        "cls_token": sd["embeddings.cls_token"],
        "storage_tokens": sd["embeddings.register_tokens"],
        "mask_token": sd["embeddings.mask_token"].reshape(1, dim),
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"],
        "rope_embed.periods": 1.0 / model.rope_embeddings.inv_freq,
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    for i in range(model.config.num_hidden_layers):
        ours, theirs = f"{layers}{i}.", f"blocks.{i}."
        att = ours + "attention."
        bias_mask = torch.ones(3 * dim)
        bias_mask[dim : 2 * dim] = 0  # Meta's LinearKMaskedBias: the key bias is masked out
        meta |= {
            theirs + "attn.qkv.weight": torch.cat([sd[att + f"{p}_proj.weight"] for p in "qkv"]),
            theirs + "attn.qkv.bias": torch.cat([sd[att + "q_proj.bias"], torch.randn(dim), sd[att + "v_proj.bias"]]),
            theirs + "attn.qkv.bias_mask": bias_mask,
            theirs + "attn.proj.weight": sd[att + "o_proj.weight"],
            theirs + "attn.proj.bias": sd[att + "o_proj.bias"],
            theirs + "ls1.gamma": sd[ours + "layer_scale1.lambda1"],
            theirs + "ls2.gamma": sd[ours + "layer_scale2.lambda1"],
        }
        for name in ("norm1", "norm2"):
            meta |= {theirs + f"{name}.{p}": sd[ours + f"{name}.{p}"] for p in ("weight", "bias")}
        for meta_name, hf_name in (("fc1", "up_proj"), ("fc2", "down_proj")):
            meta |= {theirs + f"mlp.{meta_name}.{p}": sd[ours + f"mlp.{hf_name}.{p}"] for p in ("weight", "bias")}
    return meta


def perturbed(model: DINOv3ViTModel) -> DINOv3ViTModel:
    with torch.no_grad():  # layer scales start at 1 and biases at 0: make every value distinctive
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[DINOv3ViTModel, Path]:
    torch.manual_seed(1)
    model = perturbed(DINOv3ViTModel(dinov3_config("small")))
    folder = tmp_path_factory.mktemp("dinov3")
    torch.save(to_meta_layout(model), folder / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth")
    model.save_pretrained(folder / "hf")
    return model, folder


def patch_tokens(model: DINOv3ViTModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        tokens = model(pixel_values=x).last_hidden_state[:, 1 + model.config.num_register_tokens :]
    return tokens.transpose(1, 2).reshape(x.shape[0], -1, x.shape[2] // 16, x.shape[3] // 16)


@pytest.mark.parametrize("layout", ["dinov3_vits16_pretrain_lvd1689m-08c60483.pth", "hf", "hf/model.safetensors"])
def test_checkpoints_give_the_source_outputs(source: tuple[DINOv3ViTModel, Path], layout: str) -> None:
    model, folder = source
    enc = build("dinov3", size="small", weights=str(folder / layout)).eval()
    assert set(enc.backbone.state_dict()) == set(model.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = enc(x)
    torch.testing.assert_close(out[16], patch_tokens(model, x))


def test_a_key_bias_that_is_not_masked_is_refused(source: tuple[DINOv3ViTModel, Path], tmp_path: Path) -> None:
    state = torch.load(source[1] / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", weights_only=True)
    del state["blocks.3.attn.qkv.bias_mask"]  # the random key bias in the file now counts
    torch.save(state, tmp_path / "unmasked.pth")
    with pytest.raises(WeightsError, match=r"blocks\.3\.attn\.qkv\.bias: the key bias is not masked"):
        build("dinov3", size="small", weights=tmp_path / "unmasked.pth")


def test_a_smaller_checkpoint_reports_counts_of_missing_and_mis_shaped_keys(tmp_path: Path) -> None:
    tiny = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=1, num_register_tokens=4))
    torch.save(to_meta_layout(tiny), tmp_path / "tiny.pth")
    with pytest.raises(WeightsError, match=r"tiny\.pth do not match DINOv3ViTModel: 170 missing .*; 41 mis-shaped"):
        build("dinov3", size="small", weights=tmp_path / "tiny.pth")


def test_a_directory_of_another_size_is_refused(source: tuple[DINOv3ViTModel, Path]) -> None:
    with pytest.raises(WeightsError, match=r"different DINOv3 than size='large': hidden_size=384 \(expected 1024\)"):
        build("dinov3", size="large", weights=source[1] / "hf")


def test_unreadable_missing_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not read weights"):
        build("dinov3", size="small", weights=tmp_path / "corrupt.pth")
    with pytest.raises(WeightsError, match="weights file not found"):
        build("dinov3", size="small", weights=tmp_path / "absent.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pth")
    with pytest.raises(WeightsError, match="neither Meta's DINOv3 keys"):
        build("dinov3", size="small", weights=tmp_path / "foreign.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(WeightsError, match="without config.json"):
        build("dinov3", size="small", weights=tmp_path / "empty_dir")
