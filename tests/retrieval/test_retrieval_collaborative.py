"""The collaborative retriever: a user's items ranked by other users' answers, the asker always left out."""

from __future__ import annotations

import numpy as np
import pytest

from pllm.errors import InputError
from pllm.retrieval import CoRatings, Doc, make_retriever
from pllm.retrieval.base import retriever_options, retriever_reads_train

ANSWERS = {  # item -> {user: rating}
    "Heat": {"a": 5, "b": 4, "c": 1, "me": 5},
    "Ronin": {"a": 5, "b": 5, "c": 2, "me": 1},
    "Babe": {"a": 1, "b": 2, "c": 5},
    "Solo": {"z": 3},
}


def _adjusted_cosine(answers: dict[str, dict[str, float]], i: str, j: str) -> float:
    users = {u for by in answers.values() for u in by}
    mean = {u: np.mean([by[u] for by in answers.values() if u in by]) for u in users}
    vi = {u: r - mean[u] for u, r in answers[i].items()}
    vj = {u: r - mean[u] for u, r in answers[j].items()}
    dot = sum(vi[u] * vj[u] for u in vi.keys() & vj.keys())
    return dot / np.sqrt(sum(v * v for v in vi.values()) * sum(v * v for v in vj.values()))


def test_similarity_is_adjusted_cosine_shrunk_by_co_raters() -> None:
    plain = CoRatings(ANSWERS, shrink=0)
    sims = plain.similarity("Heat", ["Ronin", "Babe", "Solo", "Unknown", None])
    assert sims[:2] == pytest.approx([_adjusted_cosine(ANSWERS, "Heat", j) for j in ("Ronin", "Babe")])
    assert list(sims[2:]) == [0.0, 0.0, 0.0]  # no co-rater, nobody answered it, no key
    assert list(plain.similarity("Unknown", ["Heat"])) == [0.0]
    shrunk = CoRatings(ANSWERS, shrink=6).similarity("Heat", ["Ronin", "Babe"])
    assert shrunk == pytest.approx(sims[:2] * np.array([4 / 10, 3 / 9]))  # 4 and 3 users answered both
    with pytest.raises(InputError, match="shrink"):
        CoRatings(ANSWERS, shrink=-1)


def test_leaving_the_asker_out_equals_fitting_without_them() -> None:
    without = {item: {u: r for u, r in by.items() if u != "me"} for item, by in ANSWERS.items()}
    left_out = CoRatings(ANSWERS, shrink=2).similarity("Heat", ["Ronin", "Babe"], leave_out="me")
    assert left_out == pytest.approx(CoRatings(without, shrink=2).similarity("Heat", ["Ronin", "Babe"]))
    # "me" rated Heat 5 and Ronin 1: with them in, the two look less alike
    assert CoRatings(ANSWERS, shrink=2).similarity("Heat", ["Ronin"])[0] < left_out[0]


def test_the_cf_retriever_ranks_by_co_ratings_and_needs_them() -> None:
    assert retriever_reads_train("cf") and not retriever_reads_train("bm25")
    co = CoRatings(ANSWERS, shrink=0)
    options = retriever_options("cf", coratings=co, user_id="me", embedder="minilm", seed=3)
    assert options == {"coratings": co, "user_id": "me"}
    docs = [Doc("Babe (1995)", key="Babe"), Doc("Solo", key="Solo"), Doc("Heat again", key=None),
            Doc("Ronin (1998)", key="Ronin")]
    hits = make_retriever("cf", **options).build(docs).search("Heat", 3)
    # Ronin is alike once "me" is left out, Babe opposite; the unknowns score 0 and keep profile order
    assert [h.index for h in hits] == [3, 1, 2]
    assert hits[0].score > 0 and hits[1].score == 0
    assert make_retriever("cf", **options).build(docs).search("Heat", 0) == []
    with pytest.raises(InputError, match="train split"):
        make_retriever("cf")
