"""Language models: Stage 1 (planar complex32), the Phase 2 baseline and a GPT reference, with a registry."""

from muse.models.gpt import GPTConfig, GPTModel, KVCache
from muse.models.phase2 import Phase2Block, Phase2Config, Phase2Model
from muse.models.registry import MODELS, build_model, make_config, model_names
from muse.models.stage1 import (
    Phase3Stage1Block,
    Phase3Stage1Config,
    Phase3Stage1Model,
    Stage1Block,
    Stage1Config,
    Stage1Model,
    create_phase3_stage1_model,
)

__all__ = [
    "GPTConfig", "GPTModel", "KVCache", "MODELS", "Phase2Block", "Phase2Config", "Phase2Model",
    "Phase3Stage1Block", "Phase3Stage1Config", "Phase3Stage1Model", "Stage1Block", "Stage1Config",
    "Stage1Model", "build_model", "create_phase3_stage1_model", "make_config", "model_names",
]
