"""Where the callbacks write their summaries, the tags they share, and the TensorBoard logger of a run.

TensorBoard comes first: `TensorBoardRunLogger` is the CLI's logger, and `custom_scalars_layout` orders
the Custom Scalars tab (losses and the headline metric first). Pictures and texts go through
`log_image` / `log_text`, which reach every logger of the trainer: TensorBoard directly, a logger with
its own `log_image`/`log_text` (e.g. Weights & Biases) through that, any other (e.g. CSVLogger) as
files under its log folder (`images/<tag>/step_<step>.png`, `text/<tag>.md`), said once.
"""

from __future__ import annotations

import re
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


def profile_tag(metric: str, role: str, stride: int) -> str:
    """Scalar tag of a metric measured when the encoders are profiled: `profile/sc/master/os16`."""
    return f"profile/{metric}/{role}/os{stride}"


def feature_tag(metric: str, role: str, stride: int) -> str:
    """Scalar tag of a metric measured during training on the fixed validation images: `features/ef/fused/os16`."""
    return f"features/{metric}/{role}/os{stride}"


def custom_scalars_layout(strides: tuple[int, ...] = (4, 8, 16, 32), headline: str | None = None,
                          excluded: dict[int, str] | None = None) -> dict[str, dict[str, list]]:
    """TensorBoard custom-scalars layout, in reading order: losses, the headline metric and the other
    validation metrics, learning rates, then SC and EF per stride (master/aux/fused in one chart each).

    Charts match tags by regular expression, so the profile-time values and the values measured
    during training share a chart. `excluded` maps strides that are not measured to the reason, shown
    in the chart's title (nothing is plotted there, rather than a misleading 0).
    """
    excluded = excluded or {}
    validation: dict[str, list] = {}
    if headline is not None:
        validation[f"{headline} (headline metric)"] = ["Multiline", [rf"^val/{re.escape(headline)}$"]]
    validation["all validation metrics"] = ["Multiline", [r"^val/[^/]+$"]]
    layout: dict[str, dict[str, list]] = {
        "Training losses": {
            "total loss": ["Multiline", [r"^train/loss$"]],
            "loss terms (class, mask, dice)": ["Multiline", [r"^train/loss_"]],
        },
        "Validation": validation,
        "Learning rates": {"per parameter group": ["Multiline", [r"^lr-"]]},
    }
    for metric, title in (("sc", "Structural Coherence (SC), master / aux / fused"),
                          ("ef", "Edge Fidelity (EF), master / aux / fused")):
        charts = {}
        for s in strides:
            name = f"{metric.upper()} at OS {s}"
            if s in excluded:
                name += f" (not measured: {excluded[s]})"
            charts[name] = ["Multiline", [rf"^(profile|features)/{metric}/[a-z]+/os{s}$"]]
        layout[title] = charts
    return layout


class TensorBoardRunLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger without the noise a reader has to skip.

    - No `epoch` scalar: Lightning adds it to every log call, but runs here are counted in steps.
    - `hp_metric` is declared for the HParams tab without Lightning's `-1` placeholder point; the
      `RunReport`/visuals callbacks log the headline metric under it after each validation.
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


def _as_files(logger: Logger, kind: str) -> Path | None:
    folder = artifact_dir(logger)
    key = f"{type(logger).__name__}:{folder}"
    if key not in _SAID_FILES:
        _SAID_FILES.add(key)
        where = f"as files under {folder}/{{images,text}}/" if folder else "nowhere (it has no folder): skipped"
        rank_zero_info(f"{type(logger).__name__} takes no pictures or texts; fusionseg writes its {kind} {where}")
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
        elif (folder := _as_files(logger, "pictures")) is not None:
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
        elif (folder := _as_files(logger, "texts")) is not None:
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
