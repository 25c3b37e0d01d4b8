import numpy as np
import pytest

from pllm.data.movielens import load_movielens
from pllm.errors import UnknownNameError
from pllm.models import load_generator
from pllm.rec.data import RecBuildConfig, target_index
from pllm.rec.rankers import (
    Interactions,
    ListwiseConfig,
    PointwiseConfig,
    make_ranker,
    parse_letter,
    training_interactions,
)
from pllm.rec.runner import markdown_table, run_ranker, summarize


@pytest.fixture
def rec_data(ml_dir):
    from pllm.data.base import BUILDERS

    qs = BUILDERS.get("movielens-rec")().questions(
        RecBuildConfig(source=str(ml_dir), out="-", split="time", negatives=5))["test"]
    ml = load_movielens(ml_dir)
    return qs, training_interactions(ml.ratings, qs, items=sorted(ml.movies, key=int))


def test_training_data_never_holds_targets_or_later_ratings(rec_data, ml_dir):
    qs, train = rec_data
    ml = load_movielens(ml_dir)
    for q in qs:
        row = train.matrix[train.user_index[q.user_id]].toarray().ravel()
        seen = {train.items[i] for i in np.flatnonzero(row)}
        assert q.target not in seen
        later = {r.movie_id for r in ml.ratings if r.user_id == q.user_id and r.timestamp >= q.timestamp}
        assert not seen & later
        assert seen == {p.fields["movie_id"] for p in q.profile}


def test_popularity_and_itemknn_by_hand():
    # users a, b, c; items 1..3: item 1 rated by all, item 2 by a and b, item 3 by c only.
    train = Interactions.from_pairs([("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "1"), ("c", "3")])
    from pllm.types import ProfileItem, Question

    q = Question(id="q", user_id="z", input="", target="2",
                 query={"candidates": [{"movie_id": m} for m in ("3", "2", "1")]},
                 profile=[ProfileItem(id="p", fields={"movie_id": "1"})])
    pop = make_ranker("popularity")
    pop.fit(train)
    assert pop.score(q).tolist() == [1.0, 2.0, 3.0]
    knn = make_ranker("itemknn")
    knn.fit(train)
    # cos(1,2) = 2/sqrt(3*2), cos(1,3) = 1/sqrt(3*1), item 1 to itself is excluded
    assert knn.score(q) == pytest.approx([1 / np.sqrt(3), 2 / np.sqrt(6), 0.0])


def test_classic_rankers_run_and_report(rec_data):
    qs, train = rec_data
    results = []
    for name in ("random", "popularity", "itemknn", "mf-svd"):
        r = make_ranker(name)
        r.fit(train)
        results.append(run_ranker(r, qs))
    rows = summarize(results, n_resamples=50)
    assert [row.ranker for row in rows] == ["random", "popularity", "itemknn", "mf-svd"]
    for row in rows:
        assert row.n == len(qs) and 0 <= row.metrics["recall@1"].value <= row.metrics["recall@5"].value <= 1
    assert rows[1].vs_reference == {} and "ndcg@5" in rows[2].vs_reference
    with pytest.raises(UnknownNameError):
        make_ranker("nope")


def test_mf_als_from_implicit(rec_data):
    pytest.importorskip("implicit")
    qs, train = rec_data
    r = make_ranker("mf-als", factors=4, iterations=3)
    r.fit(train)
    s = r.score(qs[0])
    assert s.shape == (len(qs[0].query["candidates"]),) and np.isfinite(s).all()


def test_pointwise_scores_one_batch_per_user(rec_data, echo_backend):
    qs, _ = rec_data
    gen = load_generator(echo_backend)
    ranker = make_ranker("llm-pointwise", generator=gen, config=PointwiseConfig(retriever="bm25", k=2))
    scores = ranker.score(qs[0])
    n = len(qs[0].query["candidates"])
    assert scores.shape == (n,)
    assert len(gen.prompts) == n  # every candidate of the user scored in one call
    p = gen.prompts[0]
    assert p.question.user_id == qs[0].user_id and "Liked:" in p.text and not p.chat
    assert p.text.count("Movie:") == 3  # two retrieved history items + the candidate


def test_shard_runs_resume_past_the_unsharded_checkpoint(rec_data, echo_backend, tmp_path):
    qs, _ = rec_data
    gen = load_generator(echo_backend)
    ranker = make_ranker("llm-pointwise", generator=gen, config=PointwiseConfig(k=2))
    run_ranker(ranker, qs[:1], checkpoint=tmp_path / "pw.jsonl")  # an earlier unsharded run
    gen.prompts.clear()
    shard = run_ranker(ranker, qs[0::2], checkpoint=tmp_path / "pw.s0.jsonl")
    # the shard scores only what nobody scored yet, and the assembled run sees every file
    assert len(gen.prompts) == len(qs[2::2]) * len(qs[0].query["candidates"])
    assert len((tmp_path / "pw.s0.jsonl").read_text().splitlines()) == len(qs[2::2])
    assert set(shard.ranks) == {q.id for q in qs[0::2]}
    whole = run_ranker(ranker, qs[0::2], checkpoint=tmp_path / "pw.jsonl", score_missing=False)
    assert whole.ranks == shard.ranks


def test_pointwise_and_listwise_on_tiny_model(rec_data, tiny_generator, tmp_path):
    qs, _ = rec_data
    q = qs[0]
    pw = make_ranker("llm-pointwise", generator=tiny_generator, config=PointwiseConfig(k=2))
    lw = make_ranker("llm-listwise", generator=tiny_generator, config=ListwiseConfig(k=3, permutations=2))
    for ranker in (pw, lw):
        s = ranker.score(q)
        assert s.shape == (len(q.query["candidates"]),) and np.isfinite(s).all()
    # listwise: letters are scored over both orders; a candidate's score averages its two slots
    res = run_ranker(lw, qs[:2], checkpoint=tmp_path / "lw.jsonl")
    again = run_ranker(lw, qs[:2], checkpoint=tmp_path / "lw.jsonl", score_missing=False)
    assert res.ranks == again.ranks and len((tmp_path / "lw.jsonl").read_text().splitlines()) == 2
    # each checkpointed user records where the model scored it, and the report row says so
    assert res.extra["devices"] == again.extra["devices"] == {"cpu": 2}
    assert '"device": "cpu"' in (tmp_path / "lw.jsonl").read_text()
    assert markdown_table(summarize([res], n_resamples=50)).splitlines()[-1].endswith("| cpu |")
    assert 1 <= res.ranks[q.id] <= len(q.query["candidates"]) and target_index(q) >= 0


def test_listwise_generate_fallback_counts_unparseable(rec_data, letter_backend):
    qs, _ = rec_data
    gen = load_generator(letter_backend, answer="B")
    ranker = make_ranker("llm-listwise", generator=gen, config=ListwiseConfig(k=2, permutations=2))
    s = ranker.score(qs[0])
    n = len(s)
    assert s[1] == 1.0 and s[n - 2] == 1.0 and s.sum() == 2.0  # slot B in the forward and reversed order
    bad = make_ranker("llm-listwise", generator=load_generator(letter_backend, answer="no idea"))
    assert bad.score(qs[0]).sum() == 0 and bad.unparseable == 2
    assert parse_letter("Option C.", 5) == 2 and parse_letter("Z", 5) is None
