import json

import pytest
import torch

from safetrainer.cli import main
from safetrainer.data import chat_pair, tokenize_pair
from safetrainer.eval import (
    EmbeddingRefusalJudge,
    PromptSet,
    evaluate_refusals,
    generate,
    load_prompts,
    refusal_metrics,
    response_nll,
)
from safetrainer.eval.evaluate import gsm8k_answer

from .conftest import SHARED_DATA


def test_batched_left_padded_generation_matches_one_by_one(tiny_model, tokenizer):
    prompts = ["Hi", "Tell me a long story about a dragon and a knight", "What is 2+2?"]
    batched = generate(tiny_model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(tiny_model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single and tokenizer.padding_side == "right"


def test_refusal_metrics():
    m = refusal_metrics([True, False, True, True], ["a", "a", "b", ""], harmful=True)
    assert m["refusal_rate"] == 0.75 and m["asr"] == 0.25 and m["n"] == 4
    assert m["per_category"] == {
        "a": {"n": 2, "refusal_rate": 0.5},
        "b": {"n": 1, "refusal_rate": 1.0},
        "uncategorized": {"n": 1, "refusal_rate": 1.0},
    }
    assert "asr" not in refusal_metrics([True], None, harmful=False)


def test_evaluate_refusals_records_and_metrics(tiny_model, tokenizer):
    prompts = PromptSet("probe", ["a", "b", "c"], ["x", "y", "x"], harmful=True)
    records, metrics = evaluate_refusals(
        tiny_model, tokenizer, prompts, lambda p, r: [i != 1 for i in range(len(r))], max_new_tokens=4
    )
    assert [r["refusal"] for r in records] == [True, False, True] and records[2]["category"] == "x"
    assert metrics["refusal_rate"] == pytest.approx(2 / 3) and metrics["asr"] == pytest.approx(1 / 3)
    assert metrics["max_new_tokens"] == 4 and metrics["timings"]["generate_seconds"] > 0


def test_response_nll_matches_a_manual_computation(tiny_model, tokenizer):
    pairs = [("What is 2+2?", "Four."), ("Name a colour.", "Blue is a nice colour.")]
    total, count = 0.0, 0
    for p, r in pairs:
        ex = tokenize_pair(tokenizer, *chat_pair(p, r))
        with torch.no_grad():
            logits = tiny_model(torch.tensor([ex.input_ids])).logits[0]
        log_probs = torch.log_softmax(logits[:-1], -1)
        targets = torch.tensor(ex.input_ids[1:])
        picked = log_probs[torch.arange(len(targets)), targets][ex.prompt_len - 1 :]
        total -= float(picked.sum())
        count += len(picked)
    assert response_nll(tiny_model, tokenizer, pairs, batch_size=2) == pytest.approx(total / count, rel=1e-4)


@pytest.mark.parametrize(
    ("text", "answer"),
    [("#### 1,234", "1234"), ("so the total is $18.", "18"), ("It is 3.0", "3"), ("no number", None)],
)
def test_gsm8k_answer(text, answer):
    assert gsm8k_answer(text) == answer


@pytest.mark.parametrize(
    ("suite", "n", "harmful"),
    [
        ("harmbench", 159, True),
        ("advbench", 520, True),
        ("strongreject", 313, True),
        ("xstest-safe", 250, False),
        ("xstest-unsafe", 200, True),
    ],
)
def test_named_suites(suite, n, harmful):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    prompts = load_prompts(suite)
    assert len(prompts.prompts) == n and prompts.harmful is harmful
    assert load_prompts(suite, limit=5).prompts == prompts.prompts[:5]


def test_prompt_files_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "Hi", "category": "c"}\n{"prompt": "Bye", "category": "d"}\n')
    ps = load_prompts(str(good))
    assert ps.prompts == ["Hi", "Bye"] and ps.categories == ["c", "d"] and ps.harmful is None
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "Hi"}\n')
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        load_prompts(str(bad))
    empty = tmp_path / "e.jsonl"
    empty.write_text('{"prompt": "  "}\n')
    with pytest.raises(ValueError, match="row 0 has an empty"):
        load_prompts(str(empty))


def test_eval_cli_writes_generations_and_metrics(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Question {i}?", "category": "c"}) for i in range(5)))
    utility = tmp_path / "u.jsonl"
    utility.write_text(json.dumps({"prompt": "Q?", "response": "A."}))
    main(
        [
            "eval",
            "--model",
            tiny_model_dir,
            "--prompts",
            str(prompts),
            "--limit",
            "3",
            "--max-new-tokens",
            "4",
            "--utility",
            str(utility),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "out" / "generations.jsonl").read_text().splitlines()]
    metrics = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [r["prompt"] for r in rows] == ["Question 0?", "Question 1?", "Question 2?"]
    assert all(isinstance(r["refusal"], bool) and r["category"] == "c" for r in rows)
    assert metrics["n"] == 3 and 0 <= metrics["refusal_rate"] <= 1 and metrics["utility_nll"] > 0


def test_judge_cli_keeps_input_order(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"prompt": f"p{i}", "response": r})
            for i, r in enumerate(["I can't help with that.", "Sure! Here it is.", "I'm sorry, no."])
        )
    )
    main(["judge", "--input", str(data), "--output-dir", str(tmp_path / "out")])
    rows = [json.loads(line) for line in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["p0", "p1", "p2"]
    assert [r["refusal"] for r in rows] == [True, False, True]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p"}))
    with pytest.raises(ValueError, match="missing column"):
        main(["judge", "--input", str(bad), "--output-dir", str(tmp_path / "out2")])


def test_safety_eval_callback_logs_refusal_rates_during_training(tokenizer, tmp_path):
    from datasets import Dataset

    from safetrainer import SafetyAwareSFTConfig, SafetyAwareSFTTrainer, SafetyEvalCallback

    from .conftest import make_tiny_llama

    def refuse_harmful(prompts, responses):
        return [p.startswith("bad") for p in prompts]

    callback = SafetyEvalCallback(
        ["bad 1", "bad 2"], ["good 1", "good 2", "bad but safe"], eval_steps=2, max_new_tokens=3, judge=refuse_harmful
    )
    args = SafetyAwareSFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        logging_steps=100,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    rows = [{"prompt": f"Q{i}", "response": f"A{i}"} for i in range(8)]
    trainer = SafetyAwareSFTTrainer(
        make_tiny_llama(tokenizer),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    assert callback.trainer is trainer
    trainer.train()
    logged = [h for h in trainer.state.log_history if "safety/refusal_rate" in h]
    assert [h["step"] for h in logged] == [2, 3]  # every 2 steps and at the last one
    assert all(h["safety/refusal_rate"] == 1.0 and h["safety/over_refusal"] == pytest.approx(1 / 3) for h in logged)


def test_safety_eval_callback_defaults_and_attachment(tokenizer, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from safetrainer import SafetyEvalCallback

    from .conftest import make_tiny_llama

    callback = SafetyEvalCallback(eval_steps=1, max_new_tokens=2)
    assert len(callback.harmful_prompts) == 20 and len(callback.safe_prompts) == 20
    assert isinstance(callback.judge, EmbeddingRefusalJudge)
    with pytest.raises(ValueError, match="eval_steps"):
        SafetyEvalCallback(eval_steps=0)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        disable_tqdm=True,
    )
    rows = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(4)]
    trainer = SFTTrainer(
        make_tiny_llama(tokenizer),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    with pytest.raises(RuntimeError, match="attach"):
        trainer.train()
