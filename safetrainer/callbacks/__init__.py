"""Trainer callbacks."""

from .online_fihs import OnlineFIHSCallback
from .safety_eval import SafetyEvalCallback

__all__ = ["OnlineFIHSCallback", "SafetyEvalCallback"]
