"""Safety and utility measurements: refusal rate / ASR on prompt sets, NLL of reference responses, GSM8K accuracy."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from ..data import chat_pair, tokenize_pair
from ..data.tokenization import pad_right
from .generation import generate
from .judge import RefusalJudge, judge_pairs
from .suites import PromptSet


def refusal_metrics(refusals: Sequence[bool], categories: Sequence[str] | None, harmful: bool | None) -> dict:
    """`refusal_rate`, `n`, per-category rates, and `asr` (= 1 - refusal rate) when the prompts are harmful."""
    n = len(refusals)
    rate = sum(refusals) / n if n else float("nan")
    metrics: dict[str, Any] = {"n": n, "refusal_rate": rate}
    if harmful:
        metrics["asr"] = 1.0 - rate
    if categories is not None:
        by_category: dict[str, list[bool]] = defaultdict(list)
        for category, refused in zip(categories, refusals, strict=True):
            by_category[category or "uncategorized"].append(refused)
        metrics["per_category"] = {
            c: {"n": len(v), "refusal_rate": sum(v) / len(v)} for c, v in sorted(by_category.items())
        }
    return metrics


def evaluate_refusals(
    model,
    tokenizer,
    prompt_set: PromptSet,
    judge: RefusalJudge,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    show_progress: bool = False,
) -> tuple[list[dict], dict]:
    """Generate greedily on every prompt, judge each response, return (records, metrics).

    Records hold prompt, response, refusal and category (when known); metrics hold `refusal_rate`, `asr` (harmful
    sets), `n`, per-category rates, the generation settings and timings.
    """
    start = time.perf_counter()
    responses = generate(model, tokenizer, prompt_set.prompts, max_new_tokens, batch_size, show_progress)
    generated = time.perf_counter()
    refusals = judge_pairs(judge, prompt_set.prompts, responses)
    judged = time.perf_counter()
    records = []
    for i, (prompt, response, refused) in enumerate(zip(prompt_set.prompts, responses, refusals, strict=True)):
        record = {"prompt": prompt, "response": response, "refusal": refused}
        if prompt_set.categories is not None:
            record["category"] = prompt_set.categories[i]
        records.append(record)
    metrics = {
        "prompts": prompt_set.name,
        **refusal_metrics(refusals, prompt_set.categories, prompt_set.harmful),
        "judge": type(judge).__name__,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "timings": {"generate_seconds": generated - start, "judge_seconds": judged - generated},
    }
    return records, metrics


@torch.no_grad()
def response_nll(
    model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8, max_length: int = 512
) -> float:
    """Mean negative log-likelihood per response token of reference (prompt, response) pairs, chat template applied."""
    examples = [tokenize_pair(tokenizer, *chat_pair(p, r), max_length=max_length) for p, r in pairs]
    examples = sorted((e for e in examples if e is not None), key=lambda e: len(e.input_ids))
    if not examples:
        raise ValueError("response_nll: no pair has a response token left after truncation.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            input_ids, attention_mask = pad_right(batch, pad_id)
            labels = torch.full_like(input_ids, -100)
            for row, e in enumerate(batch):
                labels[row, e.prompt_len : len(e.input_ids)] = torch.tensor(e.input_ids[e.prompt_len :])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            targets = labels[:, 1:].to(device)
            mask = targets != -100
            picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            total -= float(picked[mask].sum())
            count += int(mask.sum())
    finally:
        model.train(was_training)
    return total / count


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def gsm8k_answer(text: str) -> str | None:
    """The final number of a GSM8K answer ("#### 42") or of a model response (its last number), normalized."""
    tail = text.split("####")[-1]
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def gsm8k_exact_match(
    model, tokenizer, problems: Sequence[dict], max_new_tokens: int = 256, batch_size: int = 16
) -> dict:
    """Exact match of the last number in greedy responses to GSM8K `question`s against their `answer`s."""
    responses = generate(model, tokenizer, [p["question"] for p in problems], max_new_tokens, batch_size)
    correct = [gsm8k_answer(r) == gsm8k_answer(p["answer"]) for p, r in zip(problems, responses, strict=True)]
    return {"n": len(problems), "exact_match": sum(correct) / len(correct), "max_new_tokens": max_new_tokens}
