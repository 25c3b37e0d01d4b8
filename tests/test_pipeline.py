from __future__ import annotations

import math

import pytest

from pllm.errors import InputError, UnknownNameError
from pllm.pipeline import MethodConfig, Personalizer
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import get_task
from pllm.users.store import SQLiteUserStore
from pllm_testkit import EchoGenerator


def test_score_mode_uses_retrieved_demonstrations(lamp3_files):
    q, o = lamp3_files
    spec = get_task("LaMP-3")
    qs = read_questions(q, spec=spec, outputs=o)
    gen = EchoGenerator()
    pers = Personalizer(spec, gen, MethodConfig(retriever="bm25", k=1))
    assert pers.mode == "score" and pers.style.name == "demonstrations"
    recs = pers.predict(qs)
    # The echo scorer prefers labels that appear in the prompt: the top bm25 item's score.
    assert [r.retrieved for r in recs] == [["r1"], ["r4"], ["s1"]]
    assert [r.prediction for r in recs] == ["5", "3", "1"]
    assert all(r.label_scores and set(r.label_scores) == set(spec.labels) for r in recs)
    # The retrieval query is the structured review text, never the instruction around it.
    assert spec.retrieval_query(qs[0]) == "love this great battery life"


def test_generate_mode_parses_and_counts_unparseable(lamp3_files):
    q, o = lamp3_files
    spec = get_task("LaMP-3")
    qs = read_questions(q, spec=spec, outputs=o)
    recs = Personalizer(spec, EchoGenerator(answer="no idea"), MethodConfig(predict="generate")).predict(qs)
    assert all(r.prediction is None and r.raw == "no idea" for r in recs)
    recs = Personalizer(spec, EchoGenerator(answer="4 stars"), MethodConfig(predict="generate")).predict(qs)
    assert [r.prediction for r in recs] == ["4", "4", "4"]


def test_expected_readout_on_numeric_labels(lamp3_files):
    q, o = lamp3_files
    spec = get_task("LaMP-3")
    recs = Personalizer(spec, EchoGenerator(), MethodConfig(retriever="bm25", k=1, readout="expected")).predict(
        read_questions(q, spec=spec, outputs=o))
    scores = recs[0].label_scores
    weights = {lab: math.exp(v) for lab, v in scores.items()}
    expected = sum(float(lab) * w for lab, w in weights.items()) / sum(weights.values())
    assert float(recs[0].prediction) == pytest.approx(expected, abs=1e-4)
    assert scores["5"] > scores["1"]


def test_dense_and_hybrid_persist_embeddings_in_store(lamp3_files, bow_embedder, tmp_path):
    q, o = lamp3_files
    spec = get_task("LaMP-3")
    qs = read_questions(q, spec=spec, outputs=o)
    with SQLiteUserStore(tmp_path / "s.db") as store:
        for name in ("dense", "hybrid"):
            pers = Personalizer(spec, EchoGenerator(), MethodConfig(retriever=name, k=2, embedder=bow_embedder),
                                store=store)
            recs = pers.predict(qs)
            assert all(len(r.retrieved) == 2 for r in recs)
        n = store.execute("SELECT COUNT(*) FROM embeddings")[0][0]
        assert n == 5 + 1  # distinct item texts per user: u1 has 4 (r1 shared), u2 has 2
        from pllm.retrieval.embedders import load_embedder

        emb = load_embedder(bow_embedder)
        before = len(emb.encoded)
        Personalizer(spec, EchoGenerator(), MethodConfig(retriever="dense", k=2, embedder=bow_embedder),
                     store=store).predict(qs)
        assert len(emb.encoded) - before == len(qs)  # only the queries were encoded: items came from the store


def test_profile_method_and_errors(lamp3_files, tmp_path):
    q, o = lamp3_files
    spec = get_task("LaMP-3")
    qs = read_questions(q, spec=spec, outputs=o)
    gen = EchoGenerator(answer="A picky reviewer.")
    with SQLiteUserStore(tmp_path / "s.db") as store:
        recs = Personalizer(spec, gen, MethodConfig(profile=True), store=store).predict(qs)
        assert len(recs) == 3
        assert any("About this user: A picky reviewer." in p.text for p in gen.prompts)
    with pytest.raises(InputError, match="store"):
        Personalizer(spec, gen, MethodConfig(profile=True))
    with pytest.raises(UnknownNameError, match="bm25"):
        Personalizer(spec, gen, MethodConfig(retriever="nope"))
    with pytest.raises(InputError, match="no label set"):
        Personalizer(get_task("LaMP-4"), gen, MethodConfig(predict="score"))
    with pytest.raises(InputError, match="k must be"):
        MethodConfig(k=-1)


