"""safetrainer: safety-aware supervised fine-tuning as a drop-in for TRL's SFTTrainer.

Swap `SFTTrainer` for `SafetyAwareSFTTrainer` and `SFTConfig` for `SafetyAwareSFTConfig`; set `safety_scorers` to
score every training sample, drop the riskiest before training, and get a report of every sample's fate.
"""

from .callbacks import SafetyEvalCallback
from .config import SafetyAwareSFTConfig
from .data import load_data
from .distributed import end_distributed_training
from .models import DEFAULT_MODEL_ID, resolve_model_path
from .trainer import SafetyAwareSFTTrainer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL_ID",
    "SafetyAwareSFTConfig",
    "SafetyAwareSFTTrainer",
    "SafetyEvalCallback",
    "end_distributed_training",
    "load_data",
    "resolve_model_path",
]
