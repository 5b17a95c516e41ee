import pytest
import yaml
from trl import TrlParser

from safetrainer import SafetyAwareSFTConfig
from safetrainer.config import SCORER_NAMES
from safetrainer.scoring import SCORERS


def make(tmp_path, **kwargs):
    return SafetyAwareSFTConfig(output_dir=str(tmp_path), report_to="none", **kwargs)


def test_defaults_disable_filtering(tmp_path):
    args = make(tmp_path)
    assert args.safety_scorers == [] and not args.filter_enabled
    assert args.safety_threshold_policy == "top_fraction" and args.safety_threshold_value == 0.1


def test_cpu_turns_off_bf16_and_checkpointing_unless_set(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("safetrainer.config._has_accelerator", lambda: False)
    with caplog.at_level("WARNING"):
        args = make(tmp_path)
    assert args.bf16 is False and args.gradient_checkpointing is False
    assert "bf16 and gradient_checkpointing turned off" in caplog.text
    explicit = make(tmp_path, gradient_checkpointing=True)
    assert explicit.gradient_checkpointing is True


def test_accelerator_keeps_trl_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr("safetrainer.config._has_accelerator", lambda: True)
    args = SafetyAwareSFTConfig(output_dir=str(tmp_path), use_cpu=False, report_to="none", bf16=False)
    assert args.gradient_checkpointing is True


def test_scorers_accept_comma_string_and_list(tmp_path):
    assert make(tmp_path, safety_scorers="DataShield, ").safety_scorers == ["datashield"]
    assert make(tmp_path, safety_scorers=["datashield"]).safety_scorers == ["datashield"]


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"safety_scorers": "datashield,nope"}, "safety_scorers", "datashield, saft, fihs, seal"),
        ({"safety_scorers": "datashield,datashield"}, "safety_scorers", "once"),
        ({"safety_threshold_policy": "median"}, "safety_threshold_policy", "top_fraction, top_k, absolute, adaptive"),
        ({"safety_threshold_value": 1.0}, "safety_threshold_value", "[0, 1)"),
        ({"safety_threshold_value": -0.1}, "safety_threshold_value", "[0, 1)"),
        ({"safety_threshold_policy": "top_k", "safety_threshold_value": 2.5}, "safety_threshold_value", "integer"),
        (
            {"safety_threshold_policy": "absolute", "safety_threshold_value": float("nan")},
            "safety_threshold_value",
            "finite",
        ),
        ({"safety_invalid_rows": "skip"}, "safety_invalid_rows", "error, reject"),
        ({"safety_layer": -1}, "safety_layer", ">= 0"),
        ({"safety_scoring_batch_size": 0}, "safety_scoring_batch_size", ">= 1"),
        ({"safety_fihs_probe": "kl"}, "safety_fihs_probe", "logit_gap, nll, nll_contrast"),
        ({"safety_fihs_similarity": "l2"}, "safety_fihs_similarity", "dot, cosine"),
        ({"safety_fihs_tokens": "Sure"}, "safety_fihs_tokens", "two different"),
        ({"safety_fihs_tokens": ["I", "I"]}, "safety_fihs_tokens", "two different"),
        ({"safety_projection_dim": -1}, "safety_projection_dim", ">= 0"),
        ({"safety_gmm_margin": -1.0}, "safety_gmm_margin", ">= 0"),
        ({"safety_saft_k": 0}, "safety_saft_k", ">= 1"),
        ({"safety_gradient_blocks": 0}, "safety_gradient_blocks", ">= 1"),
        ({"safety_seal_epochs": 0}, "safety_seal_epochs", ">= 1"),
        ({"safety_scorers": "classifier"}, "safety_classifier", "model id"),
        ({"safety_mix_harmful_classifier": "wildguard"}, "safety_mix_harmful_classifier", "probe"),
        ({"safety_mix_contrast_pool": "x.jsonl"}, "safety_mix_contrast_pool", "safety_mix_pool"),
        ({"safety_mix_pool": "p.jsonl", "safety_mix_contrast_ratio": 0}, "safety_mix_contrast_ratio", "> 0"),
        ({"safety_mix_contrast_pairing": "closest"}, "safety_mix_contrast_pairing", "random, nearest"),
    ],
)
def test_invalid_values_name_the_field_and_allowed_values(tmp_path, kwargs, field, allowed):
    with pytest.raises(ValueError) as err:
        make(tmp_path, **kwargs)
    assert field in str(err.value) and allowed in str(err.value)


def test_absolute_threshold_takes_any_finite_value(tmp_path):
    assert (
        make(tmp_path, safety_threshold_policy="absolute", safety_threshold_value=-3.5).safety_threshold_value == -3.5
    )


def test_yaml_config_with_cli_override(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "out"),
                "safety_scorers": ["datashield"],
                "safety_threshold_policy": "top_k",
                "safety_threshold_value": 3,
                "report_to": "none",
            }
        )
    )
    (args,) = TrlParser((SafetyAwareSFTConfig,)).parse_args_and_config(
        args=["--config", str(config), "--safety_threshold_value", "5"]
    )
    assert isinstance(args, SafetyAwareSFTConfig)
    assert args.safety_scorers == ["datashield"] and args.safety_threshold_policy == "top_k"
    assert args.safety_threshold_value == 5


def test_yaml_invalid_value_is_reported(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(tmp_path), "safety_scorers": "unknown"}))
    with pytest.raises(ValueError, match="safety_scorers"):
        TrlParser((SafetyAwareSFTConfig,)).parse_args_and_config(args=["--config", str(config)])


def test_scorer_registry_matches_config():
    assert tuple(SCORERS) == SCORER_NAMES


def test_safety_dict_lists_only_safety_fields(tmp_path):
    d = make(tmp_path).safety_dict()
    assert d and all(k.startswith("safety_") for k in d)


def test_fihs_tokens_accept_a_comma_string(tmp_path):
    assert make(tmp_path, safety_fihs_tokens="Sure,I").safety_fihs_tokens == ["Sure", "I"]
