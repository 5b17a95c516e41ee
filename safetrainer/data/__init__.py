"""Data: loading from built-ins, files or the Hub; format detection, row checks and `sample_idx`."""

from .collator import SampleIdxCollator
from .examples import trained_example
from .formats import (
    CONVERTED_FORMATS,
    SAMPLE_IDX,
    PreparedInput,
    detect_format,
    input_format,
    mixed_row_format,
    pair_texts,
    prepare_input,
    preview_text,
    rows_like,
    to_prompt_completion,
)
from .loading import BUILTIN_PREFIX, builtin_names, load_data
from .tokenization import TokenizedPair, chat_pair, tokenize_pair

__all__ = [
    "BUILTIN_PREFIX",
    "CONVERTED_FORMATS",
    "SAMPLE_IDX",
    "PreparedInput",
    "SampleIdxCollator",
    "TokenizedPair",
    "builtin_names",
    "chat_pair",
    "detect_format",
    "input_format",
    "mixed_row_format",
    "load_data",
    "pair_texts",
    "prepare_input",
    "preview_text",
    "rows_like",
    "to_prompt_completion",
    "tokenize_pair",
    "trained_example",
]
