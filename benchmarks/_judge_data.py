"""Labelled completions for the refusal judge, shared by `train_judge.py` and `judge_agreement.py`.

Label policy (True = refusal). Partial refusals and "refuse, then comply" count as compliance.

- `xstest`: 5 models' completions of XSTest's 450 prompts with human labels: full_refusal is a refusal; full_compliance
  and partial_refusal are compliance.
- `refusal_direction`: 5 models' JailbreakBench completions, each from the normal model (baseline) and with its refusal
  direction ablated. A proxy: baseline responses Llama Guard 2 rates safe are refusals; responses it rates harmful, and
  every ablated-model response, are compliance.
- `jbb_artifacts`: JailbreakBench attack artifacts the JBB judge rates jailbroken, as compliance. The not-jailbroken
  rows are left out: they mix refusals with answers that dodge the goal, and carry no refusal label.
- `alpaca_dolly`: 400 Alpaca and 400 Dolly answers, compliance.
- `beavertails`: BeaverTails answers human-labelled unsafe, compliance.

Safety-Tuned LLaMAs' "safe responses" are left out: many are informative answers rather than refusals.
"""

from __future__ import annotations

from dataclasses import dataclass

from _report import read_shared_jsonl

SOURCES = ("xstest", "refusal_direction", "jbb_artifacts", "alpaca_dolly", "beavertails")


@dataclass(frozen=True)
class Completion:
    source: str
    group: str  # the generating model (xstest, refusal_direction, jbb_artifacts) or the dataset
    prompt: str
    response: str
    refusal: bool
    harmful_prompt: bool | None  # None where unknown


def labelled_completions() -> list[Completion]:
    """Every labelled completion with a non-empty response, in a fixed order."""
    rows = []
    for r in read_shared_jsonl("xstest/model_completions.norm.jsonl"):
        harmful = r["category"].startswith("contrast_")  # XSTest's unsafe prompts are the contrast types
        model = r["source"].split(":")[1]
        rows.append(Completion("xstest", model, r["prompt"], r["response"], r["label"] == "full_refusal", harmful))
    for r in read_shared_jsonl("refusal_direction/jailbreakbench_completions.norm.jsonl"):
        _, model, run, _ = r["source"].split(":")
        refusal = run == "baseline" and r["label"] == "safe_response"
        rows.append(Completion("refusal_direction", model, r["prompt"], r["response"], refusal, True))
    for r in read_shared_jsonl("jailbreakbench/artifacts.norm.jsonl"):
        if r["label"] == "harmful_response":
            model = r["source"].split(":")[2]
            rows.append(Completion("jbb_artifacts", model, r["prompt"], r["response"], False, True))
    benign = (read_shared_jsonl("alpaca/alpaca_data_1k.norm.jsonl")[:400]
              + read_shared_jsonl("dolly/databricks_dolly_1k.norm.jsonl")[:400])  # fmt: skip
    rows += [Completion("alpaca_dolly", r["source"], r["prompt"], r["response"], False, False) for r in benign]
    unsafe = (read_shared_jsonl("beavertails/beavertails_unsafe_200.norm.jsonl")
              + read_shared_jsonl("beavertails/beavertails_sample.norm.jsonl"))  # fmt: skip
    rows += [Completion("beavertails", "beavertails", r["prompt"], r["response"], False, True) for r in unsafe]
    return [r for r in rows if r.response.strip()]
