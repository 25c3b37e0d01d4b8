"""benchmarks/genre_information.py: rules over what a stats+crowd prompt shows, and over what it does not."""

import importlib.util
from collections import Counter
from pathlib import Path

from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "genre_information.py"


def _rules():
    spec = importlib.util.spec_from_file_location("genre_information", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rules(get_task("movielens-genre"))


def _item(i: int, genres: str, rating: int, tag: str) -> ProfileItem:
    return ProfileItem(id=f"u-{i}", user_id="u", fields={"title": f"M{i}", "year": "1990", "genres": genres,
                                                         "rating": str(rating), "tag": tag})


def test_rules_read_the_shown_top_five_all_tags_or_the_liked_genres():
    # Tags: Drama x3, then five others once each (Romance sorts last, so the stats line's top 5 leaves it out).
    # Liked (rated 4-5): Drama and Romance 3 times each; watched: Romance once more (the label's tie-break).
    profile = [_item(i, "Drama, Romance", 5, "Drama") for i in range(3)]
    profile += [_item(10 + i, g, 2, g) for i, g in enumerate(["Action", "Comedy", "Crime", "Horror", "Romance"])]
    q = Question(id="q", user_id="u", input="?", query={"title": "X", "year": "1990"}, profile=profile,
                 target="Romance")
    rules = _rules()
    item = Counter({"Romance": 5, "War": 3})  # other users' tags for the movie: Drama is not among them
    assert rules["lines_shown"](q, item) == "Romance"  # nothing shown for either tag: the item's most frequent
    assert rules["lines_shown"](q, Counter({"War": 5, "Romance": 3})) == "War"  # (Romance is outside the top 5)
    assert rules["item_user_favourite"](q, Counter({"War": 5, "Romance": 3})) == "Romance"  # all counts: once
    assert rules["label_rule_on_profile"](q, Counter({"Drama": 9, "Romance": 1})) == "Romance"  # seen 4 vs 3
    assert rules["lines_shown"](q, Counter({"Drama": 1, "Romance": 9})) == "Drama"  # the user's top tag
    assert all(rule(q, Counter()) is None for rule in rules.values())
