"""Training: the loss, LR schedule, mixed-precision AdamW, checkpoints, evaluation and the loop."""

from muse.train.checkpoint import Checkpoint, atomic_save, load_checkpoint
from muse.train.config import TrainConfig
from muse.train.evaluate import evaluate
from muse.train.loss import IGNORE_INDEX, lm_loss
from muse.train.optim import (
    FullPrecisionOptimizer,
    MixedPrecisionOptimizer,
    StepResult,
    decay_parameter_names,
)
from muse.train.scaler import DynamicLossScaler
from muse.train.schedule import lr_at
from muse.train.trainer import Trainer, TrainingError, train

__all__ = [
    "IGNORE_INDEX", "Checkpoint", "DynamicLossScaler", "FullPrecisionOptimizer", "MixedPrecisionOptimizer",
    "StepResult", "TrainConfig", "Trainer", "TrainingError", "atomic_save", "decay_parameter_names",
    "evaluate", "load_checkpoint", "lm_loss", "lr_at", "train",
]
