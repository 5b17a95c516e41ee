"""Shared by the benchmark scripts: each owns one marked section of BENCHMARKS.md and rewrites only that."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
_HEADER = "# Benchmarks\n\nEvery number here was written by the script named in its section, from a recorded run.\n"


def write_section(mark: str, title: str, body: str) -> None:
    """Replace (or append) the section between `<!-- mark:start -->` and `<!-- mark:end -->`."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else _HEADER
    start, end = f"<!-- {mark}:start -->", f"<!-- {mark}:end -->"
    section = f"{start}\n## {title}\n\n{body}\n{end}"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared_path(relative: str) -> Path:
    """A file under ../shared/data; exits with a clear message when it is missing."""
    import sys

    path = SHARED_DATA / relative
    if not path.is_file():
        sys.exit(f"missing shared dataset {path}: the benchmarks need ../shared/data beside the checkout")
    return path


def read_shared_jsonl(relative: str) -> list[dict]:
    """Rows of a jsonl file under ../shared/data."""
    import json

    return [json.loads(line) for line in _shared_path(relative).read_text().splitlines() if line.strip()]


def harmbench_standard(split: str) -> list[dict]:
    """HarmBench's standard behaviors of one split ("val" or "test") as `prompt` and `category` (its semantic
    category)."""
    import csv

    with open(_shared_path(f"harmbench/harmbench_behaviors_text_{split}.csv"), newline="") as f:
        return [{"prompt": r["Behavior"], "category": r["SemanticCategory"]} for r in csv.DictReader(f)
                if r["FunctionalCategory"] == "standard"]  # fmt: skip
