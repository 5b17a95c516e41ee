"""The safety report: every input row's fate (kept, dropped with score and reason, or rejected with the reason).

Written to `<output_dir>/safety_report/`: `scores.parquet` (one row per input row), `summary.json` and
`histogram.png` (decision scores with the threshold marked).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from .scoring.pipeline import ScoringResult

KEPT, DROPPED, REJECTED = "kept", "dropped", "rejected"
_PACKAGES = ("safetrainer", "torch", "transformers", "trl", "peft", "accelerate", "datasets")


def build_table(
    num_rows: int,
    previews: list[str],
    rejected: dict[int, str],
    result: ScoringResult | None,
    mixed: list[tuple[str, str]] | None = None,
) -> dict[str, list]:
    """One row per input row, in input order, with its decision, reason, scores and prompt preview; then one row per
    mixed safety sample (`mixed`: its prompt preview and why it was chosen), with source "mix"."""
    mixed = mixed or []
    total = num_rows + len(mixed)
    decision = [KEPT] * total
    kept_why = "kept (no filter)" if result is None else "kept: below threshold"
    reason = [kept_why] * num_rows + [f"kept: {why}" for _, why in mixed]
    num_tokens = [None] * total
    # A row without a score (rejected, or a mixed sample the filter does not score) has none: null, never NaN.
    scores: dict[str, list] = {} if result is None else {f"score_{n}": [None] * total for n in result.scores}
    for idx, why in rejected.items():
        decision[idx], reason[idx] = REJECTED, why
    if result is not None:
        decided = result.scores[result.decided_on]
        for row, idx in enumerate(result.sample_idx.tolist()):
            num_tokens[idx] = int(result.num_tokens[row])
            for name, values in result.scores.items():
                scores[f"score_{name}"][idx] = float(values[row])
            if not result.decision.keep[row]:
                decision[idx] = DROPPED
                reason[idx] = (
                    f"{result.decided_on} score {decided[row]:.4g} >= threshold {result.decision.threshold:.4g} "
                    f"({result.decision.policy})"
                )
    return {
        "sample_idx": list(range(total)),
        "source": ["train"] * num_rows + ["mix"] * len(mixed),
        "decision": decision,
        "keep": [d == KEPT for d in decision],
        "reason": reason,
        **scores,
        "num_tokens": num_tokens,
        "prompt_preview": previews + [preview for preview, _ in mixed],
    }


def counts(table: dict[str, list]) -> dict[str, int]:
    """Number of input rows, of mixed safety samples, and of rows per decision (over both)."""
    c = Counter(table["decision"])
    sources = Counter(table["source"])
    by_decision = {KEPT: c[KEPT], DROPPED: c[DROPPED], REJECTED: c[REJECTED]}
    return {"input": sources["train"], "mixed": sources["mix"], **by_decision}


def build_summary(table: dict[str, list], result: ScoringResult | None, safety_config: dict, extra: dict) -> dict:
    """Counts, reasons for rejection, thresholds, scorer choices, timings, versions and the safety config."""
    summary: dict[str, Any] = {
        "counts": counts(table),
        "rejected_reasons": dict(
            Counter(r for d, r in zip(table["decision"], table["reason"], strict=True) if d == REJECTED)
        ),
        **extra,
        "safety_config": safety_config,
        "versions": _versions(),
    }
    if result is not None:
        tokens = np.array([t if t is not None else np.nan for t in table["num_tokens"]], dtype=float)
        decisions = np.array(table["decision"])
        summary.update(
            decided_on=result.decided_on,
            threshold_policy=result.decision.policy,
            threshold=None if math.isinf(result.decision.threshold) else result.decision.threshold,
            threshold_detail=result.decision.detail,
            scorers=result.scorer_info,
            timings=result.timings,
            world_size=result.world_size,
            mean_tokens={d: _nanmean(tokens[decisions == d]) for d in (KEPT, DROPPED)},
        )
    return summary


def write_report(report_dir: str | Path, table: dict[str, list], summary: dict) -> Path:
    """Write scores.parquet, summary.json and (when scores exist) histogram.png; returns the folder."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), report_dir / "scores.parquet")
    with open(report_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2, default=str)
    decided_on = summary.get("decided_on")
    if decided_on is not None:
        _histogram(
            np.array(table[f"score_{decided_on}"], dtype=float),
            summary.get("threshold"),
            decided_on,
            report_dir / "histogram.png",
        )
    return report_dir


def _histogram(scores: np.ndarray, threshold: float | None, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = scores[np.isfinite(scores)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(scores, bins=min(50, max(10, len(scores) // 5)), color="#4C72B0")
    if threshold is not None:
        ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"threshold {threshold:.4g}")
        ax.legend()
    ax.set_xlabel(f"{name} score (higher = riskier)")
    ax.set_ylabel("samples")
    ax.set_title(f"{name}: {len(scores)} scored samples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _nanmean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _versions() -> dict[str, str]:
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
