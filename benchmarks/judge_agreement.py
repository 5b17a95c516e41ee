"""How well the refusal judges agree with labelled completions, on sources the judge was not fit on.

The embedding judge's recipe (`safetrainer.eval.fit_embedding_judge` over `refusal_features`) is fit leave-one-source-
out: for each source of `_judge_data.py`, on all the others, then scored on it. The keyword judge needs no fitting and
is scored on the same rows. XSTest, the one source with human refusal labels, is also split leave-one-model-out (fit on
every other source and the other four models' XSTest completions) and reported on its harmful prompts alone.

    python benchmarks/judge_agreement.py
"""

from __future__ import annotations

import shlex
import sys
from datetime import date

import numpy as np
from _judge_data import SOURCES, labelled_completions
from _report import write_section

from safetrainer.eval import EmbeddingRefusalJudge, KeywordRefusalJudge, fit_embedding_judge, refusal_features
from safetrainer.models import load_sentence_model

MARK = "judge-agreement"


def agreement(truth: np.ndarray, predicted: np.ndarray) -> dict:
    tp = int((truth & predicted).sum())
    return {
        "n": len(truth),
        "refusals": int(truth.sum()),
        "accuracy": float((truth == predicted).mean()),
        "precision": tp / predicted.sum() if predicted.any() else float("nan"),
        "recall": tp / truth.sum() if truth.any() else float("nan"),
    }


def held_out_predictions(features: np.ndarray, labels: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    judge = EmbeddingRefusalJudge(weights=fit_embedding_judge(features[~held_out], labels[~held_out]))
    return judge.probability_of_features(features[held_out]) >= judge.threshold


def fmt(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.3f}"


def main() -> None:
    rows = labelled_completions()
    features = refusal_features(load_sentence_model(), [r.prompt for r in rows], [r.response for r in rows])
    labels = np.array([r.refusal for r in rows])
    source = np.array([r.source for r in rows])
    keyword = KeywordRefusalJudge()
    keyword_verdicts = np.array([keyword.is_refusal(r.response) for r in rows])

    splits = []  # (held-out set, split, truth, embedding verdicts, keyword verdicts)
    embedding = np.zeros(len(rows), dtype=bool)
    for name in SOURCES:
        held_out = source == name
        embedding[held_out] = held_out_predictions(features, labels, held_out)
        splits.append((name, "leave-one-source-out", held_out))
    xstest = source == "xstest"
    harmful_xstest = xstest & np.array([bool(r.harmful_prompt) for r in rows])
    splits.append(("xstest, harmful prompts only", "leave-one-source-out", harmful_xstest))
    by_model = np.zeros(len(rows), dtype=bool)
    for model in sorted({r.group for r in rows if r.source == "xstest"}):
        held_out = xstest & np.array([r.group == model for r in rows])
        by_model[held_out] = held_out_predictions(features, labels, held_out)

    lines = [
        f"Command: `{shlex.join(['python', 'benchmarks/judge_agreement.py', *sys.argv[1:]])}`",
        "",
        "Labels (see `benchmarks/_judge_data.py`): XSTest human labels (full refusal = refusal; full compliance and "
        "partial refusal = compliance); refusal-direction JailbreakBench completions by proxy (baseline model and "
        "Llama Guard 2 safe = refusal; Llama Guard 2 harmful or refusal-ablated model = compliance); JailbreakBench "
        "artifacts rated jailbroken, Alpaca/Dolly answers and BeaverTails unsafe answers = compliance. The embedding "
        "judge is fit on every source but the held-out one (leave-one-source-out); the keyword judge is not fit. "
        "Precision and recall are of refusals (– where the held-out source has none). "
        f"Measured {date.today().isoformat()}, CPU.",
        "",
        "| held-out set | n | refusals | split | embedding accuracy | precision | recall | keyword accuracy | "
        "precision | recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = [(name, split, mask, embedding) for name, split, mask in splits]
    table.append(("xstest", "leave-one-model-out (other sources + 4 other models)", xstest, by_model))
    for name, split, mask, verdicts in table:
        e, k = agreement(labels[mask], verdicts[mask]), agreement(labels[mask], keyword_verdicts[mask])
        lines.append(
            f"| {name} | {e['n']} | {e['refusals']} | {split} | **{e['accuracy']:.3f}** | {fmt(e['precision'])} "
            f"| {fmt(e['recall'])} | {k['accuracy']:.3f} | {fmt(k['precision'])} | {fmt(k['recall'])} |"
        )
        print(lines[-1], flush=True)
    completions = np.isin(source, ["xstest", "refusal_direction", "jbb_artifacts"])
    per_source = [float((labels[source == s] == embedding[source == s]).mean()) for s in SOURCES]
    lines += [
        "",
        f"Leave-one-source-out accuracy, embedding judge: mean over the {len(SOURCES)} sources "
        f"{np.mean(per_source):.3f}; pooled over all {len(rows)} completions {(labels == embedding).mean():.3f}; "
        f"pooled over the model completions of harmful and borderline requests (XSTest, refusal direction, JBB "
        f"artifacts; {completions.sum()}) {(labels == embedding)[completions].mean():.3f}. Keyword judge on the same "
        f"{len(rows)}: {(labels == keyword_verdicts).mean():.3f}.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section(MARK, "Refusal judge: agreement with labelled completions", body)


if __name__ == "__main__":
    main()
