"""Language models: Stage 1 (planar complex32) and the Phase 2 baseline."""

from muse.models.stage1 import (
    Phase3Stage1Block,
    Phase3Stage1Config,
    Phase3Stage1Model,
    create_phase3_stage1_model,
)

__all__ = ["Phase3Stage1Block", "Phase3Stage1Config", "Phase3Stage1Model", "create_phase3_stage1_model"]
from muse.models.registry import MODELS, build_model, make_config, model_names  # noqa: E402

__all__ += ["MODELS", "build_model", "make_config", "model_names"]
