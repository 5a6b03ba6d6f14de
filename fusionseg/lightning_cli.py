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
- `run_report`: the parameters by part before the first step, `hp_metric` (best headline metric) after
  each validation, and a closing summary (best/last checkpoints and their metric, per-class table, paths)
- `preemption`: SIGTERM / SIGINT save `last.ckpt` at the current step and exit 143 / 130
- `rng_states`: the generators' states in every checkpoint, so a resumed run continues exactly
- `finite_guard`: `fit` stops at the first non-finite loss and never saves non-finite weights

`fit` refuses a `default_root_dir` that already holds another run's checkpoints unless it resumes
(`--ckpt_path last`) or `--overwrite_checkpoints true` is given; a resumed run logs to its TensorBoard
version. A `--ckpt_path` file is checked before Lightning reads it (`fusionseg.checkpoint_check`).

`--trainer.strategy ddp` runs as `ddp_find_unused_parameters_true`: the master's features at the injected
stride are replaced, so the parameters that make only them get no gradient.

Several machines: `--trainer.num_nodes N` with Lightning's usual environment variables (MASTER_ADDR,
MASTER_PORT, NODE_RANK, WORLD_SIZE) or under SLURM.

Checkpoints go to `<trainer.default_root_dir>/checkpoints`, TensorBoard logs to
`<trainer.default_root_dir>/lightning_logs`. `validate` and `test` print the results table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from fusionseg.callbacks.checkpointing import BestCheckpoint, LastCheckpoint
from fusionseg.callbacks.finite_guard import FiniteGuard
from fusionseg.callbacks.preemption import Preemption
from fusionseg.callbacks.learning_rates import LearningRateLogger
from fusionseg.callbacks.prediction_writer import SegPredictionWriter
from fusionseg.callbacks.profiler import MetricProfiler
from fusionseg.callbacks.run_report import RunReport
from fusionseg.callbacks.rng_state import RNGStates
from fusionseg.callbacks.visuals import TensorBoardVisuals
from fusionseg.checkpoint_check import check_checkpoint
from fusionseg.data import SegDataModule
from fusionseg.evaluation import eval_rules
from fusionseg.lightning_private import find_last_checkpoints, pin_logger_version
from fusionseg.module import FusedSegModule

DEFAULT_CALLBACKS = {
    "metric_profiler": MetricProfiler,
    "last_checkpoint": LastCheckpoint,
    "best_checkpoint": BestCheckpoint,
    "lr_monitor": LearningRateLogger,
    "visuals": TensorBoardVisuals,
    "prediction_writer": SegPredictionWriter,
    "run_report": RunReport,
    "preemption": Preemption,
    "rng_states": RNGStates,
    "finite_guard": FiniteGuard,
}


def _num_classes(data: SegDataModule) -> int:
    return data.info.num_classes


def _thing_ids(data: SegDataModule) -> list[int]:
    return list(data.info.thing_ids)


def _class_names(data: SegDataModule) -> list[str]:
    return list(data.info.class_names)


def _eval_rules(data: SegDataModule) -> str:
    return eval_rules(data.info.name)  # the evaluated dataset's official protocol


