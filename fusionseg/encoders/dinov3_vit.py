"""DINOv3 ViT-S/B/L (patch 16) with ViTDet's simple feature pyramid, built on transformers' `DINOv3ViTModel`.

Weights, from local files only:

* a file in Meta's layout, as released (`dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth`): keys
  are converted to transformers' names the way transformers' `convert_dinov3_vit_to_hf.py` does
  (fused `qkv` split into q/k/v, the masked key bias dropped, `ls1.gamma` -> `layer_scale1.lambda1`, ...);
* a file already in transformers' layout (e.g. a `model.safetensors`);
* a transformers model directory (`config.json` + `model.safetensors`), read with
  `DINOv3ViTModel.from_pretrained(dir, local_files_only=True)`.

The pyramid is built from the last layer's normalized patch tokens (stride 16).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from fusionseg.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder
from fusionseg.encoders.simple_pyramid import SimpleFeaturePyramid
from fusionseg.encoders.weights import WeightsError, load_matching, read_state_dict

log = logging.getLogger(__name__)

# Meta's ViT-S/B/L (lvd1689m), as in transformers' conversion script. Everything else (RoPE base 100,
# layer norm eps 1e-5, q/v biases without a k bias, layerscale) is DINOv3ViTConfig's default.
SIZES: dict[str, dict[str, object]] = {
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
}
COMMON = dict(patch_size=16, num_register_tokens=4, use_gated_mlp=False, hidden_act="gelu", proj_bias=True)

# Config fields that change the network (or its outputs), compared when loading a transformers directory.
ARCHITECTURE = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_channels",
    "num_register_tokens", "use_gated_mlp", "hidden_act", "query_bias", "key_bias", "value_bias", "proj_bias",
    "mlp_bias", "layer_norm_eps", "rope_theta",
)

# Meta name -> transformers name, for per-block keys (`blocks.N.` prefix removed).
BLOCK_RENAMES = {
    "norm1.": "norm1.",
    "norm2.": "norm2.",
    "attn.proj.": "attention.o_proj.",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.": "mlp.up_proj.",
    "mlp.fc2.": "mlp.down_proj.",
}
TOP_RENAMES = {
    "cls_token": "embeddings.cls_token",
    "storage_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
# Keys of Meta's checkpoints that DINOv3ViTModel has no place for and does not need.
META_UNUSED = ("local_cls_norm.",)
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def dinov3_config(size: str, drop_path_rate: float = 0.0) -> DINOv3ViTConfig:
    """transformers' config of Meta's DINOv3 ViT of that size."""
    if size not in SIZES:
        raise ValueError(f"DINOv3 size must be one of {sorted(SIZES)}, got {size!r}")
    return DINOv3ViTConfig(**COMMON, **SIZES[size], drop_path_rate=drop_path_rate)


def layers_prefix(model: DINOv3ViTModel) -> str:
    """Where the transformer layers live in `model`'s state dict ("model.layer." in transformers 5)."""
    return next(k for k in model.state_dict() if k.endswith("0.norm1.weight"))[: -len("0.norm1.weight")]


def convert_meta_state_dict(state: dict[str, Tensor], model: DINOv3ViTModel) -> dict[str, Tensor]:
    """Meta's DINOv3 keys -> `model`'s keys, as transformers' conversion script maps them.

    The fused `attn.qkv` is split into q/k/v projections; its bias is multiplied by Meta's
    `bias_mask` first, and the key bias it masks out must be zero (DINOv3ViTModel has none).
    `rope_embed.periods` is checked against the model's RoPE frequencies, not loaded. Keys this
    mapping does not know keep their name, so `load_matching` reports them as unexpected.
    """
    layers = layers_prefix(model)
    out: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        block = BLOCK_KEY.fullmatch(key)
        if key in TOP_RENAMES:
            out[TOP_RENAMES[key]] = value
        elif key == "mask_token":
            out["embeddings.mask_token"] = value.unsqueeze(1) if value.dim() == 2 else value  # Meta: (1, D)
        elif key == "rope_embed.periods":
            _check_rope_periods(value, model)
        elif key.startswith(META_UNUSED) or (block and block.group(2) == "attn.qkv.bias_mask"):
            unused.append(key)
        elif block and block.group(2).startswith("attn.qkv."):
            prefix = f"{layers}{block.group(1)}.attention."
            out.update(_split_qkv(key, value, state, prefix))
        elif block:
            rest = block.group(2)
            for meta, ours in BLOCK_RENAMES.items():
                if rest.startswith(meta):
                    out[f"{layers}{block.group(1)}.{ours}{rest[len(meta):]}"] = value
                    break
            else:
                out[key] = value
        else:
            out[key] = value
    if unused:
        log.info("DINOv3: %d checkpoint entries used only for checks or by Meta's training code: %s", len(unused),
                 ", ".join(unused[:4]) + (" ..." if len(unused) > 4 else ""))
    return out


