"""FusedSegModule: the fused encoders, the Mask2Former head, training, evaluation and prediction in Lightning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fusionseg.encoders.base import Encoder
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.evaluation import HEADLINE_METRIC, build_evaluator
from fusionseg.fusion import MasterAuxPyramid
from fusionseg.heads.mask2former import HEAD_STRIDES, Mask2FormerHead, Mask2FormerOutput
from fusionseg.heads.postprocess import postprocess
from fusionseg.optim import WarmupPoly, param_groups, resolve_warmup
from fusionseg.plan import FusionPlan
from fusionseg.structures import IGNORE_INDEX, TASKS, SegBatch, SegPrediction

PLAN_NEEDED = (
    "FusedSegModule(plan='auto') has no fusion plan yet. Either run `fusionseg profile` and pass "
    "plan=PATH/plan.json (or the plan as a dict), or add the MetricProfiler callback "
    "(fusionseg.callbacks.MetricProfiler), which profiles both encoders and calls set_plan() before the first step."
)
CHECKPOINT_PLAN_KEY = "fusion_plan"


def _plain(value: Any) -> Any:
    """Containers kept, numbers as Python numbers (numpy or tensor scalars become floats)."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or type(value) in (str, bool, int, float):  # exact types: numpy's float64 is a float subclass
        return value
    if isinstance(value, str):
        return str(value)
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def _plan_dict(plan: FusionPlan) -> dict[str, Any]:
    """The plan in plain Python types, so checkpoints load with `torch.load(weights_only=True)`."""
    return _plain(plan.to_dict())


def _names(spec: EncoderSpec) -> set[str]:
    """How a plan may name an encoder: its registry name or its full spec string."""
    return {spec.name, str(spec)}


