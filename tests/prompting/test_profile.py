from __future__ import annotations

import pytest

from pllm.errors import InputError
from pllm.prompting.profile import ProfileSummarizer
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem
from pllm.users.store import SQLiteUserStore
from pllm_testkit import EchoGenerator


def test_summary_cached_by_items_hash(tmp_path):
    gen = EchoGenerator(answer="Loves sci-fi and rates comedies low.")
    items = [ProfileItem(id=str(i), fields={"text": f"review {i}", "score": "4"}, timestamp=float(i)) for i in range(5)]
    with SQLiteUserStore(tmp_path / "s.db") as store:
        summ = ProfileSummarizer(gen, get_task("LaMP-3"), store)
        first = summ.summaries([("u", items), ("u", items)])  # same history twice: generated once
        assert first == ["Loves sci-fi and rates comedies low."] * 2
        assert summ.generated == 1 and gen.generate_calls == 1
        # A second run (new summarizer, same store) reads the cache.
        again = ProfileSummarizer(gen, get_task("LaMP-3"), store)
        assert again.summaries([("u", items)]) == first[:1] and again.generated == 0 and gen.generate_calls == 1
        # Different items -> new key -> regenerated.
        assert again.summaries([("u", items + [ProfileItem(id="9", fields={"text": "new", "score": "1"})])])
        assert again.generated == 1
        # The summary prompt shows the items it summarizes.
        assert "review 4" in gen.prompts[0].text
        store.forget(user_id="u")
        assert store.execute("SELECT COUNT(*) FROM profile_summaries")[0][0] == 0


def test_item_crowd_shows_other_users_answers_for_the_queried_item_never_the_askers():
    from pllm.prompting.profile import ItemCrowd
    from pllm.types import Question

    spec = get_task("movielens-rating")

    def item(user, title, rating):
        return ProfileItem(id=f"{user}-{title}", user_id=user,
                           fields={"title": title, "year": "1995", "genres": "Drama", "rating": str(rating)})

    train = [Question(id=f"t-{u}", user_id=u, input="x", query={"title": "Babe", "genres": "Drama"},
                      profile=[item(u, "Heat", r)], target="2") for u, r in [("a", 5), ("b", 3), ("me", 1)]]
    crowd = ItemCrowd(spec).fit(train)
    ask = Question(id="q", user_id="me", input="Heat", query={"title": "Heat", "year": "1995", "genres": "Drama"})
    assert crowd.answers(ask) == ["5", "3"]  # "me" rated Heat 1 in training: left out
    assert crowd.text(ask) == "Other users (2) for this item: 1: 0%, 2: 0%, 3: 50%, 4: 0%, 5: 50%; mean 4.0."
    # train targets count too (the train split's own labels), matched by the question's query
    babe = Question(id="q2", user_id="z", input="Babe", query={"title": "Babe", "genres": "Drama"})
    assert crowd.answers(babe) == ["2", "2", "2"]
    nobody = Question(id="q3", user_id="z", input="New", query={"title": "New", "genres": "Drama"})
    assert crowd.text(nobody) == "Other users: no answers for this item."
    with pytest.raises(InputError, match="train split"):
        ItemCrowd(spec).fit([])

    # `rank`: the item's standing among all answered items, by how many users answered it (Heat 3, Babe 3)
    ranked = crowd.ranked(True)
    assert ranked.outputs is crowd.outputs and not crowd.rank  # the same answers, another rendering
    assert ranked.text(ask).startswith("Other users (2; top 100% of items) for this item: ")
    assert crowd.ranked(False) is crowd


def test_item_crowd_rank_is_the_share_of_items_answered_at_least_as_often():
    from pllm.prompting.profile import ItemCrowd
    from pllm.types import Question

    spec = get_task("movielens-rating")
    # 10 items: "m0" answered by 10 users, "m1" by 9, ..., "m9" by 1
    train = [Question(id=f"t-{u}", user_id=f"u{u}", input="x", query={"title": "zzz", "genres": "Drama"},
                      profile=[ProfileItem(id=f"{u}-{m}", user_id=f"u{u}", fields={"title": f"m{m}", "year": "1995",
                                                                                   "genres": "Drama", "rating": "4"})
                               for m in range(10 - u)]) for u in range(10)]
    crowd = ItemCrowd(spec, rank=True).fit(train)
    assert [crowd.top_share(n) for n in (11, 10, 9, 2, 1)] == [1, 10, 20, 90, 100]  # 11: none, shown as 1%

    def ask(m: int) -> Question:
        return Question(id="q", user_id="new", input="", query={"title": f"m{m}", "year": "1995", "genres": "Drama"})

    assert crowd.text(ask(0)).startswith("Other users (10; top 10% of items)")
    assert crowd.text(ask(9)).startswith("Other users (1; top 100% of items)")
