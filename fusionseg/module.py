"""FusedSegModule: the fused encoders, the Mask2Former head, training, evaluation and prediction in Lightning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from fusionseg.encoders.base import Encoder
from fusionseg.encoders.spec import EncoderSpec
from fusionseg.evaluation import HEADLINE_METRIC, build_evaluator
from fusionseg.fusion import PLAN_NEEDED, PlannedPyramid, plain
from fusionseg.heads.config import HeadConfig
from fusionseg.heads.mask2former import HEAD_STRIDES, Mask2FormerOutput
from fusionseg.heads.postprocess import postprocess
from fusionseg.optim import build_schedule, param_groups, split_decay
from fusionseg.plan import FusionPlan
from fusionseg.structures import IGNORE_INDEX, TASKS, SegBatch, SegPrediction


class FusedSegModule(LightningModule):
    """Segmentation with a trainable master encoder, an optional frozen auxiliary and a Mask2Former head.

    Args:
        master / aux: encoders as `EncoderSpec`s (`{name, args}`) or spec strings (`"name:k=v,..."`).
        plan: `"auto"` (a `MetricProfiler` callback profiles the encoders and calls `set_plan` before the
            first step), a `FusionPlan` dict, a path to a `plan.json`, or None (the single-encoder baseline,
            no aux). Plans name encoders by registry name or by full spec string; the plan's roles win
            (a plan whose master is the configured aux swaps the two).
        task: `"semantic"`, `"instance"` or `"panoptic"`; decides inference and evaluation.
        num_classes / thing_ids / class_names: the label space; panoptic needs `thing_ids` (instance
            inference keeps only `thing_ids` when given).
        align / mode: how the aux is injected (see `fusionseg.fusion.MasterAuxPyramid`).
        freeze_master: a frozen master (the paper's FZ setting); no backbone parameter group then.
        freeze_aux / aux_lr_mult: `freeze_aux=False` fine-tunes the auxiliary too (the paper's RQ5), with
            gradients through the injection, at `lr * aux_lr_mult` (None: `backbone_lr_mult`). The default
            keeps it frozen: its weights stay bit-identical.
        head: the Mask2Former head and its inference settings (`fusionseg.heads.HeadConfig`, or a dict of
            its fields).
        lr / weight_decay / backbone_lr_mult / warmup_steps / poly_power: AdamW with the master at
            `lr * backbone_lr_mult`, linear warm-up (a step count, or a fraction of all steps when < 1)
            and poly decay per optimizer step.
        lr_schedule / milestones / gamma: `"poly"` (the default) or `"multistep"`: x`gamma` at each of
            `milestones` (steps, or fractions of all steps when < 1; Mask2Former's COCO: [327778, 355092]),
            see `fusionseg.optim.build_schedule`.
        pretrained: False skips the encoders' weight files (a checkpoint brings the weights).
        ignore_index: the evaluators' ignore label.
        eval_rules: whose official evaluation the instance AP follows (`"coco"` or `"cityscapes"`; the CLI
            links it from the evaluated dataset, `fusionseg.evaluation.eval_rules`).

    The encoders and their plan live in `self.pyramid` (`fusionseg.fusion.PlannedPyramid`), which also
    writes the plan into checkpoints: `load_from_checkpoint` and Trainer `ckpt_path` resume restore the
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
        freeze_aux: bool = True,
        aux_lr_mult: float | None = None,
        head: HeadConfig | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        backbone_lr_mult: float = 0.1,
        warmup_steps: int | float = 1500,
        poly_power: float = 0.9,
        lr_schedule: Literal["poly", "multistep"] = "poly",
        milestones: list[int | float] | None = None,
        gamma: float = 0.1,
        pretrained: bool = True,
        ignore_index: int = IGNORE_INDEX,
        eval_rules: Literal["coco", "cityscapes"] = "coco",
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r}; expected one of {TASKS}")
        if freeze_aux and aux_lr_mult is not None:
            raise ValueError(f"aux_lr_mult={aux_lr_mult} trains the auxiliary: set freeze_aux=False with it "
                             "(or drop aux_lr_mult to keep the auxiliary frozen)")
        self.save_hyperparameters()
        self.task = task
        self.num_classes = num_classes
        self.thing_ids = self._check_label_space(task, num_classes, thing_ids, class_names)
        self.class_names = list(class_names) if class_names is not None else None
        self.head_config = HeadConfig.parse(head)
        self.hparams["head"] = self.head_config.to_dict()  # plain types: checkpoints load with weights_only
        self.pyramid = PlannedPyramid(master, aux, align=align, mode=mode, freeze_master=freeze_master,
                                      pretrained=pretrained, freeze_aux=freeze_aux)
        self._store_specs()
        self.head = self._build_head()
        # Child modules, so Lightning moves them with the model; built per stage in `setup`.
        self.evaluators = nn.ModuleDict()
        self._optimizer_built = False
        initial = self.pyramid.resolve(plan, task)
        if initial is not None:
            self.set_plan(initial)

    # -- encoders and the plan (owned by self.pyramid) ------------------------------------------------
    @property
    def master(self) -> Encoder:
        return self.pyramid.master

    @property
    def aux(self) -> Encoder | None:
        return self.pyramid.aux

    @property
    def master_spec(self) -> EncoderSpec:
        return self.pyramid.master_spec

    @property
    def aux_spec(self) -> EncoderSpec | None:
        return self.pyramid.aux_spec

    @property
    def plan(self) -> FusionPlan | None:
        return self.pyramid.plan

    @property
    def needs_plan(self) -> bool:
        """True while `plan="auto"` waits for `set_plan` (e.g. from the MetricProfiler callback)."""
        return self.pyramid.needs_plan

    def set_plan(self, plan: FusionPlan) -> bool:
        """Fuse the encoders as `plan` says (see `PlannedPyramid.set_plan`); True when the roles swapped.

        Call it before the optimizer exists (a callback's `setup` hook is the place); checkpoints call
        it on load. A swap rebuilds the head when the new master's channels differ.
        """
        if self._optimizer_built and plan != self.plan:
            raise RuntimeError("set_plan must run before the optimizer is created (e.g. in a callback's setup hook)")
        if plan.task in TASKS and plan.task != self.task:  # an "edge" plan is a deliberate choice of rules
            raise ValueError(
                f"the fusion plan ({plan.summary()}) was made for task {plan.task!r}, but this model is "
                f"{self.task!r}; plans are chosen per task. Profile for this task (`--model.plan auto`, or "
                f"`fusionseg profile --task {self.task}`), or give a plan made for {self.task!r}"
            )
        swapped = self.pyramid.set_plan(plan)
        if swapped:
            rank_zero_info(f"FusedSegModule: the plan makes {self.master_spec} the master and {self.aux_spec} the "
                           "auxiliary, the other way round from the configuration; roles swapped")
            self._store_specs()
            if self.head.in_channels != {s: self.master.pyramid[s] for s in HEAD_STRIDES}:
                device = next(self.head.parameters()).device
                self.head = self._build_head().to(device).train(self.training)
        self.hparams["plan"] = plain(plan.to_dict())
        return swapped

    def _store_specs(self) -> None:
        fusion = {"master": self.master_spec, "aux": self.aux_spec}
        self.hparams.update({role: plain(asdict(spec)) if spec is not None else None for role, spec in fusion.items()})

    def _build_head(self) -> nn.Module:
        return self.head_config.build({s: self.master.pyramid[s] for s in HEAD_STRIDES}, self.num_classes)

    # -- model --------------------------------------------------------------------------------
    def fused_pyramid(self, images: Tensor) -> dict[int, Tensor]:
        """`{stride: (B, C, ceil(H / s), ceil(W / s))}` of `(B, 3, H, W)` images in `[0, 1]`."""
        return self.pyramid(images)

    @override
    def forward(self, images: Tensor) -> Mask2FormerOutput:
        return self.head(self.fused_pyramid(images))

    def predictions(self, batch: SegBatch) -> list[SegPrediction]:
        """One `SegPrediction` per image, at `batch.orig_sizes[i]` (see `fusionseg.heads.postprocess`)."""
        outputs = self(batch.images)
        head = self.head_config
        return postprocess(
            outputs,
            self.task,
            padded_size=tuple(batch.images.shape[-2:]),
            image_sizes=batch.image_sizes,
            orig_sizes=batch.orig_sizes,
            thing_ids=self.thing_ids,
            topk=head.topk_per_image,
            object_mask_threshold=head.object_mask_threshold,
            overlap_threshold=head.overlap_threshold,
        )

    # -- steps ----------------------------------------------------------------------------------
    @override
    def training_step(self, batch: SegBatch, batch_idx: int) -> Tensor:
        losses = self.head.loss(self(batch.images), batch.targets)
        size = batch.images.shape[0]
        terms = {f"train/{k}": losses[k].detach() for k in ("loss_ce", "loss_mask", "loss_dice")}
        self.log_dict(terms, batch_size=size)
        self.log("train/loss", losses["loss"].detach(), prog_bar=True, batch_size=size)
        return losses["loss"]

    @override
    def validation_step(self, batch: SegBatch, batch_idx: int) -> None:
        self._evaluator("val").update(self.predictions(batch), batch.targets)

    @override
    def test_step(self, batch: SegBatch, batch_idx: int) -> None:
        self._evaluator("test").update(self.predictions(batch), batch.targets)

    @override
    def predict_step(self, batch: SegBatch, batch_idx: int = 0, dataloader_idx: int = 0) -> list[SegPrediction]:
        return self.predictions(batch)

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    # -- evaluation -------------------------------------------------------------------------------
    @override
    def setup(self, stage: str) -> None:
        split = {"fit": "val", "validate": "val", "test": "test"}.get(stage)
        if split is not None:  # predict evaluates nothing
            self.evaluators[split] = self.build_evaluator()

    def build_evaluator(self) -> nn.Module:
        """The evaluator of this module's task and label space (one per evaluated split)."""
        return build_evaluator(
            self.task,
            self.num_classes,
            thing_ids=self.thing_ids or (),
            class_names=self.class_names,
            ignore_index=self.hparams.ignore_index,
            rules=self.hparams.eval_rules,
        )

    def _evaluator(self, split: str) -> nn.Module:
        if split not in self.evaluators:
            raise RuntimeError(f"no {split} evaluator: setup() built none for '{split}' (run through a Trainer)")
        return self.evaluators[split]

    def _log_evaluation(self, split: str) -> None:
        evaluator = self._evaluator(split)
        results = evaluator.compute()
        for key, value in results.items():
            # Scalars are logged; per-class tensors stay available from evaluator.compute().
            if isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.numel() == 1):
                self.log(f"{split}/{key}", float(value), prog_bar=key == HEADLINE_METRIC[self.task])
        evaluator.reset()

    # -- optimization ----------------------------------------------------------------------------
    @override
    def configure_optimizers(self) -> dict[str, Any]:
        if self.needs_plan:
            raise RuntimeError(PLAN_NEEDED)
        hp = self.hparams
        backbone = None if self.master.frozen else self.master
        groups = param_groups(
            backbone, [self.pyramid.align, self.head], hp.lr, hp.weight_decay, hp.backbone_lr_mult
        )
        if self.aux is not None and not self.aux.frozen:  # a fine-tuned aux (freeze_aux=False): its own lr
            groups += self._aux_groups()
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("the lr schedule needs a finite run: set the Trainer's max_steps or max_epochs")
        schedule = build_schedule(hp.lr_schedule, int(total), hp.warmup_steps, hp.poly_power, hp.milestones or (),
                                  hp.gamma)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self._optimizer_built = True
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def _aux_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        lr = hp.lr * (hp.aux_lr_mult if hp.aux_lr_mult is not None else hp.backbone_lr_mult)
        decay, no_decay = split_decay([self.aux])
        groups = [{"name": "aux", "params": decay, "lr": lr, "weight_decay": hp.weight_decay},
                  {"name": "aux_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    # -- checkpoints: the plan is stored once, as the `plan` hyperparameter ------------------------------
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        key = self.CHECKPOINT_HYPER_PARAMS_KEY
        # With the weights and the plan in it, loading the checkpoint needs neither weight files nor profiling.
        checkpoint[key] = {**checkpoint.get(key, {}), **self.pyramid.checkpoint_hparams()}

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.set_plan(PlannedPyramid.plan_in_checkpoint(checkpoint, self.CHECKPOINT_HYPER_PARAMS_KEY))

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
