"""The master-auxiliary pyramid, and the owner of its plan's life.

`MasterAuxPyramid(master, aux, strides=(16,))` runs both encoders on the same `[0, 1]` images
(each with its own normalization), aligns the auxiliary's features at the injection strides
to the master's channels and spatial size, and either replaces the master's features there
(`mode="replace"`, the paper) or adds them (`mode="add"`). Every other stride is the master's.
Without an auxiliary it is the plain single-encoder baseline.

`PlannedPyramid` builds that pyramid from encoder specs and owns its plan: it waits unplanned
(`plan="auto"`), is planned once (`set_plan`, which also swaps the roles when the plan names them
the other way round), and writes the plan into a checkpoint and reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from fusionseg.encoders.base import Encoder
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.plan import FusionPlan, encoder_names, names_encoder

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
        freeze_aux: False fine-tunes the aux too: it runs with gradients through the injection (the paper's RQ5).
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
        freeze_aux: bool = True,
    ) -> None:
        super().__init__()
        if align not in ALIGNS:
            raise ValueError(f"align={align!r}; expected one of {ALIGNS}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        self.align_kind = align
        self.mode = mode
        self.freeze_aux = freeze_aux
        self.master = master
        self.aux = aux
        self.strides: tuple[int, ...] = ()
        self.align = nn.ModuleDict()
        self.fuse_at(strides)

    def fuse_at(self, strides: Sequence[int]) -> None:
        """Inject the aux at `strides` (each in both pyramids), with new alignment layers; freezes the aux
        (unless `freeze_aux` is False)."""
        master, aux = self.master, self.aux
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
            if self.freeze_aux:
                aux.freeze()
        make = project_align if self.align_kind == "project" else SampleAlign
        self.strides = strides
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

    def run_aux(self, images: Tensor) -> dict[int, Tensor]:
        """The aux's pyramid; a frozen aux runs without gradients, under bf16 autocast when the images are on
        a GPU. A fine-tuned aux (`freeze_aux=False`) runs like the master."""
        if self.aux is None:
            raise RuntimeError("this pyramid has no auxiliary encoder")
        if not self.aux.frozen:
            return self.aux(self.aux.normalize(images))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.is_cuda):
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


PLAN_NEEDED = (
    "the fused pyramid has no fusion plan yet (plan='auto'). Either run `fusionseg profile` and pass "
    "plan=PATH/plan.json (or the plan as a dict), or add the MetricProfiler callback "
    "(fusionseg.callbacks.MetricProfiler), which profiles both encoders and sets the plan before the first step."
)
# Where checkpoints of older versions kept the plan (now it is the `plan` hyperparameter only).
LEGACY_CHECKPOINT_PLAN_KEY = "fusion_plan"


def plain(value: Any) -> Any:
    """Containers kept, numbers as Python numbers (numpy or tensor scalars become floats), for
    checkpoints that load with `torch.load(weights_only=True)`."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if value is None or type(value) in (str, bool, int, float):  # exact types: numpy's float64 is a float subclass
        return value
    if isinstance(value, str):
        return str(value)
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


