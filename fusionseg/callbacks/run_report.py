"""RunReport: what `fit` tells the terminal around training, and the headline metric for TensorBoard's HParams tab.

- Before the first step (after the plan's report): the parameters by part (master, alignment, head;
  the frozen aux) instead of Lightning's layer table, and where the run's files go.
- After each validation: `hp_metric` = the best headline metric so far (what the best checkpoint
  holds), to every logger.
- When fit ends: the best and the last checkpoint with their headline metric, the per-class table of
  the last validation, and the paths of checkpoints, logs and profile.

Only global rank 0 prints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_summary import get_human_readable_count as _readable
from torch import nn
from typing_extensions import override

from fusionseg.callbacks.checkpointing import BestCheckpoint, LastCheckpoint, main_metric
from fusionseg.callbacks.profile_report import profile_folder
from fusionseg.callbacks.tensorboard import HP_METRIC, log_scalars


def get_human_readable_count(n: int) -> str:
    return _readable(n).strip()  # Lightning pads small counts to a column width


def _count(module: nn.Module | None, trainable: bool) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def parameter_parts(pl_module: LightningModule) -> str:
    """`56.5 K parameters: 55.0 K trained (master regions 1.2 K, alignment 0.5 K, head 53.9 K), 1.5 K frozen (aux edges)`."""
    pyramid = getattr(pl_module, "pyramid", None)
    parts = {
        f"master {pl_module.master_spec.name}": pl_module.master,
        f"aux {pl_module.aux_spec.name}" if pl_module.aux_spec is not None else "aux": pl_module.aux,
        "alignment": getattr(pyramid, "align", None),
        "head": getattr(pl_module, "head", None),
    }
    trained = {name: _count(m, True) for name, m in parts.items()}
    frozen = {name: _count(m, False) for name, m in parts.items()}
    total = sum(p.numel() for p in pl_module.parameters())

    def listing(counts: dict[str, int]) -> str:
        shown = [f"{name} {get_human_readable_count(n)}" for name, n in counts.items() if n]
        return f" ({', '.join(shown)})" if shown else ""

    return (f"{get_human_readable_count(total)} parameters: {get_human_readable_count(sum(trained.values()))} trained"
            f"{listing(trained)}, {get_human_readable_count(sum(frozen.values()))} frozen{listing(frozen)}")


def log_folders(trainer: Trainer) -> list[str]:
    """Where each logger writes, with the command that shows TensorBoard's."""
    out = []
    for logger in trainer.loggers:
        folder = getattr(logger, "log_dir", None) or logger.save_dir
        if isinstance(logger, TensorBoardLogger):
            out.append(f"{folder}   (tensorboard --logdir {Path(logger.root_dir).parent}: Custom Scalars has the "
                       "losses and the headline metric first)")
        elif folder:
            out.append(f"{folder}   ({type(logger).__name__})")
    return out


class RunReport(Callback):
    """The run's report in the terminal and `hp_metric` for the HParams tab (see the module docstring).

    Args:
        summary: print the parameters before the first step and the closing summary.
    """

    def __init__(self, summary: bool = True) -> None:
        self.summary = summary
        self.validations: list[tuple[int, float]] = []  # (step, headline metric), kept across resumes

    def _monitor(self, trainer: Trainer, pl_module: LightningModule) -> tuple[str, str]:
        best = self._best_callback(trainer)
        if best is not None and best.monitor and best.monitor != "auto":
            return best.monitor, best.mode
        return main_metric(pl_module.task), "max"

    @staticmethod
    def _best_callback(trainer: Trainer) -> BestCheckpoint | None:
        return next((cb for cb in trainer.callbacks if isinstance(cb, BestCheckpoint)), None)

    # -- before the first step (and before the progress bar starts) ------------------------------------------
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (self.summary and trainer.is_global_zero):
            return
        lines = [f"Model: {parameter_parts(pl_module)}"]
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        until = f"until step {total}" if total else f"for {trainer.max_epochs} epochs"
        resume = f", resuming from {trainer.ckpt_path}" if trainer.ckpt_path else ""
        every = trainer.val_check_interval
        validation = f"validation every {every} steps" if isinstance(every, int) else "validation every epoch"
        lines.append(f"Training {until}{resume}; {validation}; the best checkpoint by "
                     f"{self._monitor(trainer, pl_module)[0]}")
        lines += [f"  {line}" for line in self._files(trainer)]
        print("\n".join(lines) + "\n", flush=True)

    def _files(self, trainer: Trainer) -> list[str]:
        lines = []
        folders = sorted({str(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)})
        if folders:
            lines.append(f"checkpoints  {', '.join(folders)}")
        lines += [f"logs         {line}" for line in log_folders(trainer)]
        if profile_folder(trainer).is_dir():
            lines.append(f"profile      {profile_folder(trainer)}   (profile.json, plan.json, profile.png)")
        return lines

    # -- after each validation ----------------------------------------------------------------------
    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        monitor, mode = self._monitor(trainer, pl_module)
        value = trainer.callback_metrics.get(monitor)
        if value is None:
            return
        self.validations.append((trainer.global_step, float(value)))
        finite = [v for _, v in self.validations if math.isfinite(v)]
        if finite:
            log_scalars(trainer, {HP_METRIC: max(finite) if mode == "max" else min(finite)}, trainer.global_step)

    # -- when fit ends -----------------------------------------------------------------------------------
    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.summary and trainer.is_global_zero:
            print("\n" + self.closing_summary(trainer, pl_module) + "\n", flush=True)

    def closing_summary(self, trainer: Trainer, pl_module: LightningModule) -> str:
        """The best and last checkpoints with their metric, the per-class table, and where the files are."""
        from fusionseg.evaluation.table import format_results

        monitor, mode = self._monitor(trainer, pl_module)
        name = monitor.split("/")[-1]
        step = trainer.global_step
        reached = trainer.max_steps is not None and 0 < trainer.max_steps <= step
        lines = [f"fit finished at step {step}" + (" (max_steps reached)" if reached else " (stopped early)")]
        best_cb = self._best_callback(trainer)
        if best_cb is not None and best_cb.best_model_path:
            score = float(best_cb.best_model_score) if best_cb.best_model_score is not None else math.nan
            best_step = next((s for s, v in self.validations if v == score), None)
            at = f"step {best_step}" if best_step is not None else "best"
            lines.append(f"  best   {at:>10}  {name} {score:.1f}   {best_cb.best_model_path}")
        last_cb = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
        if last_cb is not None and last_cb.last_model_path:
            validated = [(s, v) for s, v in self.validations if s == step]
            if validated:
                metric = f"{name} {validated[-1][1]:.1f}"
            elif self.validations:
                metric = f"(last validated at step {self.validations[-1][0]}: {name} {self.validations[-1][1]:.1f})"
            else:
                metric = "(not validated)"
            lines.append(f"  last   {'step ' + str(step):>10}  {metric}   {last_cb.last_model_path}")
        results = {k[4:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if results and self.validations:
            names = pl_module.class_names or [f"class_{i}" for i in range(pl_module.num_classes)]
            lines += ["", f"Validation at step {self.validations[-1][0]} ({pl_module.task}):",
                      format_results(pl_module.task, results, names)]
        lines += ["", "Files:", *(f"  {line}" for line in self._files(trainer))]
        return "\n".join(lines)

    # -- checkpoints: a resumed run remembers the earlier validations ------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"validations": list(self.validations)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = [(int(s), float(v)) for s, v in state_dict.get("validations", [])]
