"""DataShield's arithmetic on synthetic hidden states where the right direction, layer and scores are known."""

import numpy as np
import pytest
from datasets import Dataset

from safetrainer.scoring import CandidateFeatures, DataShieldScorer, HiddenStates
from safetrainer.scoring.datashield import compliance_aware_score, compliance_direction, compliance_shift_score

D = 6


def reference_rows(n_each=8):
    rows = []
    for i in range(n_each):
        rows.append({"prompt": f"bad {i}", "response": f"Sure {i}", "label": "harmful_response"})
        rows.append({"prompt": f"bad {i}", "response": f"No {i}", "label": "refusal"})
    rows.append({"prompt": "other", "response": "x", "label": "benign"})
    return Dataset.from_list(rows)


def synthetic_states(rng, n, shift_by_layer, noise=1.0):
    """Layers 1..3; class offset `shift_by_layer[l]` along axis 0 in both poolings."""
    pooled = {}
    for layer, shift in shift_by_layer.items():
        base = rng.normal(size=(n, D)) * noise
        base[:, 0] += shift
        pooled[(layer, "response_mean")] = base
        pooled[(layer, "end_of_turn")] = base + rng.normal(size=(n, D)) * 0.01
    return HiddenStates(np.arange(n), np.full(n, 10), pooled)


def test_direction_is_normalized_mean_difference():
    compliant = np.array([[2.0, 0, 0], [4.0, 0, 0]])
    refusal = np.array([[0.0, 0, 0], [0.0, 0, 0]])
    np.testing.assert_allclose(compliance_direction(compliant, refusal), [1, 0, 0])


def test_degenerate_direction_is_an_error():
    same = np.ones((4, 3))
    with pytest.raises(ValueError, match="degenerate"):
        compliance_direction(same, same)


def test_cas_is_one_for_perfect_separation_and_near_zero_for_none():
    safe = np.array([[0.0, 1], [0.0, -1]])
    unsafe = np.array([[2.0, 1], [2.0, -1]])
    assert compliance_aware_score(safe, unsafe) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(400, 4))
    assert compliance_aware_score(noise[:200], noise[200:]) < 0.05


def test_cas_matches_a_direct_scatter_computation():
    rng = np.random.default_rng(1)
    safe, unsafe = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + [1, 0, 0]
    x = np.concatenate([safe, unsafe])
    z = (x - x.mean(0)) / x.std(0)
    u = z[7:].mean(0) - z[:7].mean(0)
    u /= np.linalg.norm(u)
    sb = 7 * (u @ z[:7].mean(0)) ** 2 + 5 * (u @ z[7:].mean(0)) ** 2
    st = ((z @ u) ** 2).sum()
    assert compliance_aware_score(safe, unsafe) == pytest.approx(sb / st)


def test_shift_score_is_response_minus_prompt_projection():
    v = np.array([0.6, 0.8])
    scores = compliance_shift_score(np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]), v)
    np.testing.assert_allclose(scores, [1.4, -0.6])


def test_fit_picks_the_separating_layer_and_scores_along_its_direction():
    rng = np.random.default_rng(0)
    shifts = {1: 0.2, 2: 5.0, 3: 1.0}
    compliant = synthetic_states(rng, 40, shifts)
    refusal = synthetic_states(rng, 40, {layer: 0.0 for layer in shifts})
    scorer = DataShieldScorer(reference_rows()).fit_features(compliant, refusal)
    assert scorer.layer_ == 2
    assert max(scorer.cas_, key=scorer.cas_.get) == 2
    assert abs(scorer.direction_[0]) > 0.95 and scorer.direction_[0] > 0
    assert scorer.candidate_request().layers == frozenset({2})

    response = np.zeros((3, D))
    response[:, 0] = [3.0, 0.0, -3.0]
    hidden = HiddenStates(
        np.arange(3),
        np.full(3, 5),
        {
            (2, "response_mean"): response,
            (2, "prompt_last"): np.zeros((3, D)),
        },
    )
    scores = scorer.score(CandidateFeatures(hidden.sample_idx, hidden.num_tokens, hidden))
    np.testing.assert_allclose(scores, response @ scorer.direction_)
    assert scores[0] > scores[1] > scores[2]


def test_fixed_layer_skips_cas():
    rng = np.random.default_rng(0)
    scorer = DataShieldScorer(reference_rows(), layer=3)
    request = scorer.reference_request(num_layers=4)
    assert request.layers == frozenset({3}) and request.poolings == frozenset({"response_mean"})
    scorer.fit_features(synthetic_states(rng, 10, {3: 2.0}), synthetic_states(rng, 10, {3: 0.0}))
    assert scorer.layer_ == 3 and scorer.cas_ == {}
    with pytest.raises(ValueError, match="exceeds"):
        DataShieldScorer(reference_rows(), layer=9).reference_request(num_layers=4)


def test_reference_labels_and_sizes():
    scorer = DataShieldScorer(reference_rows())
    assert {k: len(v) for k, v in scorer.pairs.items()} == {"compliance": 8, "refusal": 8}
    assert scorer.describe()["reference_rows_ignored"] == 1
    with pytest.raises(ValueError, match="too few to build a compliance direction"):
        DataShieldScorer(reference_rows(n_each=3))
    with pytest.raises(ValueError, match="missing column"):
        DataShieldScorer(Dataset.from_list([{"prompt": "a", "response": "b"}]))


def test_unfitted_scorer_refuses_to_score():
    with pytest.raises(RuntimeError, match="not fitted"):
        DataShieldScorer(reference_rows()).candidate_request()