class PlannedPyramid(MasterAuxPyramid):
    """The fused pyramid of two encoder specs and the life of its plan: unplanned -> planned -> checkpoint.

    Args:
        master / aux: `EncoderSpec`s (or `"name:k=v"` strings, or `{name, args}` dicts); aux None is the baseline.
        align / mode: how the aux is injected (see `MasterAuxPyramid`).
        freeze_master: keep the master frozen (the paper's FZ setting).
        freeze_aux: False fine-tunes the planned aux (trainable once the plan is set; frozen while unplanned).
        pretrained: False skips the weight files (a checkpoint brings the weights).

    Unplanned, both encoders wait (the aux frozen) and `forward` refuses to run. `set_plan(plan)`
    checks that the plan names these two encoders (by registry name or full spec, see
    `fusionseg.plan.encoder_names`), makes the plan's master the trainable master (swapping the two
    encoders when the plan names them the other way round) and builds the alignment layers. The
    plan lives in a checkpoint once, as the `plan` hyperparameter: `checkpoint_hparams()` gives what to
    store, `plan_in_checkpoint(checkpoint)` reads it back (also from checkpoints of older versions).
    """

    def __init__(self, master: EncoderSpec | str | Mapping[str, Any], aux: EncoderSpec | str | Mapping[str, Any] | None = None,
                 align: str = "project", mode: str = "replace", freeze_master: bool = False,
                 pretrained: bool = True, freeze_aux: bool = True) -> None:
        master_spec = EncoderSpec.parse(dict(master) if isinstance(master, Mapping) else master)
        aux_spec = None if aux is None else EncoderSpec.parse(dict(aux) if isinstance(aux, Mapping) else aux)
        if aux_spec is not None and str(aux_spec) == str(master_spec):
            raise ValueError(f"master and aux are the same encoder ({master_spec}); fusing an encoder with itself "
                             "adds nothing (use aux=None for the single-encoder baseline)")
        master_encoder = master_spec.build(pretrained=pretrained)
        if freeze_master:
            master_encoder.freeze()
        super().__init__(master_encoder, None, (), align=align, mode=mode, freeze_aux=freeze_aux)
        # Registered now, so `.to()` and the trainer move it while it waits for a plan; frozen until it is fused.
        self.aux = aux_spec.build(pretrained=pretrained).freeze() if aux_spec is not None else None
        self.master_spec, self.aux_spec = master_spec, aux_spec
        self.freeze_master = freeze_master
        self.plan: FusionPlan | None = None

    # -- the plan -----------------------------------------------------------------------------------
    @property
    def needs_plan(self) -> bool:
        """True while the pyramid waits for `set_plan` (e.g. from the MetricProfiler callback)."""
        return self.plan is None

    def names(self) -> dict[str, str]:
        """How profiles and plans name the two roles (`fusionseg.plan.encoder_names`)."""
        specs = {"master": self.master_spec, "aux": self.aux_spec}
        specs = {role: spec for role, spec in specs.items() if spec is not None}
        return dict(zip(specs, encoder_names(list(specs.values()))))

    def baseline_plan(self, task: str) -> FusionPlan:
        return FusionPlan(master=self.names()["master"], task=task)

    def resolve(self, plan: str | Path | Mapping[str, Any] | FusionPlan | None, task: str) -> FusionPlan | None:
        """The plan a `plan=` argument gives: `"auto"` (None while an aux waits for profiling), a dict,
        a path to a `plan.json`, a `FusionPlan`, or None (the single-encoder baseline)."""
        if plan is None:
            if self.aux_spec is not None:
                raise ValueError(
                    f"plan=None is the single-encoder baseline, but aux={self.aux_spec} is given; "
                    "drop aux, or give a plan (dict, path to plan.json, or 'auto')"
                )
            return self.baseline_plan(task)
        if isinstance(plan, FusionPlan):
            return plan
        if isinstance(plan, Mapping):
            return FusionPlan.from_dict(dict(plan))
        if plan == "auto":
            return self.baseline_plan(task) if self.aux_spec is None else None
        if isinstance(plan, (str, Path)):
            path = Path(plan)
            if not path.is_file():
                raise FileNotFoundError(
                    f"plan={str(plan)!r} is neither 'auto' nor an existing plan.json; write one with `fusionseg profile`"
                )
            return FusionPlan.load(path)
        raise TypeError(f"plan must be 'auto', a dict, a path to plan.json or None; got {type(plan).__name__}")

    def _swaps(self, plan: FusionPlan) -> bool:
        """Whether `plan` names this pyramid's encoders with the roles the other way round (else it keeps them)."""
        have = {"master": str(self.master_spec), "aux": str(self.aux_spec) if self.aux_spec is not None else None}
        if (plan.aux is None) != (self.aux_spec is None):
            raise ValueError(f"the plan's aux {plan.aux!r} does not match this model's aux encoder {have['aux']!r}")
        if self.aux_spec is None:
            if not names_encoder(plan.master, self.master_spec):
                raise ValueError(f"the plan's master {plan.master!r} is not this model's encoder {have['master']!r}")
            return False
        keeps = names_encoder(plan.master, self.master_spec) and names_encoder(plan.aux, self.aux_spec)
        swaps = names_encoder(plan.master, self.aux_spec) and names_encoder(plan.aux, self.master_spec)
        if keeps == swaps:  # neither, or (two encoders of one registry name named by it) both
            raise ValueError(
                f"the plan (master {plan.master!r}, aux {plan.aux!r}) does not name this model's encoders "
                f"(master {have['master']!r}, aux {have['aux']!r}) one to one; use a plan made for these encoders "
                "(plans name an encoder by registry name, or by its full spec when two share a registry name)"
            )
        return swaps

    def set_plan(self, plan: FusionPlan) -> bool:
        """Fuse as `plan` says (before any optimizer holds the parameters); returns True when the roles swapped.

        The plan's master becomes the trainable master (unless `freeze_master`) and its aux the frozen
        auxiliary, whichever role the configuration gave them; the alignment layers are new, on the
        master's device and in this module's train/eval mode.
        """
        if not isinstance(plan, FusionPlan):
            raise TypeError(f"set_plan takes a FusionPlan, got {type(plan).__name__}")
        if plan == self.plan:
            return False
        swapped = self._swaps(plan)
        if swapped:
            old_master, old_aux = self.master, self.aux
            self.master, self.aux = old_aux, old_master
            self.master_spec, self.aux_spec = self.aux_spec, self.master_spec
            self.aux.freeze()
            if not self.freeze_master:
                self.master.unfreeze()
            self.master.train(self.training)
        device = next(self.master.parameters(), torch.empty(0)).device
        self.fuse_at(plan.strides)
        self.align.to(device).train(self.training)
        if self.aux is not None and not self.freeze_aux:
            self.aux.unfreeze().train(self.training)
        self.plan = plan
        return swapped

    @override
    def forward(self, images: Tensor) -> dict[int, Tensor]:
        if self.plan is None:
            raise RuntimeError(PLAN_NEEDED)
        return super().forward(images)

    @override
    def parts(self, images: Tensor) -> PyramidParts:
        if self.plan is None:
            raise RuntimeError(PLAN_NEEDED)
        return super().parts(images)

    # -- checkpoints ----------------------------------------------------------------------------------
    def checkpoint_hparams(self) -> dict[str, Any]:
        """What a checkpoint's hyperparameters say of the fusion: the plan (once), the encoders in the
        plan's roles and `pretrained=False` (the checkpoint brings the weights), in plain types."""
        if self.plan is None:
            raise RuntimeError(PLAN_NEEDED)
        return {
            "plan": plain(self.plan.to_dict()),
            "master": asdict(self.master_spec),
            "aux": asdict(self.aux_spec) if self.aux_spec is not None else None,
            "pretrained": False,
        }

    @staticmethod
    def plan_in_checkpoint(checkpoint: Mapping[str, Any], hparams_key: str = "hyper_parameters") -> FusionPlan:
        """The plan a checkpoint stores: its `plan` hyperparameter, or the separate key of older versions."""
        stored = (checkpoint.get(hparams_key) or {}).get("plan")
        if not isinstance(stored, Mapping):
            stored = checkpoint.get(LEGACY_CHECKPOINT_PLAN_KEY)
        if not isinstance(stored, Mapping):
            raise KeyError(f"this checkpoint stores no fusion plan (no '{hparams_key}.plan'); "
                           "it was not written by FusedSegModule")
        return FusionPlan.from_dict(dict(stored))
