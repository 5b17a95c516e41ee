"""Safety pools: (prompt, response) rows that may be mixed into training, each typed by behavior.

Behavior types (instruction x response):

    T1  harmful instruction, refusal      - what safety mixing adds
    T2  harmful instruction, compliance   - never added
    T3  benign instruction, compliance
    T4  benign instruction, refusal

The refusal flag comes from a refusal judge (the embedding judge by default, which also says where it was unsure). The
harmful flag comes from the pool itself, in this order: a `harmful` column; BeaverTails' `is_safe` (False marks a
harmful *response*: such rows are excluded, their instruction counted as harmful); a `label` column (`harmful`/`benign`
for the instruction, `refusal` for a refusal pool, `harmful_response` as for `is_safe=False`); a prompt classifier given
by the caller (such as `HarmfulInstructionProbe`); otherwise every row of a safety pool is taken as a harmful
instruction (every row of a contrast pool as a benign one), and the summary says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import load_data
from ..eval import judge_with_confidence, load_judge

BEHAVIOR_TYPES = ("T1", "T2", "T3", "T4")
UNCATEGORIZED = "uncategorized"
_PROMPT_COLUMNS = ("prompt", "instruction", "question")
_RESPONSE_COLUMNS = ("response", "output", "answer", "completion")
# Labels that say whether an instruction is harmful; the harmful-instruction probe's reference takes the same ones.
_INSTRUCTION_LABELS = {"harmful": True, "unsafe": True, "benign": False, "safe": False}
# A safety pool's rows may also be labelled "refusal": a refusal there answers a harmful instruction.
_HARMFUL_LABELS = {**_INSTRUCTION_LABELS, "refusal": True}
_RESPONSE_HARMFUL_LABELS = ("harmful_response",)
_POOL_FIELD = {False: "safety_mix_pool", True: "safety_mix_contrast_pool"}  # the setting that errors name


@dataclass
class SafetyPool:
    """A loaded pool: parallel per-row lists, indexed by `pool_idx` (the 0-based row index in the source).

    `excluded` maps rows that can never be mixed in (missing text, harmful response) to the reason; `categories[i]`
    is a tuple of category names (empty until assigned); `judge_unsure[i]` says the refusal judge was unsure of row
    i's verdict (None: no judge said so).
    """

    source: str
    prompts: list[str]
    responses: list[str]
    harmful: np.ndarray
    refusal: np.ndarray
    categories: list[tuple[str, ...]]
    harmful_source: str
    category_source: str = "none"
    excluded: dict[int, str] = field(default_factory=dict)
    judge_unsure: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def behavior(self) -> list[str]:
        """T1..T4 per row."""
        return [behavior_type(h, r) for h, r in zip(self.harmful.tolist(), self.refusal.tolist(), strict=True)]

    def eligible(self, behaviors: Collection[str] = ("T1", "T3", "T4")) -> np.ndarray:
        """Row indices of the given behavior types that may be mixed in: never excluded rows or T2."""
        allowed = set(behaviors) - {"T2"}
        return np.array(
            [i for i, b in enumerate(self.behavior) if b in allowed and i not in self.excluded], dtype=np.int64
        )

    def unsure(self, idx: int) -> bool:
        """Whether the refusal judge was unsure of row `idx`'s verdict."""
        return self.judge_unsure is not None and bool(self.judge_unsure[idx])

    def summary(self) -> dict[str, Any]:
        """Counts per behavior type and per category, where the flags came from, how many verdicts the judge was
        unsure of, and why rows were excluded."""
        category_counts = Counter(c for cats in self.categories for c in cats)
        return {
            "source": self.source,
            "rows": len(self),
            "behavior_counts": {t: self.behavior.count(t) for t in BEHAVIOR_TYPES},
            "judge_unsure": 0 if self.judge_unsure is None else int(self.judge_unsure.sum()),
            "harmful_source": self.harmful_source,
            "category_source": self.category_source,
            "category_counts": dict(sorted(category_counts.items())),
            "excluded": dict(Counter(self.excluded.values())),
        }


def behavior_type(harmful: bool, refusal: bool) -> str:
    """T1 (harmful, refusal), T2 (harmful, compliance), T3 (benign, compliance) or T4 (benign, refusal)."""
    if harmful:
        return "T1" if refusal else "T2"
    return "T4" if refusal else "T3"


