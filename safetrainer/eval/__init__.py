"""Evaluation: refusal judges, batched generation, prompt suites, refusal rate / ASR and utility measurements."""

from .embedding_judge import EmbeddingRefusalJudge, fit_embedding_judge, refusal_features, save_judge
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
    judge_with_confidence,
    load_judge,
)
from .suites import SUITES, PromptSet, load_prompts, shared_data_dir

__all__ = [
    "DEFAULT_REFUSAL_PHRASES",
    "GCG_REFUSAL_PREFIXES",
    "SUITES",
    "ClassifierRefusalJudge",
    "EmbeddingRefusalJudge",
    "GuardRefusalJudge",
    "KeywordRefusalJudge",
    "PromptSet",
    "RefusalJudge",
    "evaluate_refusals",
    "fit_embedding_judge",
    "generate",
    "gsm8k_exact_match",
    "judge_pairs",
    "judge_with_confidence",
    "load_judge",
    "load_prompts",
    "refusal_features",
    "refusal_metrics",
    "response_nll",
    "save_judge",
    "shared_data_dir",
]
