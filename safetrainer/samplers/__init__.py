"""Behavior-aware safety mixing: safety pools typed T1..T4, harm categories, and budgeted samplers."""

from .categories import CATEGORY_METHODS, DEFAULT_CATEGORY_REFERENCE, assign_categories
from .embedding import MODEL_EMBEDDER, Embedder, ModelEmbedder, SentenceEmbedder, resolve_embedder_name
from .harm_probe import HarmfulInstructionProbe
from .mixing import MIX_COLUMNS, SafetyMix, select_safety_mix
from .pool import BEHAVIOR_TYPES, SafetyPool, behavior_type, load_pool
from .strategies import STRATEGIES, parse_strategy, resolve_budget

__all__ = [
    "BEHAVIOR_TYPES",
    "CATEGORY_METHODS",
    "DEFAULT_CATEGORY_REFERENCE",
    "MIX_COLUMNS",
    "STRATEGIES",
    "Embedder",
    "HarmfulInstructionProbe",
    "MODEL_EMBEDDER",
    "ModelEmbedder",
    "SafetyMix",
    "SafetyPool",
    "SentenceEmbedder",
    "assign_categories",
    "behavior_type",
    "load_pool",
    "parse_strategy",
    "resolve_budget",
    "resolve_embedder_name",
    "select_safety_mix",
]
