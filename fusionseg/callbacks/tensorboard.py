"""Where the callbacks write TensorBoard summaries, and the tags they share."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter


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


def custom_scalars_layout(strides: tuple[int, ...] = (4, 8, 16, 32)) -> dict[str, dict[str, list]]:
    """TensorBoard custom-scalars layout: SC and EF per stride, master/aux/fused in one chart each.

    Charts match tags by regular expression, so the profile-time values and the values measured
    during training share a chart.
    """
    layout: dict[str, dict[str, list]] = {}
    for metric, title in (("sc", "Structural Coherence (SC)"), ("ef", "Edge Fidelity (EF)")):
        layout[title] = {
            f"{metric.upper()} at OS {s}": ["Multiline", [rf"^(profile|features)/{metric}/[a-z]+/os{s}$"]]
            for s in strides
        }
    layout["Training"] = {
        "losses": ["Multiline", [r"^train/loss"]],
        "learning rates": ["Multiline", [r"^lr-"]],
    }
    layout["Validation"] = {"metrics": ["Multiline", [r"^val/"]]}
    return layout
