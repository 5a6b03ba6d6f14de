"""Where the callbacks write their summaries, the tags they share, and the TensorBoard logger of a run.

TensorBoard comes first: `TensorBoardRunLogger` is the CLI's logger, and `custom_scalars_layout` orders
the Custom Scalars tab (losses and the headline metric first). Pictures and texts go through
`log_image` / `log_text`, which reach every logger of the trainer: TensorBoard directly, a logger with
its own `log_image`/`log_text` (e.g. Weights & Biases) through that, any other (e.g. CSVLogger) as
files under its log folder (`images/<tag>/step_<step>.png`, `text/<tag>.md`), said once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.tensorboard import SummaryWriter
from typing_extensions import override

HP_METRIC = "hp_metric"  # the name TensorBoard's HParams tab shows; fusionseg logs the headline metric under it


def tensorboard_writer(trainer: Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the trainer's first TensorBoardLogger, on global rank 0; else None."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def feature_tag(metric: str, role: str, stride: int) -> str:
    """Scalar tag of a metric measured during training on the fixed validation images: `features/ef/fused/os16`."""
    return f"features/{metric}/{role}/os{stride}"


def feature_run_tag(metric: str, stride: int) -> str:
    """Tag of a feature metric in its role's own TensorBoard run (`<version>/fused`): `features/ef/os16`."""
    return f"features/{metric}/os{stride}"


def custom_scalars_layout(strides: tuple[int, ...] = (4, 8, 16, 32), headline: str | None = None,
                          excluded: dict[int, str] | None = None, validation: Sequence[str] | None = None
                          ) -> dict[str, dict[str, list]]:
    """TensorBoard custom-scalars layout, in reading order: losses, the headline metric and the other
    validation metrics, learning rates, then SC and EF per stride (master/aux/fused in one chart each).

    TensorBoard colours lines by run, so a chart reads best with one line per run: one chart per loss
    term and per validation metric; the feature metrics' roles are runs of their own (see
    `TensorBoardVisuals`), three coloured lines per chart. `excluded` maps strides that are not measured
    to the reason: they get no chart (rather than a misleading 0) and the section's title says why.
    `validation` names the validation metrics after the headline one (default: all `val/<name>` in one chart).
    """
    excluded = excluded or {}
    charts: dict[str, list] = {}
    if headline is not None:
        charts[f"{headline} (headline metric)"] = ["Multiline", [rf"^val/{re.escape(headline)}$"]]
    for name in validation if validation is not None else ():
        if name != headline:
            charts[name.replace("_", " ")] = ["Multiline", [rf"^val/{re.escape(name)}$"]]
    if validation is None:
        charts["all validation metrics"] = ["Multiline", [r"^val/[^/]+$"]]
    layout: dict[str, dict[str, list]] = {
        "Training losses": {
            "total loss": ["Multiline", [r"^train/loss$"]],
            **{f"{what} loss ({term})": ["Multiline", [rf"^train/{term}$"]]
               for what, term in (("class", "loss_ce"), ("mask", "loss_mask"), ("dice", "loss_dice"))},
        },
        "Validation": charts,
        # The *_no_decay groups share their group's rate: one line each is enough.
        "Learning rates": {"master (backbone)": ["Multiline", [r"^lr-[^/]+/backbone$"]],
                           "head and alignment": ["Multiline", [r"^lr-[^/]+/head$"]],
                           "other parameter groups": ["Multiline", [r"^lr-[^/]+$", r"^lr-[^/]+/(?!backbone|head)[^/]*$"]]},
    }
    skipped = ""
    if excluded:
        skipped = f" (not measured at {', '.join(f'OS {s}' for s in sorted(excluded))}: {'; '.join(excluded.values())})"
    for metric, title in (("sc", "Structural Coherence (SC), master / aux / fused"),
                          ("ef", "Edge Fidelity (EF), master / aux / fused")):
        layout[title + skipped] = {f"{metric.upper()} at OS {s}": ["Multiline", [rf"^features/{metric}/([a-z]+/)?os{s}$"]]
                                   for s in strides if s not in excluded}
    return layout


class TensorBoardRunLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger without the noise a reader has to skip.

    - No `epoch` scalar: Lightning adds it to every log call, but runs here are counted in steps.
    - `hp_metric` is declared for the HParams tab without Lightning's `-1` placeholder point; the
      `RunReport` callback logs the best headline metric under it after each validation.
    - No private hyperparameters (LightningCLI's `_instantiator`) among the HParams tab's columns.
    """

    _declaring_hparams = False

    @override
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        drop = {"epoch", HP_METRIC} if self._declaring_hparams else {"epoch"}
        kept = {k: v for k, v in metrics.items() if k not in drop}
        if kept:
            super().log_metrics(kept, step)

    @override
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        if isinstance(params, Mapping):  # LightningCLI's `_instantiator` and other private keys: HParams columns of noise
            params = {k: v for k, v in params.items() if not str(k).startswith("_")}
        self._declaring_hparams = metrics is None  # Lightning's own call, which would write hp_metric = -1
        try:
            super().log_hyperparams(params, metrics, step)
        finally:
            self._declaring_hparams = False


# -- pictures and texts for any logger ---------------------------------------------------------------------
_SAID_FILES: set[str] = set()  # loggers already told that pictures go to files


def _file_safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") or "untitled"


def artifact_dir(logger: Logger) -> Path | None:
    """The folder a logger writes its run into (`log_dir`, else `save_dir`), or None when it has none."""
    folder = getattr(logger, "log_dir", None) or logger.save_dir
    return Path(folder) if folder else None


def _as_files(logger: Logger) -> Path | None:
    folder = artifact_dir(logger)
    key = f"{type(logger).__name__}:{folder}"
    if key not in _SAID_FILES:
        _SAID_FILES.add(key)
        where = f"as files under {folder}/{{images,text}}/" if folder else "nowhere (it has no folder): skipped"
        rank_zero_info(f"{type(logger).__name__} takes no pictures or texts; fusionseg writes them {where}")
    return folder


def log_image(trainer: Trainer, tag: str, image: np.ndarray, step: int) -> None:
    """An `(H, W, 3)` uint8 picture to every logger of the trainer (global rank 0 only)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif callable(getattr(logger, "log_image", None)):
            logger.log_image(key=tag, images=[image], step=step)
        elif (folder := _as_files(logger)) is not None:
            path = folder / "images" / _file_safe(tag) / f"step_{step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)


def log_text(trainer: Trainer, tag: str, text: str, step: int) -> None:
    """A Markdown text to every logger of the trainer (global rank 0 only); files keep the latest."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(tag, text, step)
        elif callable(getattr(logger, "log_text", None)):
            logger.log_text(key=tag, columns=["text"], data=[[text]], step=step)
        elif (folder := _as_files(logger)) is not None:
            path = folder / "text" / f"{_file_safe(tag)}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def log_scalars(trainer: Trainer, values: dict[str, float], step: int) -> None:
    """Scalars to every logger (each logger's own `log_metrics`; global rank 0 only)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        logger.log_metrics(values, step)


def flush(trainer: Trainer) -> None:
    """Write what the loggers hold (TensorBoard buffers events; CSVLogger buffers rows)."""
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.save()