def load_pool(
    source: str,
    split: str = "train",
    judge: str | Callable | None = None,
    harmful_classifier: Callable[[list[str]], Sequence[bool]] | None = None,
    contrast: bool = False,
) -> SafetyPool:
    """Load a pool from `builtin:<name>`, a local file or a Hub dataset id, and type every row.

    Columns: a prompt (`prompt`, `instruction` or `question`), a response (`response`, `output`, `answer` or
    `completion`), optional `category` (a string, a list of strings, or BeaverTails' {name: bool} dict), optional
    harmful flags (see the module docstring). Other columns are kept in the source and ignored. `judge` decides refusals
    (`"embedding"` by default, `"keyword"`, a callable, or a model id; see `safetrainer.eval.load_judge`). A `contrast`
    pool holds borderline-benign requests answered helpfully: without flags, its instructions are taken as benign.
    """
    pool_field = _POOL_FIELD[contrast]
    dataset = load_data(source, split)
    if len(dataset) == 0:
        raise ValueError(f"{pool_field}: {source!r} has no rows.")
    columns = dataset.column_names
    prompt_col = next((c for c in _PROMPT_COLUMNS if c in columns), None)
    response_col = next((c for c in _RESPONSE_COLUMNS if c in columns), None)
    if prompt_col is None or response_col is None:
        raise ValueError(
            f"{pool_field}: {source!r} needs a prompt column ({' or '.join(_PROMPT_COLUMNS)}) and a response "
            f"column ({' or '.join(_RESPONSE_COLUMNS)}); found {sorted(columns)}."
        )
    rows = dataset.to_list()
    excluded: dict[int, str] = {}
    prompts, responses = [], []
    for idx, row in enumerate(rows):
        prompt, response = row[prompt_col], row[response_col]
        for name, value in ((prompt_col, prompt), (response_col, response)):
            if not isinstance(value, str) or not value.strip():
                excluded.setdefault(idx, f"empty or non-text {name}")
        prompts.append(prompt if isinstance(prompt, str) else "")
        responses.append(response if isinstance(response, str) else "")

    harmful, harmful_source = _harmful_flags(rows, columns, prompts, harmful_classifier, excluded, contrast)
    texts = [i for i in range(len(rows)) if i not in excluded]
    refusal = np.zeros(len(rows), dtype=bool)
    unsure = np.zeros(len(rows), dtype=bool)
    if texts:
        verdicts, doubts = judge_with_confidence(
            load_judge(judge), [prompts[i] for i in texts], [responses[i] for i in texts]
        )
        refusal[texts], unsure[texts] = verdicts, doubts
    categories = [()] * len(rows)
    if "category" in columns:
        categories = [_categories(row.get("category"), pool_field) for row in rows]
    has_categories = any(categories)
    return SafetyPool(
        source, prompts, responses, harmful, refusal, categories, harmful_source,
        "column" if has_categories else "none", excluded, unsure,
    )  # fmt: skip


def _harmful_flags(rows, columns, prompts, classifier, excluded, contrast) -> tuple[np.ndarray, str]:
    name = _POOL_FIELD[contrast]
    n = len(rows)
    if "harmful" in columns:
        flags = [_as_bool(r["harmful"], f"{name} row {i}: column 'harmful'") for i, r in enumerate(rows)]
        return np.array(flags, dtype=bool), "column"
    if "is_safe" in columns:
        for i, r in enumerate(rows):
            if not _as_bool(r["is_safe"], f"{name} row {i}: column 'is_safe'"):
                excluded.setdefault(i, "harmful response (is_safe=False)")
        return np.ones(n, dtype=bool), "is_safe (instructions of a safety pool taken as harmful)"
    known_labels = (*_HARMFUL_LABELS, *_RESPONSE_HARMFUL_LABELS)
    if "label" in columns and all(_label(r["label"]) in known_labels for r in rows):
        flags = []
        for i, r in enumerate(rows):
            label = _label(r["label"])
            if label in _RESPONSE_HARMFUL_LABELS:
                excluded.setdefault(i, f"harmful response (label={label})")
            flags.append(_HARMFUL_LABELS.get(label, True))
        return np.array(flags, dtype=bool), "label"
    if classifier is not None:
        verdicts = [bool(v) for v in classifier(list(prompts))]
        if len(verdicts) != n:
            raise ValueError(f"safety_mix harmful classifier returned {len(verdicts)} flags for {n} prompts.")
        return np.array(verdicts, dtype=bool), getattr(classifier, "description", "classifier")
    if contrast:
        return np.zeros(n, dtype=bool), "default (no harmful column: every instruction of a contrast pool as benign)"
    return np.ones(n, dtype=bool), "default (no harmful column: every instruction of a safety pool taken as harmful)"


def _label(value: Any) -> str:
    """A label cell as matched against the label maps: " Harmful " and "harmful" are one label."""
    return str(value).strip().lower()


def _as_bool(value: Any, where: str) -> bool:
    """A boolean cell (true/false, 1/0, yes/no); `where` names the field, row and column for the error."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"{where} must be a boolean (true/false, 1/0, yes/no), got {value!r}.")


def _categories(value: Any, name: str) -> tuple[str, ...]:
    """A row's categories: a string (one category; BeaverTails names contain commas), a list, or a {name: flag}
    dict."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if isinstance(value, dict):
        return tuple(sorted(str(k) for k, flag in value.items() if flag))
    if isinstance(value, list | tuple):
        return tuple(sorted({str(v).strip() for v in value if str(v).strip()}))
    raise ValueError(f"{name}: category must be a string, a list or a dict, got {type(value).__name__}.")
