"""Evaluation: refusal judges, batched generation, prompt suites, refusal rate / ASR and utility measurements."""

from .evaluate import evaluate_refusals, gsm8k_exact_match, refusal_metrics, response_nll
from .generation import generate
from .judge import (
    DEFAULT_REFUSAL_PHRASES,
    GCG_REFUSAL_PREFIXES,
    ClassifierRefusalJudge,
    GuardRefusalJudge,
    KeywordRefusalJudge,
    RefusalJudge,
    judge_pairs,
    load_judge,
)
from .suites import SUITES, PromptSet, load_prompts, shared_data_dir

__all__ = [
    "DEFAULT_REFUSAL_PHRASES",
    "GCG_REFUSAL_PREFIXES",
    "SUITES",
    "ClassifierRefusalJudge",
    "GuardRefusalJudge",
    "KeywordRefusalJudge",
    "PromptSet",
    "RefusalJudge",
    "evaluate_refusals",
    "generate",
    "gsm8k_exact_match",
    "judge_pairs",
    "load_judge",
    "load_prompts",
    "refusal_metrics",
    "response_nll",
    "shared_data_dir",
]
