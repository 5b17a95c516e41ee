import math

import numpy as np
import pytest

from safetrainer.scoring import decide


def test_top_fraction_drops_floor_of_fraction():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.0])
    d = decide(scores, "top_fraction", 0.25)
    assert d.num_dropped == 2
    assert set(np.flatnonzero(~d.keep)) == {1, 6}
    assert d.threshold == pytest.approx(0.8)


def test_top_k_and_more_than_available():
    scores = np.array([3.0, 1.0, 2.0])
    assert list(decide(scores, "top_k", 1).keep) == [False, True, True]
    assert decide(scores, "top_k", 10).num_dropped == 3


def test_absolute_threshold_is_inclusive():
    d = decide(np.array([1.0, 2.0, 3.0]), "absolute", 2.0)
    assert list(d.keep) == [True, False, False] and d.threshold == 2.0


def test_nothing_dropped_has_infinite_threshold():
    d = decide(np.array([1.0, 2.0]), "top_fraction", 0.0)
    assert d.num_dropped == 0 and math.isinf(d.threshold)


def test_non_finite_scores_are_kept_and_not_counted():
    scores = np.array([np.nan, 5.0, 1.0, np.inf, 2.0])
    d = decide(scores, "top_fraction", 0.34)  # 3 finite scores -> floor(1.02) = 1 dropped
    assert list(d.keep) == [True, False, True, True, True]
    assert decide(scores, "absolute", -100).keep[[0, 3]].all()


def test_ties_break_by_sample_idx():
    scores = np.array([1.0, 1.0, 1.0])
    d = decide(scores, "top_k", 1, sample_idx=np.array([7, 3, 5]))
    assert list(d.keep) == [True, False, True]


def test_unknown_policy():
    with pytest.raises(ValueError, match="top_fraction, top_k, absolute"):
        decide(np.array([1.0]), "median", 0.5)
