"""Lightning callbacks of a fusionseg run: profiling and the plan, checkpoints, TensorBoard visuals, predictions."""

from fusionseg.callbacks.checkpointing import AtomicCheckpointIO, BestCheckpoint, LastCheckpoint, main_metric
from fusionseg.callbacks.learning_rates import LearningRateLogger
from fusionseg.callbacks.prediction_writer import SegPredictionWriter
from fusionseg.callbacks.preemption import Preempted, Preemption
from fusionseg.callbacks.profile_cache import ProfileCache
from fusionseg.callbacks.profiler import MetricProfiler
from fusionseg.callbacks.rng_state import RNGStates
from fusionseg.callbacks.visuals import TensorBoardVisuals

__all__ = [
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "LastCheckpoint",
    "LearningRateLogger",
    "MetricProfiler",
    "Preempted",
    "Preemption",
    "ProfileCache",
    "RNGStates",
    "SegPredictionWriter",
    "TensorBoardVisuals",
    "main_metric",
]
