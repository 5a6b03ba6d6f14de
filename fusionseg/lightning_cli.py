"""`fusionseg fit | validate | test | predict`: LightningCLI with FusedSegModule and SegDataModule.

The data module owns the label space: its `info` (number of classes, thing ids, class names) and
`task` are linked into the model, so a config names them once. Default callbacks, each configurable
under its own key (`--last_checkpoint.every_n_train_steps 500`, `--metric_profiler.num_batches 4`, ...):

- `metric_profiler`: MetricProfiler (profiles the encoders and sets the plan when `model.plan` is `auto`;
  `--metric_profiler.roles auto|config`, `--metric_profiler.plan_metric ef|ef_cc`)
- `last_checkpoint`: `last.ckpt` every N steps and at the end; `fit --ckpt_path last` resumes (Lightning
  finds the file; the module restores the plan from it)
- `best_checkpoint`: the best checkpoint by the task's main metric
- `lr_monitor`: learning rates per step
- `visuals`: TensorBoard images, feature PCA maps, SC/EF of the fused features, custom-scalar layout
- `prediction_writer`: label PNGs and colour overlays of `predict`

`--trainer.strategy ddp` runs as `ddp_find_unused_parameters_true`: the master's features at the injected
stride are replaced, so the parameters that make only them get no gradient.

Several machines: `--trainer.num_nodes N` with Lightning's usual environment variables (MASTER_ADDR,
MASTER_PORT, NODE_RANK, WORLD_SIZE) or under SLURM.

Checkpoints go to `<trainer.default_root_dir>/checkpoints`, TensorBoard logs to
`<trainer.default_root_dir>/lightning_logs`. `validate` and `test` print the results table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from fusionseg.callbacks.checkpointing import BestCheckpoint, LastCheckpoint
from fusionseg.callbacks.learning_rates import LearningRateLogger
from fusionseg.callbacks.prediction_writer import SegPredictionWriter
from fusionseg.callbacks.profiler import MetricProfiler
from fusionseg.callbacks.visuals import TensorBoardVisuals
from fusionseg.data import SegDataModule
from fusionseg.evaluation import eval_rules
from fusionseg.module import FusedSegModule

DEFAULT_CALLBACKS = {
    "metric_profiler": MetricProfiler,
    "last_checkpoint": LastCheckpoint,
    "best_checkpoint": BestCheckpoint,
    "lr_monitor": LearningRateLogger,
    "visuals": TensorBoardVisuals,
    "prediction_writer": SegPredictionWriter,
}


def _num_classes(data: SegDataModule) -> int:
    return data.info.num_classes


def _thing_ids(data: SegDataModule) -> list[int]:
    return list(data.info.thing_ids)


def _class_names(data: SegDataModule) -> list[str]:
    return list(data.info.class_names)


def _eval_rules(data: SegDataModule) -> str:
    return eval_rules(data.info.name)  # the evaluated dataset's official protocol


class FusionSegCLI(LightningCLI):
    """LightningCLI for FusedSegModule + SegDataModule with fusionseg's default callbacks and links."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)  # the module builds its own AdamW + poly schedule
        kwargs.setdefault("seed_everything_default", 0)
        super().__init__(FusedSegModule, SegDataModule, args=args, run=run, **kwargs)

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key, callback in DEFAULT_CALLBACKS.items():
            parser.add_lightning_class_args(callback, key)
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.link_arguments("data.task", "model.task")
        links = (("num_classes", _num_classes), ("thing_ids", _thing_ids), ("class_names", _class_names),
                 ("eval_rules", _eval_rules))
        for target, fn in links:
            parser.link_arguments("data", f"model.{target}", compute_fn=fn, apply_on="instantiate")

    @override
    def before_instantiate_classes(self) -> None:
        # With mode="replace" the master's branch at the injected stride produces features nobody uses, so
        # its parameters get no gradient; plain DDP refuses that. Lightning's own name for the fix:
        trainer = self.config[self.subcommand]["trainer"] if self.subcommand else self.config["trainer"]
        if trainer.get("strategy") == "ddp":
            trainer["strategy"] = "ddp_find_unused_parameters_true"

    # -- predict: the writer saves every prediction; keeping them all in memory too would not scale -------
    @override
    def before_predict(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("return_predictions") is None:
            config["return_predictions"] = False

    # -- validate / test: the paper-style results table ----------------------------------------------
    @override
    def after_validate(self) -> None:
        self._print_table("val")

    @override
    def after_test(self) -> None:
        self._print_table("test")

    def _print_table(self, split: str) -> None:
        from fusionseg.evaluation.table import format_results

        prefix = f"{split}/"
        results = {k[len(prefix):]: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(prefix)}
        if not results:
            raise RuntimeError(f"no {prefix}* metrics were logged; the {split} set may be empty")
        names = self.model.class_names or [f"class_{i}" for i in range(self.model.num_classes)]
        table = format_results(self.model.task, results, names)
        if self.trainer.is_global_zero:  # the command's answer, on stdout
            print(f"\n{split} results ({self.model.task}, {self.datamodule.info.name}):\n{table}\n", flush=True)

    def _callback(self, cls: type) -> Any:
        for callback in self.trainer.callbacks:
            if isinstance(callback, cls):
                return callback
        raise LookupError(f"the trainer has no {cls.__name__} callback")


def run_lightning_cli(argv: Sequence[str] | None = None) -> FusionSegCLI:
    """Run `fusionseg <subcommand> ...` (fit, validate, test, predict); returns the CLI object."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # LightningCLI reads sys.argv, and Lightning's DDP launcher starts the other ranks with it: make it argv.
    saved = sys.argv
    sys.argv = [saved[0] if saved else "fusionseg", *argv]
    try:
        return FusionSegCLI()
    finally:
        sys.argv = saved
