"""How well the keyword refusal judge agrees with labelled completions in ../shared/data.

- XSTest model completions (5 models x 450 prompts), human labels: full_refusal vs full_compliance (partial refusals
  left out). Reports accuracy, refusal precision and refusal recall.
- Refusal-direction JailbreakBench completions (5 models, baseline and refusal-ablated runs). These carry Llama Guard 2
  harm labels, not refusal labels, so two proxies are reported: the share of Llama Guard-harmful responses judged as
  compliance, and the share of the baseline runs' safe responses (mostly refusals) judged as refusals.

    python benchmarks/judge_agreement.py
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from _report import read_shared_jsonl as read_jsonl
from _report import write_section

from safetrainer.eval import GCG_REFUSAL_PREFIXES, KeywordRefusalJudge

ROOT = Path(__file__).resolve().parents[1]
MARK = "judge-agreement"


def xstest_agreement(judge: KeywordRefusalJudge, rows: list[dict]) -> dict:
    truth = [r["label"] == "full_refusal" for r in rows]
    predicted = [judge.is_refusal(r["response"]) for r in rows]
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    return {
        "n": len(rows),
        "accuracy": sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(rows),
        "precision": tp / max(sum(predicted), 1),
        "recall": tp / sum(truth),
    }


def jbb_proxies(judge: KeywordRefusalJudge, rows: list[dict]) -> dict:
    harmful = [r for r in rows if r["label"] == "harmful_response"]
    baseline_safe = [r for r in rows if ":baseline:" in r["source"] and r["label"] == "safe_response"]
    return {
        "harmful_as_compliance": sum(not judge.is_refusal(r["response"]) for r in harmful) / len(harmful),
        "n_harmful": len(harmful),
        "baseline_safe_as_refusal": sum(judge.is_refusal(r["response"]) for r in baseline_safe) / len(baseline_safe),
        "n_baseline_safe": len(baseline_safe),
    }


def main() -> None:
    xstest = [r for r in read_jsonl("xstest/model_completions.norm.jsonl")
              if r["label"] in ("full_compliance", "full_refusal")]  # fmt: skip
    jbb = read_jsonl("refusal_direction/jailbreakbench_completions.norm.jsonl")
    judges = {
        "keyword (default: GCG minus generic entries + modern phrasings, first 200 chars)": KeywordRefusalJudge(),
        "classic GCG prefixes (substring, first 200 chars)": KeywordRefusalJudge(GCG_REFUSAL_PREFIXES),
    }
    lines = [
        "Command: `python benchmarks/judge_agreement.py`",
        "",
        f"Measured {date.today().isoformat()}. XSTest: human labels of 5 models' completions (full refusal vs full "
        "compliance; partial refusals excluded). JailbreakBench completions from the refusal-direction runs carry "
        "Llama Guard 2 harm labels, so they give proxies only.",
        "",
        "| judge | XSTest n | accuracy | refusal precision | refusal recall | LG2-harmful judged compliance (n) "
        "| baseline safe judged refusal (n) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, judge in judges.items():
        x, j = xstest_agreement(judge, xstest), jbb_proxies(judge, jbb)
        lines.append(
            f"| {name} | {x['n']} | {x['accuracy']:.3f} | {x['precision']:.3f} | {x['recall']:.3f} "
            f"| {j['harmful_as_compliance']:.3f} ({j['n_harmful']}) "
            f"| {j['baseline_safe_as_refusal']:.3f} ({j['n_baseline_safe']}) |"
        )
    body = "\n".join(lines)
    print(body)
    write_section(MARK, "Refusal judge: agreement with labelled completions", body)


if __name__ == "__main__":
    main()
