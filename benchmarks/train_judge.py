"""Fit the default refusal judge on every labelled completion and write `safetrainer/eval/refusal_judge.json`.

The training data and its labels are described in `_judge_data.py`; `judge_agreement.py` measures the same recipe on
held-out sources.

    python benchmarks/train_judge.py
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
from _judge_data import labelled_completions

from safetrainer.eval import EmbeddingRefusalJudge, fit_embedding_judge, refusal_features, save_judge
from safetrainer.eval.embedding_judge import DEFAULT_JUDGE_FILE
from safetrainer.models import DEFAULT_SENTENCE_EMBEDDER, load_sentence_model


def main() -> None:
    rows = labelled_completions()
    features = refusal_features(load_sentence_model(), [r.prompt for r in rows], [r.response for r in rows])
    labels = np.array([r.refusal for r in rows])
    weights = fit_embedding_judge(features, labels)
    counts = Counter((r.source, "refusal" if r.refusal else "compliance") for r in rows)
    path = save_judge(
        weights, DEFAULT_JUDGE_FILE,
        command="python benchmarks/train_judge.py", trained=date.today().isoformat(),
        embedder=DEFAULT_SENTENCE_EMBEDDER,
        training_counts={f"{source}:{label}": n for (source, label), n in sorted(counts.items())},
    )  # fmt: skip
    judge = EmbeddingRefusalJudge(weights=weights)
    train_accuracy = float(((judge.probability_of_features(features) >= judge.threshold) == labels).mean())
    print(f"{len(rows)} completions ({labels.sum()} refusals); training accuracy {train_accuracy:.3f}; wrote {path}")


if __name__ == "__main__":
    main()
