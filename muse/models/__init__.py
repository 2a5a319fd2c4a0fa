"""Language models: Stage 1 (planar complex32) and the Phase 2 baseline."""

from muse.models.stage1 import (
    Phase3Stage1Block,
    Phase3Stage1Config,
    Phase3Stage1Model,
    create_phase3_stage1_model,
)

__all__ = ["Phase3Stage1Block", "Phase3Stage1Config", "Phase3Stage1Model", "create_phase3_stage1_model"]
