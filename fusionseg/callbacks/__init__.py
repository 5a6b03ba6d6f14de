"""Lightning callbacks of a fusionseg run: profiling and the plan, checkpoints, TensorBoard visuals, predictions."""

from fusionseg.callbacks.checkpointing import BestCheckpoint, LastCheckpoint, main_metric
from fusionseg.callbacks.learning_rates import LearningRateLogger
from fusionseg.callbacks.prediction_writer import SegPredictionWriter
from fusionseg.callbacks.profile_cache import ProfileCache
from fusionseg.callbacks.profiler import MetricProfiler
from fusionseg.callbacks.visuals import TensorBoardVisuals

__all__ = [
    "BestCheckpoint",
    "LastCheckpoint",
    "LearningRateLogger",
    "MetricProfiler",
    "ProfileCache",
    "SegPredictionWriter",
    "TensorBoardVisuals",
    "main_metric",
]