def _is_local_file_arg(ckpt_path: Any) -> bool:
    """Whether a `--ckpt_path` value names a local file (not `last`, `best`, `hpc`, `registry` or a URL)."""
    keywords = ("last", "best", "hpc", "registry")
    return isinstance(ckpt_path, str) and ckpt_path not in keywords and "://" not in ckpt_path


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
        # RunReport prints the parameters by part (master, alignment, head, frozen aux); Lightning's layer
        # table adds a FLOPs column that reads 0 for this model. `--trainer.enable_model_summary true` brings it.
        parser.set_defaults({"trainer.enable_model_summary": False})
        parser.add_argument("--overwrite_checkpoints", type=bool, default=False,
                            help="fit: start afresh in a default_root_dir that holds another run's checkpoints")
        parser.link_arguments("data.task", "model.task")
        links = (("num_classes", _num_classes), ("thing_ids", _thing_ids), ("class_names", _class_names),
                 ("eval_rules", _eval_rules))
        for target, fn in links:
            parser.link_arguments("data", f"model.{target}", compute_fn=fn, apply_on="instantiate")

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads the --ckpt_path file's hyperparameters right after parsing: check the file first.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if _is_local_file_arg(ckpt_path):
            check_checkpoint(ckpt_path, model_class=FusedSegModule)

    @override
    def before_instantiate_classes(self) -> None:
        # With mode="replace" the master's branch at the injected stride produces features nobody uses, so
        # its parameters get no gradient; plain DDP refuses that. Lightning's own name for the fix:
        trainer = self.config[self.subcommand]["trainer"] if self.subcommand else self.config["trainer"]
        if trainer.get("strategy") == "ddp":
            trainer["strategy"] = "ddp_find_unused_parameters_true"

    # -- fit: one run per folder; --ckpt_path checked before Lightning reads it -------------------------
    @override
    def before_fit(self) -> None:
        from fusionseg.run_folder import check_run_folder

        ckpt_path = self._checked_ckpt_path()
        config = self.config_init[self.subcommand]
        folders = [cb.dirpath for cb in self._checkpoint_callbacks() if cb.dirpath]
        check_run_folder(self.trainer.default_root_dir, folders, config.get("ckpt_path"),
                         bool(config.get("overwrite_checkpoints")))
        if ckpt_path is not None:
            self._continue_logger_version(ckpt_path)

    @override
    def before_validate(self) -> None:
        self._checked_ckpt_path()

    @override
    def before_test(self) -> None:
        self._checked_ckpt_path()

    def _checked_ckpt_path(self) -> str | None:
        """The checkpoint file `--ckpt_path` names (`last`: the newest last.ckpt), checked; None when none."""
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path == "last":  # Lightning's rule: the newest last*.ckpt of the checkpoint callbacks
            found: set[str] = set()
            for callback in self._checkpoint_callbacks():
                found |= find_last_checkpoints(callback, self.trainer)
            ckpt_path = max(found, key=os.path.getmtime) if found else None
        elif not _is_local_file_arg(ckpt_path):
            ckpt_path = None  # Lightning's own keywords and remote files: left to Lightning
        if ckpt_path is not None:
            check_checkpoint(ckpt_path, self.model)
        return ckpt_path

    def _checkpoint_callbacks(self) -> list[Any]:
        """The trainer's checkpoint callbacks, their folders resolved (ours default to <root>/checkpoints)."""
        callbacks = list(self.trainer.checkpoint_callbacks)
        for callback in callbacks:
            if hasattr(callback, "resolve_dirpath"):
                callback.resolve_dirpath(self.trainer)
        return [cb for cb in callbacks if hasattr(cb, "dirpath")]

    def _continue_logger_version(self, ckpt_path: str) -> None:
        # The resumed run logs to the version the interrupted one did, not a new one.
        from fusionseg.run_folder import logger_version

        pin_logger_version(self.trainer.logger, logger_version(ckpt_path))

    # -- what the terminal and TensorBoard show ----------------------------------------------------------
    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Lightning's trainer with fusionseg's logger and progress bar where the config keeps the defaults:
        `TensorBoardRunLogger` (no `epoch` chart, no -1 `hp_metric`; none for `predict`, which logs nothing
        and would leave an empty run) and `StepProgressBar` (steps of the whole run)."""
        from lightning.pytorch.callbacks import ProgressBar
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        from fusionseg.callbacks.progress import StepProgressBar
        from fusionseg.callbacks.tensorboard import TensorBoardRunLogger

        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            root = config.get("default_root_dir") or os.getcwd()
            # As Lightning's default logger (a SLURM job's id as the version), minus the noise.
            kwargs["logger"] = False if self.subcommand == "predict" else TensorBoardRunLogger(
                save_dir=root, version=SLURMEnvironment.job_id())
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, StepProgressBar()]
        return super().instantiate_trainer(**kwargs)

    @override
    def after_fit(self) -> None:
        best = next((cb for cb in self.trainer.callbacks if isinstance(cb, BestCheckpoint)), None)
        configs = self.config[self.subcommand].get("config") or []
        if self.trainer.is_global_zero and best is not None and best.best_model_path:
            config = " ".join(f"--config {c}" for c in configs) or "..."
            print(f"Next: fusionseg validate {config} --ckpt_path {best.best_model_path}\n"
                  f"      fusionseg predict {config} --ckpt_path {best.best_model_path} --data.predict_root IMAGES\n",
                  flush=True)

    # -- predict: the writer saves every prediction; keeping them all in memory too would not scale -------
    @override
    def before_predict(self) -> None:
        self._checked_ckpt_path()
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
