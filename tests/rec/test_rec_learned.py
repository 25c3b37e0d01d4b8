"""The fine-tuned pointwise ranker (`llm-pointwise-ft`), the crowd line it reads, and the two-stage hybrid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pllm.adapt.store import AdapterStore
from pllm.adapt.train import TRAINING_TEXTS
from pllm.data.base import BUILDERS
from pllm.data.movielens import load_movielens
from pllm.errors import ArtifactError, InputError
from pllm.models.testing import make_tiny_generator
from pllm.rec.data import RecBuildConfig, candidates_of, kept_ratings, rec_crowd, target_index
from pllm.rec.hybrid import MeanRanker, RecordedRanker, StackConfig, StackedRanker, Stacker, fit_stacker, list_features
from pllm.rec.rankers import (
    FinetunedPointwiseRanker,
    PointwiseConfig,
    PointwiseRanker,
    Ranker,
    candidate_question,
    make_ranker,
    train_pointwise_adapter,
    training_interactions,
)
from pllm.rec.runner import recorded_scores, run_ranker
from pllm.types import Question

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def splits(ml_dir):
    return BUILDERS.get("movielens-rec")().questions(
        RecBuildConfig(source=str(ml_dir), out="-", split="time", negatives=5))


def test_crowd_line_reads_the_classic_rankers_ratings_and_never_the_asker(splits, ml_dir):
    ml = load_movielens(ml_dir)
    test = splits["test"]
    crowd = rec_crowd(ml, test)
    kept = kept_ratings(ml.ratings, test)
    assert not any(r.user_id == q.user_id and r.timestamp >= q.timestamp for q in test for r in kept)
    for q in test:
        for cand in candidates_of(q):
            expected = sorted("Yes" if r.rating >= 4 else "No" for r in kept
                              if r.movie_id == cand["movie_id"] and r.user_id != q.user_id)
            assert sorted(crowd.answers(candidate_question(q, cand))) == expected
    # the same ratings the classic rankers are fitted on
    inter = training_interactions(ml.ratings, test)
    assert int(inter.matrix.nnz) == len({(r.user_id, r.movie_id) for r in kept})


def test_fine_tuned_ranker_learns_from_training_users_lists_only(splits, ml_dir, tmp_path):
    ml = load_movielens(ml_dir)
    test_users = {"4", "5", "6"}
    test = [q for q in splits["test"] if q.user_id in test_users]
    train = [q for q in splits["train"] if q.user_id not in test_users]
    crowd = rec_crowd(ml, test)
    config = PointwiseConfig(k=2, crowd=True)
    base = make_tiny_generator(seed=0)
    store = AdapterStore(tmp_path / "adapters")
    record, trained = train_pointwise_adapter(base, train, config, store=store, crowd=crowd, negatives=2,
                                              max_pairs=9, seed=0)
    assert trained and record.n_pairs == 3 * min(3, len(train))
    assert set(record.members) <= {q.user_id for q in train}
    texts = [json.loads(line) for line in (record.path / TRAINING_TEXTS).read_text().splitlines()]
    train_ids = {q.id for q in train}
    assert all(t["item"].split("#")[0] in train_ids for t in texts)  # only training lists' candidates
    assert all("Other users" in t["prompt"] for t in texts)  # the crowd line is in every training prompt
    assert sorted({t["target"].strip().split()[-1] for t in texts}) == ["No", "Yes"]
    again, trained_again = train_pointwise_adapter(base, train, config, store=store, crowd=crowd, negatives=2,
                                                   max_pairs=9, seed=0)
    assert not trained_again and again.data_hash == record.data_hash  # cached by content

    plain = PointwiseRanker(base, config, crowd=crowd)
    ft = make_ranker("llm-pointwise-ft", generator=base, config=config, adapter=record, crowd=crowd)
    assert isinstance(ft, FinetunedPointwiseRanker) and ft.generator is not base
    q = test[0]
    before = plain.score(q)
    scores = ft.score(q)
    assert scores.shape == (len(candidates_of(q)),) and np.isfinite(scores).all()
    assert not np.allclose(scores, before)  # the merged adapter changed the model
    np.testing.assert_allclose(plain.score(q), before)  # the base model is untouched
    assert ft.describe()["train_pairs"] == record.n_pairs

    with pytest.raises(ArtifactError, match=str(record.path)):
        FinetunedPointwiseRanker(base, PointwiseConfig(k=2, crowd=False), adapter=record, crowd=crowd)
    ranked_config = PointwiseConfig(k=2, crowd=True, crowd_rank=True)
    with pytest.raises(ArtifactError, match="crowd_rank"):  # trained without the standing in the crowd line
        FinetunedPointwiseRanker(base, ranked_config, adapter=record, crowd=crowd)
    ranked, _ = train_pointwise_adapter(base, train, ranked_config, store=store, crowd=crowd, negatives=2,
                                        max_pairs=9, seed=0)
    assert ranked.path != record.path and record.path.is_dir()  # its own adapter: the first is not overwritten
    ranked_texts = [json.loads(line) for line in (ranked.path / TRAINING_TEXTS).read_text().splitlines()]
    counted = [t["prompt"] for t in ranked_texts if "Other users (" in t["prompt"]]  # candidates others rated
    assert counted and all("% of items) for this item" in p for p in counted)
    with pytest.raises(InputError, match="crowd_rank"):
        PointwiseConfig(crowd=False, crowd_rank=True)
    with pytest.raises(InputError, match="training lists"):
        train_pointwise_adapter(base, [], config, store=store, crowd=crowd)
    with pytest.raises(InputError, match="crowd"):
        PointwiseRanker(base, config)  # a crowd prompt without the crowd data


def _lists(n: int, seed: int) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    rng = np.random.default_rng(seed)
    lists, targets = [], []
    for _ in range(n):
        t = int(rng.integers(10))
        good = rng.normal(size=10)
        good[t] += 3.0
        lists.append({"good": good, "noise": rng.normal(size=10)})
        targets.append(t)
    return lists, targets


def test_stacker_leans_on_the_informative_component():
    lists, targets = _lists(200, seed=0)
    stacker = Stacker(StackConfig(features=["good", "noise"])).fit(lists, targets)
    w = stacker.weights()
    assert w["good"][0] > 0.5 and abs(w["noise"][0]) < w["good"][0] / 3
    held, held_targets = _lists(50, seed=1)
    top1 = np.mean([int(np.argmax(stacker.combine(s))) == t for s, t in zip(held, held_targets)])
    assert top1 > 0.7
    with pytest.raises(InputError, match="noise"):
        stacker.combine({"good": held[0]["good"]})


def test_list_features_standardize_rank_and_handle_unknown_items():
    f = list_features(np.array([1.0, -np.inf, 3.0, 3.0]))
    assert f.shape == (4, 2)
    np.testing.assert_allclose(f[:, 1], [1 / 6, 1 / 6, 5 / 6, 5 / 6])  # ties share their mean rank
    assert abs(f[:, 0].mean()) < 1e-9 and f[0, 0] == f[1, 0]  # -inf counts as the list's lowest
    np.testing.assert_allclose(list_features(np.ones(3))[:, 0], 0.0)


class _Fixed(Ranker):
    name = "fixed"

    def __init__(self, bonus: float) -> None:
        self.bonus = bonus

    def score(self, question: Question) -> np.ndarray:
        s = np.zeros(len(candidates_of(question)))
        s[target_index(question)] += self.bonus
        return s


def test_mean_ranker_averages_standardized_scores_with_equal_weights(splits):
    """Scales do not matter (each member is standardized within the list); nothing is fitted."""
    q = splits["test"][0]
    big, small = _Fixed(1000.0), _Fixed(0.001)
    both = MeanRanker("ens", [big, small], kind="llm")
    np.testing.assert_allclose(both.score(q), list_features(big.score(q))[:, 0])  # same order, same z-scores
    assert int(np.argmax(both.score(q))) == target_index(q) and both.kind == "llm"
    opposed = MeanRanker("ens", [big, _Fixed(-1.0)], kind="llm").score(q)  # opposite views cancel out
    assert both.describe()["mean_of"] and np.allclose(opposed, 0.0)
    with pytest.raises(InputError, match="at least two rankers"):
        MeanRanker("ens", [big], kind="llm")


def test_stacked_ranker_scores_with_recorded_components_and_reports_its_weights(splits, ml_dir, tmp_path):
    test = splits["test"]
    ck = tmp_path / "pop.jsonl"
    pop = make_ranker("popularity")
    pop.fit(training_interactions(load_movielens(ml_dir).ratings, test))
    res = run_ranker(pop, test, checkpoint=ck)
    recorded = RecordedRanker("popularity", recorded_scores(ck), fallback=pop)  # dev lists: scored by `pop`
    assert set(recorded.scores) == set(res.ranks)
    np.testing.assert_allclose(recorded.score(test[0]), pop.score(test[0]), atol=1e-5)
    comps = {"popularity": recorded, "oracle": _Fixed(1.0)}
    stacker = fit_stacker(StackConfig(features=["oracle", "popularity"]), comps, splits["dev"])
    ranker = StackedRanker(comps, stacker, label="hybrid-test")
    assert all(int(np.argmax(ranker.score(q))) == target_index(q) for q in test)
    assert ranker.describe()["weights"]["oracle"][0] > 0
    with pytest.raises(InputError, match="no component"):
        StackedRanker({"oracle": _Fixed(1.0)}, stacker)
    with pytest.raises(InputError, match="no recorded"):
        RecordedRanker("popularity", {}).score(test[0])
    with pytest.raises(InputError, match="entries"):
        RecordedRanker("popularity", {test[0].id: np.zeros(2)}).score(test[0])
    for bad in ({"features": []}, {"features": ["a", "a"]}, {"features": ["a"], "c": 0.0}):
        with pytest.raises(InputError):
            StackConfig(**bad)
