"""Trainer callbacks."""

from .safety_eval import SafetyEvalCallback

__all__ = ["SafetyEvalCallback"]
