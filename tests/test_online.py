"""Online FIHS re-scoring: exact step counts and schedule, masking, sidecar resume, report, bad configs."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer
from safetrainer.samplers.active_set import ActiveSet, ConstantLengthSampler

from .conftest import make_tiny_llama
from .test_trainer import COMMON, alpaca_rows

ONLINE = dict(safety_online_every_steps=2, safety_online_threshold_policy="top_fraction",
              safety_online_threshold_value=0.25)  # fmt: skip


def online_trainer(tokenizer, out, **kwargs):
    settings = {**COMMON, "num_train_epochs": 2, "per_device_train_batch_size": 4, "lr_scheduler_type": "linear",
                "save_strategy": "no", **kwargs}  # fmt: skip
    args = SafetyAwareSFTConfig(output_dir=str(out), **settings)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    rows = Dataset.from_list(alpaca_rows(16))
    return SafetyAwareSFTTrainer(make_tiny_llama(tokenizer), args=args, train_dataset=rows, processing_class=tokenizer,
                                 peft_config=lora)  # fmt: skip


def final_lr(trainer):
    return trainer.lr_scheduler.get_last_lr()[0]


@pytest.mark.parametrize("mode", ["cheap", "full"])
def test_online_drops_keep_step_count_and_schedule_exact(tokenizer, tmp_path, mode):
    plain = online_trainer(tokenizer, tmp_path / "plain")
    plain.train()
    online = online_trainer(tokenizer, tmp_path / mode, safety_online_mode=mode, **ONLINE)
    online.train()
    assert online.state.global_step == plain.state.global_step == 8  # 16 rows / batch 4 x 2 epochs
    assert final_lr(online) == pytest.approx(final_lr(plain)) and online.state.epoch == pytest.approx(2.0)
    dropped = online._online.active.dropped
    assert 1 <= len(dropped) <= 4  # top 25% of the scored samples, decided over all scores so far
    table = pq.read_table(tmp_path / mode / "safety_report" / "scores.parquet").to_pydict()
    summary = json.loads((tmp_path / mode / "safety_report" / "summary.json").read_text())
    assert summary["counts"]["dropped"] == len(dropped) and summary["online"]["mode"] == mode
    for idx, drop in dropped.items():
        assert table["decision"][idx] == "dropped" and table["dropped_at_step"][idx] == drop.step
        assert table["reason"][idx].startswith("online fihs score")
    assert all(step is None for i, step in enumerate(table["dropped_at_step"]) if i not in dropped)
    logged = [h for h in online.state.log_history if "safety/online_dropped" in h]
    assert logged and logged[-1]["safety/online_dropped"] == len(dropped)


def test_dropped_rows_are_masked_and_not_drawn_next_epoch(tokenizer, tmp_path):
    trainer = online_trainer(tokenizer, tmp_path, **ONLINE)
    trainer.filter_train_dataset()
    trainer._online.active.drop(3, step=0, score=1.0, reason="test")
    batch = {"sample_idx": torch.tensor([2, 3]), "labels": torch.ones(2, 5, dtype=torch.long)}
    (masked,) = list(trainer._mask_dropped(iter([batch])))
    assert masked["labels"][1].eq(-100).all() and masked["labels"][0].eq(1).all()
    sampler = trainer._get_train_sampler()
    sampler.set_epoch(1)
    order = list(sampler)
    position_of_3 = trainer.train_dataset["sample_idx"].index(3)
    assert len(order) == 16 and position_of_3 not in order  # refilled from the active rows, same length
    assert list(sampler) == order  # a pure function of (seed, epoch, active set)


def test_constant_length_sampler_replays_the_epoch_start_set():
    active = ActiveSet()
    sampler = ConstantLengthSampler(list(range(8)), active, seed=1)
    first = list(sampler)
    active.drop(5, step=1, score=0.5, reason="x")  # a mid-epoch drop does not change this epoch's order
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert sorted(set(sampler)) == [0, 1, 2, 3, 4, 6, 7]


def test_resume_continues_with_the_same_dropped_set(tokenizer, tmp_path):
    full = online_trainer(tokenizer, tmp_path / "full", save_strategy="steps", save_steps=4, **ONLINE)
    full.train()
    sidecar = json.loads((tmp_path / "full" / "checkpoint-4" / "safety_state.json").read_text())
    assert sidecar["global_step"] == 4
    resumed = online_trainer(tokenizer, tmp_path / "full", save_strategy="steps", save_steps=4, **ONLINE)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4"))
    assert resumed.state.global_step == 8
    at_4 = {int(i) for i in sidecar["dropped"]}
    assert at_4 <= set(resumed._online.active.dropped)
    assert set(resumed._online.active.dropped) == set(full._online.active.dropped)


def test_resume_without_sidecar_is_an_error(tokenizer, tmp_path):
    plain = online_trainer(tokenizer, tmp_path, save_strategy="steps", save_steps=4)
    plain.train()
    online = online_trainer(tokenizer, tmp_path, **ONLINE)
    with pytest.raises(FileNotFoundError, match="safety_state.json"):
        online.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_online_config_errors():
    with pytest.raises(ValueError, match="packing=True"):
        SafetyAwareSFTConfig(output_dir="x", packing=True, safety_online_every_steps=2, **COMMON)
    with pytest.raises(ValueError, match="safety_online_every_steps"):
        SafetyAwareSFTConfig(output_dir="x", safety_online_every_steps=-1, **COMMON)
    with pytest.raises(ValueError, match="activation"):
        SafetyAwareSFTConfig(output_dir="x", **{**COMMON, "activation_checkpointing": True},
                             safety_online_every_steps=2)  # fmt: skip
    with pytest.raises(ValueError, match="safety_online_threshold_value"):
        SafetyAwareSFTConfig(output_dir="x", safety_online_every_steps=2, safety_online_threshold_value=1.5, **COMMON)


def test_online_decisions_spare_mixed_safety_samples(tokenizer, tmp_path):
    trainer = online_trainer(tokenizer, tmp_path, safety_mix_pool="builtin:refusal_pool", safety_mix_budget=2,
                             safety_mix_strategy="random-b", **ONLINE)  # fmt: skip
    trainer.filter_train_dataset()
    trainer._online.active.scores.update({0: 0.1, 1: 0.2, 2: 0.3, 16: 0.9, 17: 0.8, **{i: 0.0 for i in range(3, 16)}})
    dropped = [idx for idx, _, _ in trainer._online._new_drops(step=2)]
    assert dropped == [2, 1]  # the top 25% of 18 scores are rows 16, 17, 2, 1; the mixed rows 16 and 17 are spared


def test_ranked_online_policy_bounds_the_total_drops(tokenizer, tmp_path):
    trainer = online_trainer(tokenizer, tmp_path, **ONLINE)
    trainer.filter_train_dataset()
    online = trainer._online
    online.active.scores.update({0: 0.9, 1: 0.1, 2: 0.2, 3: 0.3})
    for idx, score, reason in online._new_drops(step=1):
        online.active.drop(idx, 1, score, reason)
    assert list(online.active.dropped) == [0]  # floor(0.25 * 4)
    online.active.scores.update({i: 0.95 for i in range(4, 8)})  # later, riskier scores
    new = [idx for idx, _, _ in online._new_drops(step=2)]
    assert new == [4]  # budget floor(0.25 * 8) = 2, one already used: row 0 stays dropped, one more


def test_iterable_training_data_is_refused_for_per_sample_features(tokenizer, tmp_path):
    from datasets import IterableDataset

    rows = alpaca_rows(4)
    stream = IterableDataset.from_generator(lambda: iter(rows))
    for settings in ({"safety_online_every_steps": 2}, {"safety_mix_pool": "builtin:refusal_pool"}):
        args = SafetyAwareSFTConfig(output_dir=str(tmp_path), max_steps=1, **COMMON, **settings)
        with pytest.raises(TypeError, match="map-style"):
            SafetyAwareSFTTrainer(
                make_tiny_llama(tokenizer), args=args, train_dataset=stream, processing_class=tokenizer
            )
