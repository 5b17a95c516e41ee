"""Which instructions of a safety pool are harmful, when the pool does not say: a linear probe on their embeddings.

A safety pool's instructions are not all harmful. Pools built from red-teaming prompts hold mild or benign requests
too ("Analyze the pay gap between men and women."), answered with a refusal or a disclaimer; typing those as T1 lets
the "-B" samplers mix in refusals of benign-sounding questions, which teaches over-refusal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import DEFAULT_HARMFUL_REFERENCE
from ..data import load_data
from .embedding import Embedder
from .pool import _INSTRUCTION_LABELS, _as_bool, _label


class HarmfulInstructionProbe:
    """Logistic regression on instruction embeddings, fit on prompts labelled harmful or benign.

    The default reference (`builtin:harm_intent`) pairs harmful requests with benign prompts of the same styles, many
    of them alarming-sounding ("How do I kill a background process in Windows?"), so the probe leans on intent rather
    than on vocabulary or phrasing. It is small; a few hundred labelled prompts in the pool's styles do better.
    Calling it with prompts returns one flag per prompt (P(harmful) >= `threshold`): the `harmful_classifier` form
    that `load_pool` takes. It is fit on the first call, so a pool with its own harmful flags costs nothing.

    Args:
        embedder: the mixing embedder (the training model's hidden states or a sentence-embedding model).
        reference: a dataset with a `prompt` column and a boolean `harmful` column or a `label` column
            (`harmful`/`unsafe` or `benign`/`safe`); both classes must be present.
        threshold: P(harmful) at or above which an instruction is flagged.
    """

    def __init__(self, embedder: Embedder, reference: str = DEFAULT_HARMFUL_REFERENCE, threshold: float = 0.5):
        self.embedder = embedder
        self.reference = reference
        self.threshold = threshold
        self._model = None

    @property
    def description(self) -> str:
        """Where the flags come from, for the pool summary."""
        return f"probe on instruction embeddings (reference {self.reference})"

    def fit(self) -> HarmfulInstructionProbe:
        """Embed the reference prompts and fit the probe."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        prompts, labels = _labelled_prompts(self.reference)
        features = self.embedder(prompts, [""] * len(prompts), instruction_only=True)
        # Balanced classes: a reference with more benign than harmful prompts should not move the decision boundary.
        self._model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        self._model.fit(features, labels)
        return self

    def probability(self, prompts: Sequence[str]) -> np.ndarray:
        """P(harmful) per prompt."""
        if self._model is None:
            self.fit()
        features = self.embedder(list(prompts), [""] * len(prompts), instruction_only=True)
        return self._model.predict_proba(features)[:, 1]

    def __call__(self, prompts: Sequence[str]) -> list[bool]:
        return (self.probability(prompts) >= self.threshold).tolist()


def _labelled_prompts(reference: str) -> tuple[list[str], np.ndarray]:
    field = "safety_mix_harmful_reference"
    data = load_data(reference)
    columns = data.column_names
    if "prompt" not in columns or not ({"harmful", "label"} & set(columns)):
        raise ValueError(
            f"{field}: {reference!r} needs a prompt column and a harmful (boolean) or label (harmful/benign) column; "
            f"found {sorted(columns)}."
        )
    prompts, labels = [], []
    for idx, row in enumerate(data):
        if "harmful" in columns:
            value = _as_bool(row["harmful"], f"{field}: {reference!r} row {idx}: column 'harmful'")
        else:
            value = _INSTRUCTION_LABELS.get(_label(row["label"]))
            if value is None:
                raise ValueError(
                    f"{field}: {reference!r} row {idx}: label {row['label']!r}; "
                    f"allowed: {', '.join(_INSTRUCTION_LABELS)}."
                )
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise ValueError(f"{field}: {reference!r} row {idx}: empty or non-text prompt.")
        prompts.append(row["prompt"])
        labels.append(value)
    labels = np.array(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError(f"{field}: {reference!r} needs both harmful and benign prompts; all are harmful={labels[0]}.")
    return prompts, labels
