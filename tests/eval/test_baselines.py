import numpy as np
import pytest

from pllm.eval.baselines import baselines_for, make_baseline
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question


@pytest.fixture
def spec():
    return get_task("movielens-rating")


def _item(user, title, rating, i=0):
    return ProfileItem(id=f"{user}-{title}", user_id=user, timestamp=float(i),
                       fields={"title": title, "year": "1995", "genres": "Drama", "rating": str(rating)})


def _question(user, title, profile, target=None):
    return Question(id=f"{user}-q-{title}", user_id=user, input=title,
                    query={"title": title, "year": "1995", "genres": "Drama"}, profile=profile, target=target)


def test_rating_tasks_get_the_median_and_bias_baselines(spec):
    assert {"user-median", "bias", "user-mean"} <= set(baselines_for(spec))
    assert "user-median" not in baselines_for(get_task("movielens-genre"))


def test_user_median_is_the_median_of_the_users_own_ratings(spec):
    q = _question("u", "Heat", [_item("u", t, r) for t, r in [("A", 1), ("B", 4), ("C", 5), ("D", 4)]])
    base = make_baseline("user-median", spec).fit([])
    assert base.predict([q])[0].prediction == "4.0000"


def test_bias_model_adds_item_and_user_biases_fitted_on_train_only(spec):
    # Train: "Good" is rated 5 by everyone, "Bad" 1; the scored user rates 1 point above others.
    train = [_question(f"t{i}", "Good", [_item(f"t{i}", "Bad", 1), _item(f"t{i}", "Mid", 3)], target="5")
             for i in range(40)]
    base = make_baseline("bias", spec, item_reg=0.0, user_reg=0.0).fit(train)
    mu = base.mu
    assert mu == pytest.approx(3.0)
    assert base.item_bias["Good Drama"] == pytest.approx(2.0)
    user = _question("u", "Good", [_item("u", "Mid", 4)])  # Mid's bias is 0: user bias +1
    assert float(base.predict([user])[0].prediction) == 5.0  # 3 + 2 + 1 = 6, clipped to the scale
    user = _question("u", "Mid", [_item("u", "Bad", 2)])  # Bad's bias is -2: user bias +1
    assert float(base.predict([user])[0].prediction) == pytest.approx(4.0)
    # an unseen item and an empty history: the global mean, counted as a fallback
    assert float(base.predict([_question("v", "New", [])])[0].prediction) == pytest.approx(mu)
    assert base.fallbacks == 1


def test_bias_model_never_reads_the_scored_target(spec):
    q = _question("u", "Heat", [_item("u", "A", 3)], target="5")
    a = make_baseline("bias", spec).fit([]).predict([q])[0].prediction
    q.target = "1"
    b = make_baseline("bias", spec).fit([]).predict([q])[0].prediction
    assert a == b and np.isfinite(float(a))


def test_candidate_similarity_picks_the_candidate_nearest_the_profile(bow_embedder):
    spec = get_task("LaMP-1")
    assert "candidate-similarity" in baselines_for(spec) and "user-mean" not in baselines_for(spec)
    profile = [ProfileItem(id=f"p{i}", user_id="u", fields={"title": t, "abstract": "graph neural networks"})
               for i, t in enumerate(["message passing on graphs", "graph attention"])]
    q = Question(id="q", user_id="u", input="x", profile=profile,
                 query={"title": "t", "ref1": "protein folding in cells", "ref2": "graph neural message passing"})
    base = make_baseline("candidate-similarity", spec, embedder=bow_embedder).fit([])
    assert base.predict([q])[0].prediction == "[2]"
    q.query = {"title": "t", "ref1": "graph attention networks", "ref2": "crop yields"}
    assert base.predict([q])[0].prediction == "[1]"


def test_label_texts_must_cover_the_labels():
    from pllm.errors import InputError
    from pllm.tasks.spec import spec_from_dict

    with pytest.raises(InputError, match="label_texts must name every label"):
        spec_from_dict({"name": "x", "kind": "classification", "labels": ["a", "b"], "metrics": ["accuracy"],
                        "label_texts": {"a": "{ref1}"}})


