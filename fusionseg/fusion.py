"""The master-auxiliary pyramid: a trainable master encoder with a frozen auxiliary injected at chosen strides.

`MasterAuxPyramid(master, aux, strides=(16,))` runs both encoders on the same `[0, 1]` images
(each with its own normalization), aligns the auxiliary's features at the injection strides
to the master's channels and spatial size, and either replaces the master's features there
(`mode="replace"`, the paper) or adds them (`mode="add"`). Every other stride is the master's.
Without an auxiliary it is the plain single-encoder baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionseg.encoders.base import Encoder

ALIGNS = ("project", "sample")
MODES = ("replace", "add")


def sample_channel_indices(aux_channels: int, master_channels: int) -> Tensor:
    """Evenly spaced aux channels for the master's width: `floor(i * C_aux / C_master)`, `i < C_master`.

    Computed in float32 as the released code's `align_channels_and_spatial` does
    (`(torch.arange(C_tgt) * step).floor()`): exact arithmetic picks other channels for some
    widths (16 of 768 for SAM2-B+'s 896 stride-32 channels into a 768-channel master).
    Only for `aux_channels >= master_channels`; with fewer aux channels every aux channel is
    kept and the rest is filled (see `SampleAlign`).
    """
    if aux_channels < master_channels:
        raise ValueError(f"cannot select {master_channels} channels out of {aux_channels}")
    step = aux_channels / master_channels
    return (torch.arange(master_channels, dtype=torch.float32) * step).floor().long()


class SampleAlign(nn.Module):
    """Parameter-free channel alignment, as in the paper's released code (`align: sample`).

    The released `align_channels_and_spatial` (mask2former/vlm_fusion/create_fusion_model_1.py,
    called by `align_and_replace`): after the bilinear resize that `MasterAuxPyramid.inject`
    does, more aux channels than master channels keep the evenly spaced channels of
    `sample_channel_indices`; fewer keep all aux channels and fill the missing ones with the
    aux's per-pixel channel mean (which keeps the filled channels on the aux's scale).
    """

    def __init__(self, aux_channels: int, master_channels: int) -> None:
        super().__init__()
        self.aux_channels, self.master_channels = aux_channels, master_channels
        if aux_channels >= master_channels:
            self.register_buffer("index", sample_channel_indices(aux_channels, master_channels), persistent=False)
        else:
            self.index = None

    def forward(self, x: Tensor) -> Tensor:
        if self.index is not None:
            return x.index_select(1, self.index)
        filler = x.mean(dim=1, keepdim=True).expand(-1, self.master_channels - self.aux_channels, -1, -1)
        return torch.cat([x, filler], dim=1)


def project_align(aux_channels: int, master_channels: int) -> nn.Sequential:
    """Learned channel alignment: a 1x1 convolution and GroupNorm (32 groups, or fewer for narrow maps)."""
    return nn.Sequential(
        nn.Conv2d(aux_channels, master_channels, kernel_size=1, bias=False),
        nn.GroupNorm(math.gcd(32, master_channels), master_channels),
    )


@dataclass
class PyramidParts:
    """The three pyramids of one forward pass, `{stride: (B, C, h, w)}` each; `aux` is None without one."""

    master: dict[int, Tensor]
    aux: dict[int, Tensor] | None
    fused: dict[int, Tensor]


class MasterAuxPyramid(nn.Module):
    """Fused feature pyramid of a trainable master and a frozen auxiliary encoder.

    Args:
        master: the encoder whose pyramid (strides and channels) the output keeps.
        aux: the auxiliary encoder, frozen here (`aux.freeze()`); None for the single-encoder baseline.
        strides: where the aux's features are injected; each must be in both pyramids.
        align: `"project"` (1x1 conv + GroupNorm, learned) or `"sample"` (parameter-free channel selection).
        mode: `"replace"` (the aux's aligned features take the master's place) or `"add"` (master + aligned aux).

    `forward(images)` takes `(B, 3, H, W)` images in `[0, 1]` and returns `{stride: (B, C_master[s],
    ceil(H / s), ceil(W / s))}` for every master stride. The aux runs in eval mode without
    gradients (bf16 autocast on a GPU), so it keeps no activations for backward and never trains.
    A frozen master (`master.freeze()`) also runs without gradients.
    """

    def __init__(
        self,
        master: Encoder,
        aux: Encoder | None = None,
        strides: Sequence[int] = (),
        align: str = "project",
        mode: str = "replace",
    ) -> None:
        super().__init__()
        if align not in ALIGNS:
            raise ValueError(f"align={align!r}; expected one of {ALIGNS}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        strides = tuple(sorted(int(s) for s in strides))
        if aux is None and strides:
            raise ValueError(f"injection strides {list(strides)} need an auxiliary encoder (aux is None)")
        if aux is not None and not strides:
            raise ValueError("an auxiliary encoder needs at least one injection stride (strides is empty)")
        if aux is not None:
            bad = [s for s in strides if s not in master.pyramid or s not in aux.pyramid]
            if bad:
                raise ValueError(
                    f"injection strides {bad} are not in both pyramids: master {type(master).__name__} has "
                    f"{sorted(master.pyramid)}, aux {type(aux).__name__} has {sorted(aux.pyramid)}"
                )
            aux.freeze()
        self.master = master
        self.aux = aux
        self.strides = strides
        self.align_kind = align
        self.mode = mode
        make = project_align if align == "project" else SampleAlign
        self.align = nn.ModuleDict(
            {str(s): make(aux.pyramid[s], master.pyramid[s]) for s in strides} if aux is not None else {}
        )

    @property
    def pyramid(self) -> dict[int, int]:
        """Strides and channels of the fused pyramid: the master's."""
        return dict(self.master.pyramid)

    def run_master(self, images: Tensor) -> dict[int, Tensor]:
        x = self.master.normalize(images)
        if self.master.frozen:
            with torch.no_grad():
                return self.master(x)
        return self.master(x)

    @torch.no_grad()
    def run_aux(self, images: Tensor) -> dict[int, Tensor]:
        """The aux's pyramid, without gradients; under bf16 autocast when the images are on a GPU."""
        if self.aux is None:
            raise RuntimeError("this pyramid has no auxiliary encoder")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.is_cuda):
            return self.aux(self.aux.normalize(images))

    def inject(self, master_feats: dict[int, Tensor], aux_feats: dict[int, Tensor]) -> dict[int, Tensor]:
        """The fused pyramid from already computed master and aux pyramids."""
        fused = dict(master_feats)
        for s in self.strides:
            target = master_feats[s]
            a = aux_feats[s].to(target.dtype)
            if a.shape[-2:] != target.shape[-2:]:
                a = F.interpolate(a, size=target.shape[-2:], mode="bilinear", align_corners=False)
            a = self.align[str(s)](a)
            fused[s] = a if self.mode == "replace" else target + a
        return fused

    def parts(self, images: Tensor) -> PyramidParts:
        """Master, aux and fused pyramids, for visualisation and profiling."""
        self._check_images(images)
        if self.aux is None:
            master_feats = self.run_master(images)
            return PyramidParts(master=master_feats, aux=None, fused=dict(master_feats))
        # The aux runs first: its temporaries come and go before the master's activations are held.
        aux_feats = self.run_aux(images)
        master_feats = self.run_master(images)
        return PyramidParts(master=master_feats, aux=aux_feats, fused=self.inject(master_feats, aux_feats))

    def forward(self, images: Tensor) -> dict[int, Tensor]:
        return self.parts(images).fused

    @staticmethod
    def _check_images(images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")

    def extra_repr(self) -> str:
        if self.aux is None:
            return "single encoder (no auxiliary)"
        return f"strides={list(self.strides)}, align={self.align_kind}, mode={self.mode}"
