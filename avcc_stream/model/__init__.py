"""The CC-AV / CC-V model of the paper, its baselines, losses and checkpoints.

    from avcc_stream.model import ModelConfig, build_model, ModelOutput
    cfg = ModelConfig.from_preset("cc-av-lowres")
    out = build_model(cfg)(images, audio)   # B x 3 x H x W, B x 16000 (or None for CC-V)
"""

from avcc_stream.model.config import ABLATIONS, PRESETS, ModelConfig, ablation_config
from avcc_stream.model.network import CrowdCounter, build_model
from avcc_stream.model.output import ModelOutput, patch_sums

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "CrowdCounter",
    "ModelConfig",
    "ModelOutput",
    "ablation_config",
    "build_model",
    "patch_sums",
]
