"""Named prompt suites over the public datasets in `../shared/data`, and loading of user prompt files."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..data import load_data


@dataclass(frozen=True)
class PromptSet:
    """Prompts to generate on, with optional categories; `harmful` says whether refusing is the wanted behaviour."""

    name: str
    prompts: list[str]
    categories: list[str] | None
    harmful: bool | None


def shared_data_dir() -> Path:
    """`$SAFETRAINER_SHARED_DATA`, else the first `shared/data` found beside the working directory or its parents."""
    if os.environ.get("SAFETRAINER_SHARED_DATA"):
        return Path(os.environ["SAFETRAINER_SHARED_DATA"]).expanduser()
    for base in (Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents):
        candidate = base / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "Named suites read ../shared/data, which was not found; set SAFETRAINER_SHARED_DATA or pass a file path."
    )


def _norm_rows(relative: str) -> list[dict]:
    path = shared_data_dir() / relative
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _harmbench_test() -> list[dict]:
    # The test split's standard behaviors: contextual ones need their context string, copyright ones a hash judge.
    with open(shared_data_dir() / "harmbench" / "harmbench_behaviors_text_test.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["FunctionalCategory"] == "standard"]
    return [{"prompt": r["Behavior"], "category": r["SemanticCategory"]} for r in rows]


def _xstest(label: str) -> list[dict]:
    return [r for r in _norm_rows("xstest/xstest_prompts.norm.jsonl") if r["label"] == label]


# name -> (loader, harmful)
SUITES = {
    "harmbench": (_harmbench_test, True),
    "advbench": (lambda: _norm_rows("advbench/advbench.norm.jsonl"), True),
    "strongreject": (lambda: _norm_rows("strongreject/strongreject.norm.jsonl"), True),
    "xstest-safe": (lambda: _xstest("benign"), False),
    "xstest-unsafe": (lambda: _xstest("harmful"), True),
}


def load_prompts(source: str, limit: int | None = None) -> PromptSet:
    """A named suite (`harmbench`, `advbench`, `strongreject`, `xstest-safe`, `xstest-unsafe`) or any
    jsonl/json/csv/parquet file or Hub dataset with a `prompt` column (and optionally `category`). `limit` keeps the
    first n prompts."""
    if source in SUITES:
        loader, harmful = SUITES[source]
        rows = loader()
    else:
        dataset = load_data(source)
        if "prompt" not in dataset.column_names:
            raise ValueError(f"--prompts {source}: needs a 'prompt' column, found {dataset.column_names}; or use a "
                             f"suite name: {', '.join(SUITES)}.")  # fmt: skip
        rows, harmful = dataset.to_list(), None
    rows = rows[:limit] if limit else rows
    bad = next((i for i, r in enumerate(rows) if not isinstance(r["prompt"], str) or not r["prompt"].strip()), None)
    if bad is not None:
        raise ValueError(f"--prompts {source}: row {bad} has an empty or non-string prompt.")
    categories = [str(r.get("category") or "") for r in rows] if any(r.get("category") for r in rows) else None
    return PromptSet(source, [r["prompt"] for r in rows], categories, harmful)