class FusedSegModule(LightningModule):
    """Segmentation with a trainable master encoder, an optional frozen auxiliary and a Mask2Former head.

    Args:
        master / aux: encoders as `EncoderSpec`s (`{name, args}`) or spec strings (`"name:k=v,..."`).
        plan: `"auto"` (a `MetricProfiler` callback profiles the encoders and calls `set_plan` before the
            first step), a `FusionPlan` dict, a path to a `plan.json`, or None (the single-encoder baseline,
            no aux). Plans name encoders by registry name or by full spec string.
        task: `"semantic"`, `"instance"` or `"panoptic"`; decides inference and evaluation.
        num_classes / thing_ids / class_names: the label space; panoptic needs `thing_ids` (instance
            inference keeps only `thing_ids` when given).
        align / mode: how the aux is injected (see `fusionseg.fusion.MasterAuxPyramid`).
        freeze_master: a frozen master (the paper's FZ setting); no backbone parameter group then.
        num_queries ... enc_feedforward: Mask2Former head settings (see `Mask2FormerHead`).
        topk_per_image / object_mask_threshold / overlap_threshold: inference settings (instance top-k;
            panoptic query score threshold and kept-area ratio).
        lr / weight_decay / backbone_lr_mult / warmup_steps / poly_power: AdamW with the master at
            `lr * backbone_lr_mult`, linear warm-up (a step count, or a fraction of all steps when < 1)
            and poly decay per optimizer step.
        pretrained: False skips the encoders' weight files (a checkpoint brings the weights).
        ignore_index: the evaluators' ignore label.

    Checkpoints store the plan; `load_from_checkpoint` and Trainer `ckpt_path` resume restore the
    exact fused model without profiling again.
    """

    def __init__(
        self,
        master: EncoderSpec | str,
        aux: EncoderSpec | str | None = None,
        plan: str | dict[str, Any] | None = "auto",
        task: Literal["semantic", "instance", "panoptic"] = "semantic",
        num_classes: int = 150,
        thing_ids: list[int] | None = None,
        class_names: list[str] | None = None,
        align: Literal["project", "sample"] = "project",
        mode: Literal["replace", "add"] = "replace",
        freeze_master: bool = False,
        num_queries: int = 100,
        dec_layers: int = 9,
        hidden_dim: int = 256,
        train_points: int = 12544,
        enc_layers: int = 6,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        enc_feedforward: int = 1024,
        topk_per_image: int = 100,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        backbone_lr_mult: float = 0.1,
        warmup_steps: int | float = 1500,
        poly_power: float = 0.9,
        pretrained: bool = True,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r}; expected one of {TASKS}")
        self.save_hyperparameters()
        self.master_spec = EncoderSpec.parse(master)
        self.aux_spec = EncoderSpec.parse(aux) if aux is not None else None
        self.hparams["master"] = asdict(self.master_spec)
        self.hparams["aux"] = asdict(self.aux_spec) if self.aux_spec is not None else None
        self.task = task
        self.num_classes = num_classes
        self.thing_ids = self._check_label_space(task, num_classes, thing_ids, class_names)
        self.class_names = list(class_names) if class_names is not None else None
        self.align, self.mode = align, mode

        master_encoder = self.master_spec.build(pretrained=pretrained)
        if freeze_master:
            master_encoder.freeze()
        encoders = {"master": master_encoder}
        if self.aux_spec is not None:
            encoders["aux"] = self.aux_spec.build(pretrained=pretrained).freeze()
        # Encoders wait here until a plan says how to fuse them; then the pyramid owns them.
        self._unplanned: nn.ModuleDict | None = nn.ModuleDict(encoders)
        self.pyramid: MasterAuxPyramid | None = None
        self.plan: FusionPlan | None = None
        self.head = Mask2FormerHead(
            in_channels={s: master_encoder.pyramid[s] for s in HEAD_STRIDES},
            num_classes=num_classes,
            num_queries=num_queries,
            dec_layers=dec_layers,
            hidden_dim=hidden_dim,
            train_points=train_points,
            enc_layers=enc_layers,
            num_heads=num_heads,
            dim_feedforward=dim_feedforward,
            enc_feedforward=enc_feedforward,
        )
        self._evaluators: dict[str, nn.Module] = {}
        initial = self._initial_plan(plan)
        if initial is not None:
            self.set_plan(initial)

    # -- encoders and the plan --------------------------------------------------------------
    @property
    def master(self) -> Encoder:
        return self.pyramid.master if self.pyramid is not None else self._unplanned["master"]

    @property
    def aux(self) -> Encoder | None:
        if self.pyramid is not None:
            return self.pyramid.aux
        return self._unplanned["aux"] if "aux" in self._unplanned else None

    @property
    def needs_plan(self) -> bool:
        """True while `plan="auto"` waits for `set_plan` (e.g. from the MetricProfiler callback)."""
        return self.pyramid is None

    def _initial_plan(self, plan: str | dict[str, Any] | FusionPlan | None) -> FusionPlan | None:
        baseline = FusionPlan(master=self.master_spec.name, task=self.task)
        if plan is None:
            if self.aux_spec is not None:
                raise ValueError(
                    f"plan=None is the single-encoder baseline, but aux={self.aux_spec} is given; "
                    "drop aux, or give a plan (dict, path to plan.json, or 'auto')"
                )
            return baseline
        if isinstance(plan, FusionPlan):
            return plan
        if isinstance(plan, dict):
            return FusionPlan.from_dict(plan)
        if plan == "auto":
            return baseline if self.aux_spec is None else None
        if isinstance(plan, (str, Path)):
            path = Path(plan)
            if not path.is_file():
                raise FileNotFoundError(
                    f"plan={plan!r} is neither 'auto' nor an existing plan.json; write one with `fusionseg profile`"
                )
            return FusionPlan.load(path)
        raise TypeError(f"plan must be 'auto', a dict, a path to plan.json or None; got {type(plan).__name__}")

    def set_plan(self, plan: FusionPlan) -> None:
        """Fuse the encoders as `plan` says: checks the names and strides, builds the alignment layers.

        Call it before the optimizer exists (a callback's `setup` hook is the place); checkpoints call
        it on load. Plans name encoders by registry name (`"dinov3"`) or full spec string.
        """
        if not isinstance(plan, FusionPlan):
            raise TypeError(f"set_plan takes a FusionPlan, got {type(plan).__name__}")
        if plan == self.plan:
            return
        trainer = self._trainer
        if trainer is not None and trainer.optimizers:
            raise RuntimeError("set_plan must run before the optimizer is created (e.g. in a callback's setup hook)")
        if plan.master not in _names(self.master_spec):
            raise ValueError(
                f"the plan's master {plan.master!r} is not this module's master encoder {str(self.master_spec)!r}; "
                "swap master and aux in the configuration or use a plan made for these encoders"
            )
        if (plan.aux is None) != (self.aux_spec is None) or (
            self.aux_spec is not None and plan.aux not in _names(self.aux_spec)
        ):
            have = str(self.aux_spec) if self.aux_spec is not None else None
            raise ValueError(f"the plan's aux {plan.aux!r} does not match this module's aux encoder {have!r}")
        master, aux = self.master, self.aux
        device = next(master.parameters(), torch.empty(0)).device
        # New alignment layers follow the module's mode (eval when a plan is set outside fit).
        pyramid = MasterAuxPyramid(master, aux, plan.strides, align=self.align, mode=self.mode)
        self.pyramid = pyramid.to(device).train(self.training)
        if self._unplanned is not None:
            del self._unplanned
            self._unplanned = None
        self.plan = plan
        self.hparams["plan"] = _plan_dict(plan)

    # -- model --------------------------------------------------------------------------------
    def fused_pyramid(self, images: Tensor) -> dict[int, Tensor]:
        """`{stride: (B, C, ceil(H / s), ceil(W / s))}` of `(B, 3, H, W)` images in `[0, 1]`."""
        if self.pyramid is None:
            raise RuntimeError(PLAN_NEEDED)
        return self.pyramid(images)

    def forward(self, images: Tensor) -> Mask2FormerOutput:
        return self.head(self.fused_pyramid(images))

    def predictions(self, batch: SegBatch) -> list[SegPrediction]:
        """One `SegPrediction` per image, at `batch.orig_sizes[i]` (see `fusionseg.heads.postprocess`)."""
        outputs = self(batch.images)
        return postprocess(
            outputs,
            self.task,
            padded_size=tuple(batch.images.shape[-2:]),
            image_sizes=batch.image_sizes,
            orig_sizes=batch.orig_sizes,
            thing_ids=self.thing_ids,
            topk=self.hparams.topk_per_image,
            object_mask_threshold=self.hparams.object_mask_threshold,
            overlap_threshold=self.hparams.overlap_threshold,
        )

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch: SegBatch, batch_idx: int) -> Tensor:
        losses = self.head.loss(self(batch.images), batch.targets)
        size = batch.images.shape[0]
        terms = {f"train/{k}": losses[k].detach() for k in ("loss_ce", "loss_mask", "loss_dice")}
        self.log_dict(terms, batch_size=size)
        self.log("train/loss", losses["loss"].detach(), prog_bar=True, batch_size=size)
        return losses["loss"]

    def validation_step(self, batch: SegBatch, batch_idx: int) -> None:
        self._evaluator("val").update(self.predictions(batch), batch.targets)

    def test_step(self, batch: SegBatch, batch_idx: int) -> None:
        self._evaluator("test").update(self.predictions(batch), batch.targets)

    def predict_step(self, batch: SegBatch, batch_idx: int = 0, dataloader_idx: int = 0) -> list[SegPrediction]:
        return self.predictions(batch)

    def on_validation_epoch_start(self) -> None:
        self._evaluator("val").to(self.device)

    def on_test_epoch_start(self) -> None:
        self._evaluator("test").to(self.device)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    # -- evaluation -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        split = {"fit": "val", "validate": "val", "test": "test"}.get(stage)
        if split is None:
            return  # predict evaluates nothing
        self._evaluators[split] = build_evaluator(
            self.task,
            self.num_classes,
            thing_ids=self.thing_ids or (),
            class_names=self.class_names,
            ignore_index=self.hparams.ignore_index,
        )

    def _evaluator(self, split: str) -> nn.Module:
        if split not in self._evaluators:
            raise RuntimeError(f"no {split} evaluator: setup() built none for '{split}' (run through a Trainer)")
        # Moved to the device once per epoch (on_*_epoch_start): `.to` walks every accumulated metric state,
        # so calling it each step would cost more the further the epoch gets.
        return self._evaluators[split]

    def _log_evaluation(self, split: str) -> None:
        evaluator = self._evaluator(split)
        results = evaluator.compute()
        for key, value in results.items():
            # Scalars are logged; per-class tensors stay available from evaluator.compute().
            if isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.numel() == 1):
                self.log(f"{split}/{key}", float(value), prog_bar=key == HEADLINE_METRIC[self.task])
        evaluator.reset()

    # -- optimization ----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        if self.pyramid is None:
            raise RuntimeError(PLAN_NEEDED)
        hp = self.hparams
        backbone = None if self.master.frozen else self.master
        groups = param_groups(
            backbone, [self.pyramid.align, self.head], hp.lr, hp.weight_decay, hp.backbone_lr_mult
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("the poly schedule needs a finite run: set the Trainer's max_steps or max_epochs")
        schedule = WarmupPoly(int(total), resolve_warmup(hp.warmup_steps, int(total)), hp.poly_power)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.plan is None:
            raise RuntimeError(PLAN_NEEDED)
        checkpoint[CHECKPOINT_PLAN_KEY] = _plan_dict(self.plan)
        hparams = dict(checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY, {}))
        # The checkpoint carries the weights and the plan: loading it needs neither weight files nor profiling.
        hparams.update(plan=_plan_dict(self.plan), pretrained=False)
        checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = hparams

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if CHECKPOINT_PLAN_KEY not in checkpoint:
            raise KeyError(f"this checkpoint has no '{CHECKPOINT_PLAN_KEY}'; it was not written by FusedSegModule")
        self.set_plan(FusionPlan.from_dict(checkpoint[CHECKPOINT_PLAN_KEY]))

    # -- checks -----------------------------------------------------------------------------------
    @staticmethod
    def _check_label_space(
        task: str, num_classes: int, thing_ids: Sequence[int] | None, class_names: Sequence[str] | None
    ) -> list[int] | None:
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        if thing_ids is not None:
            bad = [t for t in thing_ids if not 0 <= t < num_classes]
            if bad:
                raise ValueError(f"thing_ids {bad} are outside [0, {num_classes})")
            thing_ids = sorted(set(int(t) for t in thing_ids))
        if task == "panoptic" and not thing_ids:
            raise ValueError("task='panoptic' needs thing_ids (the classes with instances; the rest is stuff)")
        return thing_ids