def _split_qkv(key: str, value: Tensor, state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    kind = key.rsplit(".", 1)[1]  # weight | bias
    if kind == "bias":
        mask = state.get(key + "_mask")
        value = value * mask.to(value.dtype) if mask is not None else value
    q, k, v = value.chunk(3, dim=0)
    if kind == "weight":
        return {f"{prefix}q_proj.weight": q, f"{prefix}k_proj.weight": k, f"{prefix}v_proj.weight": v}
    if k.abs().max() > 0:
        raise WeightsError(
            f"{key}: the key bias is not masked to zero (no bias_mask, or a mask that keeps it); "
            f"DINOv3ViTModel has no key bias, so these weights would not give the checkpoint's outputs"
        )
    return {f"{prefix}q_proj.bias": q, f"{prefix}v_proj.bias": v}


def _check_rope_periods(periods: Tensor, model: DINOv3ViTModel) -> None:
    expected = 1.0 / model.rope_embeddings.inv_freq.float()
    if periods.shape != expected.shape or not torch.allclose(periods.float(), expected, rtol=1e-4):
        raise WeightsError(
            f"rope_embed.periods of the checkpoint ({tuple(periods.shape)}) differ from DINOv3ViTConfig's RoPE "
            f"(base {model.config.rope_theta}, {tuple(expected.shape)}): "
            f"the checkpoint is not a DINOv3 ViT of this size"
        )


class DINOv3Encoder(Encoder):
    """DINOv3 ViT (`size` small | base | large, patch 16) with a `{4, 8, 16, 32}` simple feature pyramid.

    Pyramid channels are `dim/4, dim/2, dim, dim` (dim 384 / 768 / 1024). `weights` is a Meta
    `.pth` file, a transformers-layout file, or a transformers model directory; `None` is random
    initialization. Inputs are padded to multiples of 32 so that stride 32 is exact.
    """

    weight_formats = (
        "Meta DINOv3 checkpoint file (dinov3_vit{s,b,l}16_pretrain_*.pth)",
        "transformers DINOv3ViTModel state dict file (.safetensors / .bin)",
        "transformers DINOv3ViTModel directory (config.json + model.safetensors)",
    )

    def __init__(
        self,
        size: Literal["small", "base", "large"] = "base",
        weights: str | Path | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        config = dinov3_config(size, drop_path_rate)
        dim = config.hidden_size
        neck = SimpleFeaturePyramid(dim)
        super().__init__(pyramid=neck.channels, mean=IMAGENET_MEAN, std=IMAGENET_STD, size_divisor=32)
        self.size = size
        self.num_prefix_tokens = 1 + config.num_register_tokens
        path = Path(weights).expanduser() if weights is not None else None
        if path is not None and path.is_dir():
            self.backbone = self._from_directory(path, size, drop_path_rate)
        else:
            self.backbone = DINOv3ViTModel(config)
            if path is not None:
                self._load_file(path)
        self.neck = neck

    def _load_file(self, path: Path) -> None:
        state = read_state_dict(path)
        if "cls_token" in state:  # Meta's layout
            state = convert_meta_state_dict(state, self.backbone)
        elif "embeddings.cls_token" not in state:
            raise WeightsError(
                f"{path} holds neither Meta's DINOv3 keys (cls_token, storage_tokens, blocks.0.attn.qkv.weight, ...) "
                f"nor transformers' (embeddings.cls_token, model.layer.0.attention.q_proj.weight, ...); "
                f"first keys: {sorted(state)[:5]}"
            )
        # Files saved by older transformers versions keep the layers at "layer.N" (no "model." prefix).
        layers = layers_prefix(self.backbone)
        load_matching(self.backbone, state, source=str(path),
                      rename=lambda k: layers + k[len("layer."):] if k.startswith("layer.") else k)

    @staticmethod
    def _from_directory(path: Path, size: str, drop_path_rate: float) -> DINOv3ViTModel:
        if not (path / "config.json").is_file():
            raise WeightsError(f"{path} is a directory without config.json; expected a transformers DINOv3ViTModel "
                               f"directory (config.json + model.safetensors) or a checkpoint file")
        try:
            config = DINOv3ViTConfig.from_pretrained(path, local_files_only=True)
        except Exception as err:
            raise WeightsError(f"could not read the DINOv3 config in {path}: {type(err).__name__}: {err}") from err
        # The whole architecture must match, so that rebuilding from `size` alone (e.g. when a training
        # checkpoint provides the weights) gives the same network.
        ours = dinov3_config(size)
        differ = {k: (getattr(config, k, None), getattr(ours, k)) for k in ARCHITECTURE
                  if getattr(config, k, None) != getattr(ours, k)}
        if differ:
            raise WeightsError(
                f"{path} holds a different DINOv3 than size={size!r}: "
                + ", ".join(f"{k}={got} (expected {exp})" for k, (got, exp) in differ.items())
            )
        try:
            model, info = DINOv3ViTModel.from_pretrained(
                path, local_files_only=True, output_loading_info=True, dtype=torch.float32,
                drop_path_rate=drop_path_rate,
            )
        except Exception as err:
            raise WeightsError(f"could not load a DINOv3ViTModel from {path}: {type(err).__name__}: {err}") from err
        problems = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if any(problems.values()):
            raise WeightsError(
                f"weights from {path} do not match DINOv3ViTModel: "
                + "; ".join(f"{len(v)} {k.replace('_keys', '')} (e.g. {', '.join(map(str, v[:5]))})"
                            for k, v in problems.items() if v)
            )
        return model

    def forward_features(self, x: Tensor) -> dict[int, Tensor]:
        tokens = self.backbone(pixel_values=x).last_hidden_state[:, self.num_prefix_tokens :]
        b, _, h, w = x.shape
        fmap = tokens.transpose(1, 2).reshape(b, tokens.shape[-1], h // 16, w // 16)
        return self.neck(fmap)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "size": self.size}
