from __future__ import annotations

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