def test_tiny_real_model_scores_and_generates(tiny_generator, lamp3_files):
    q, o = lamp3_files
    spec = get_task("LaMP-3")
    qs = read_questions(q, spec=spec, outputs=o)
    scored = Personalizer(spec, tiny_generator, MethodConfig(retriever="bm25", k=2)).predict(qs)
    assert all(r.prediction in spec.labels and r.prompt_tokens > 0 for r in scored)
    gen = Personalizer(spec, tiny_generator, MethodConfig(retriever="recency", k=2, predict="generate",
                                                           style="instruction")).predict(qs)
    assert all(r.prediction is None or r.prediction in spec.labels for r in gen)


def test_stats_profile_goes_into_the_prompt_for_label_tasks():
    from pllm.models.testing import make_tiny_generator
    from pllm.pipeline import MethodConfig, Personalizer
    from pllm.tasks.spec import get_task
    from pllm.types import ProfileItem, Question

    spec = get_task("movielens-genre")
    items = [ProfileItem(id=f"i{n}", user_id="u", fields={"title": "T", "year": "1990", "genres": "Drama",
                                                          "rating": "5", "tag": tag})
             for n, tag in enumerate(["Drama", "Drama", "Comedy"])]
    q = Question(id="q", user_id="u", input="T", query={"title": "T", "year": "1990"}, profile=items, target="Drama")
    built = Personalizer(spec, make_tiny_generator(), MethodConfig(stats=True)).build_prompts([q])[0]
    assert "3 past answers, most frequent: Drama 67%, Comedy 33%." in built.prompt.text


def test_cf_retrieval_shows_the_items_other_users_rate_alike_with_the_asker_left_out():
    """`cf@k` picks the user's items by the train split's co-ratings (a fitted ItemCrowd), not by text. With the
    asker's own train ratings in, Babe would look like Heat and Ronin unlike it; left out, the order flips."""
    from pllm.prompting.profile import ItemCrowd
    from pllm.types import ProfileItem, Question

    spec = get_task("movielens-rating")

    def item(user, title, rating):
        return ProfileItem(id=f"{user}-{title}", user_id=user,
                           fields={"title": title, "year": "1995", "genres": "Drama", "rating": str(rating)})

    ratings = {"a": (5, 4, 3), "b": (4, 5, 3), "c": (2, 1, 3), "me": (5, 1, 5)}  # Heat, Ronin, Babe
    train = [Question(id=f"t-{u}", user_id=u, input="x", query={"title": "Other", "genres": "Drama"},
                      profile=[item(u, t, r) for t, r in zip(("Heat", "Ronin", "Babe"), rs)])
             for u, rs in ratings.items()]
    crowd = ItemCrowd(spec).fit(train)
    assert crowd.coratings() is crowd.coratings()  # built once, shared by every user's index
    ask = Question(id="q", user_id="me", input="Heat", query={"title": "Heat", "year": "1995", "genres": "Drama"},
                   profile=[item("me", "Babe", 5), item("me", "Ronin", 1)])
    method = MethodConfig(retriever="cf", k=1)
    assert method.reads_crowd and not method.crowd and MethodConfig(crowd=True).reads_crowd
    pers = Personalizer(spec, EchoGenerator(), method, crowd=crowd)
    assert [p.id for p in pers.retrieve(ask)] == ["me-Ronin"]
    assert pers.predict([ask])[0].retrieved == ["me-Ronin"]
    assert "Other users" not in pers.build_prompts([ask])[0].prompt.text  # cf@k alone adds no crowd line
    # someone else asking about Heat with the same items: "me"'s ratings count, and Babe is nearer
    other = Question(id="q2", user_id="x", input="Heat", query=ask.query, profile=ask.profile)
    assert [p.id for p in pers.retrieve(other)] == ["me-Babe"]
    with pytest.raises(InputError, match="retrieves by other users' answers: it needs the train split"):
        Personalizer(spec, EchoGenerator(), method)