def _tagged(user, title, tag, genres="Drama|Romance", i=0):
    return ProfileItem(id=f"{user}-{title}", user_id=user, timestamp=float(i),
                       fields={"title": title, "year": "1995", "genres": genres, "rating": "4", "tag": tag})


def test_item_label_baselines_read_other_users_answers_for_the_item():
    """`item-most-frequent`: the item's most frequent label among the train users; `item-user-favourite`:
    among those labels, the one the scored user gives most; both leave the scored user's own answers out."""
    genre = get_task("movielens-genre")
    assert {"item-most-frequent", "item-user-favourite"} <= set(baselines_for(genre))
    assert "item-most-frequent" not in baselines_for(get_task("movielens-rating"))
    train = [Question(id=f"t{i}", user_id=f"t{i}", input="x", query={"title": "Other"},
                      profile=[_tagged(f"t{i}", "Titanic", "Drama" if i < 3 else "Romance")], target="Drama")
             for i in range(5)]
    # the scored user tagged Titanic "Action" in training: their own answer never counts for them
    train.append(Question(id="u0", user_id="u", input="x", query={"title": "Other"},
                          profile=[_tagged("u", "Titanic", "Action")], target="Drama"))
    q = Question(id="q", user_id="u", input="Titanic", query={"title": "Titanic", "year": "1995"},
                 profile=[_tagged("u", f"M{i}", "Romance", i=i) for i in range(3)] + [_tagged("u", "N", "Drama")])
    assert make_baseline("item-most-frequent", genre).fit(train).predict([q])[0].prediction == "Drama"
    assert make_baseline("item-user-favourite", genre).fit(train).predict([q])[0].prediction == "Romance"
    # an item nobody else answered: the user's own most frequent label
    unseen = Question(id="q2", user_id="u", input="New", query={"title": "New", "year": "1995"}, profile=q.profile)
    for name in ("item-most-frequent", "item-user-favourite"):
        assert make_baseline(name, genre).fit(train).predict([unseen])[0].prediction == "Romance"


def test_item_knn_adds_the_users_residuals_on_co_rated_neighbours(spec):
    """Raters a-d rate Heat as they rate Ronin and unlike Babe. The scored user rated Ronin 1 point above the
    bias model's expectation and Babe 1 below: item-knn moves Heat's prediction toward Ronin's residual."""
    titles = ("Heat", "Ronin", "Babe")
    train = [_question(u, "Other", [_item(u, t, r) for t, r in zip(titles, rs)], target="3")
             for u, rs in {"a": (5, 5, 1), "b": (4, 4, 2), "c": (1, 1, 5), "d": (2, 2, 4)}.items()]
    assert "item-knn" in baselines_for(spec) and "item-knn" not in baselines_for(get_task("movielens-genre"))
    bias = make_baseline("bias", spec, item_reg=0.0, user_reg=0.0).fit(train)
    knn = make_baseline("item-knn", spec, item_reg=0.0, user_reg=0.0, k=1).fit(train)
    user = _question("u", "Heat", [_item("u", "Ronin", 4), _item("u", "Babe", 2)], target="1")
    b_user, _ = bias.user_bias(user)
    expected_ronin = bias.mu + b_user + bias.item_bias["Ronin Drama"]
    got = float(knn.predict([user])[0].prediction)
    assert got == pytest.approx(float(bias.predict([user])[0].prediction) + (4 - expected_ronin))
    # no neighbour with a positive similarity (an item nobody co-rated): the bias model's prediction
    alone = _question("u", "Heat", [_item("u", "Solo", 4)])
    assert knn.predict([alone])[0].prediction == bias.predict([alone])[0].prediction
    user.target = "5"  # the scored target is never read
    assert float(knn.predict([user])[0].prediction) == pytest.approx(got)
