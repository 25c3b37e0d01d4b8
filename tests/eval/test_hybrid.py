"""Hybrid rating predictors: fitted on train rows only, with a collaborative-only twin."""

import dataclasses

import numpy as np
import pytest

from pllm.errors import InputError
from pllm.eval.hybrid import HybridConfig, HybridRater
from pllm.pipeline import PredictionRecord
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question


@pytest.fixture
def spec():
    return get_task("movielens-rating")


def _data(n: int, seed: int):
    """Users with a noisy history; the target is a hidden per-question value the 'LLM' sees sharply."""
    rng = np.random.default_rng(seed)
    qs, recs = [], []
    for i in range(n):
        user = f"u{seed}-{i}"
        target = int(rng.integers(1, 6))
        items = [ProfileItem(id=f"{user}-{j}", user_id=user, fields={
            "title": f"M{j}", "year": "1995", "genres": "Drama", "rating": str(int(rng.integers(1, 6)))})
            for j in range(6)]
        q = Question(id=f"q-{user}", user_id=user, input="x", query={"title": f"T{i}", "year": "1995",
                     "genres": "Drama"}, profile=items, target=str(target))
        scores = {str(lab): (0.0 if lab == target else -3.0) for lab in range(1, 6)}
        qs.append(q)
        recs.append(PredictionRecord(id=q.id, user_id=user, prediction=None, target=None, label_scores=scores))
    return qs, recs


def _mae(records, questions):
    return float(np.mean([abs(float(r.prediction) - float(q.target)) for r, q in zip(records, questions)]))


def test_hybrid_learns_from_the_llm_and_its_cf_twin_does_not(spec):
    train, train_recs = _data(200, 0)
    test, test_recs = _data(60, 1)
    hybrid = HybridRater(spec, HybridConfig("gbm")).fit(train, train_recs)
    cf = HybridRater(spec, HybridConfig("gbm", use_llm=False)).fit(train)
    assert _mae(hybrid.predict(test, test_recs), test) < 0.3 < _mae(cf.predict(test), test)
    assert HybridConfig("linear").label == "hybrid-linear" and HybridConfig(use_llm=False).label == "cf-gbm"


def test_hybrid_never_reads_a_scored_target_and_needs_train_targets(spec):
    train, train_recs = _data(100, 0)
    test, test_recs = _data(20, 1)
    rater = HybridRater(spec, HybridConfig("linear")).fit(train, train_recs)
    a = [r.prediction for r in rater.predict(test, test_recs)]
    hidden = [dataclasses.replace(q, target=None) for q in test]
    assert [r.prediction for r in rater.predict(hidden, test_recs)] == a
    with pytest.raises(InputError, match="at least 20 train questions with targets"):
        HybridRater(spec).fit(hidden, test_recs)
    with pytest.raises(InputError, match="no LLM label scores"):
        rater.predict(test, [])
    with pytest.raises(InputError, match="numeric labels"):
        HybridRater(get_task("movielens-genre"))
