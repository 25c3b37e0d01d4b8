from __future__ import annotations

import pytest

from pllm.errors import InputError
from pllm.models.base import approx_count_tokens, approx_truncate_tokens
from pllm.prompting.styles import PromptBuilder, default_style, get_style
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question


def _q() -> Question:
    return Question(id="q", user_id="u", input="How would this user rate Heat?",
                    query={"title": "Heat", "year": "1995", "genres": "Action"}, target="4")


def _items(n: int = 3) -> list[ProfileItem]:
    return [ProfileItem(id=f"i{i}", fields={"title": f"Film {i}", "year": "1990", "genres": "Drama",
                                            "rating": str(1 + i % 5)}) for i in range(n)]


def _builder(task: str, style: str, budget: int = 1024) -> PromptBuilder:
    return PromptBuilder(get_task(task), get_style(style), count_tokens=approx_count_tokens,
                         truncate_tokens=approx_truncate_tokens, max_prompt_tokens=budget)


def test_demonstrations_render_in_task_shape_with_best_item_last():
    built = _builder("movielens-rating", "demonstrations").build(_q(), _items(2))
    assert built.prompt.chat is False and built.continuation_prefix == " "
    assert built.prompt.text == (
        "A user's movie ratings from 1 (worst) to 5 (best).\n\n"
        "Movie: Film 1 (1990; Drama)\nRating: 2\n\n"
        "Movie: Film 0 (1990; Drama)\nRating: 1\n\n"
        "Movie: Heat (1995; Action)\nRating:")
    assert built.item_ids == ["i0", "i1"] and not built.truncated


def test_instruction_style_uses_lamp_shape_and_chat():
    spec = get_task("LaMP-3")
    q = Question(id="q", user_id="u", input="What is the score? review: ok", query={"text": "ok"})
    items = [ProfileItem(id="a", fields={"text": "nice", "score": "5"})]
    built = _builder("LaMP-3", "instruction").build(q, items, summary="Likes gadgets.")
    assert built.prompt.chat is True
    assert built.prompt.text == (
        'About this user: Likes gadgets.\n\n5 is the score for "nice". What is the score? review: ok')
    assert default_style(spec) == "demonstrations" and default_style(get_task("LaMP-1")) == "instruction"


def test_no_items_gives_plain_input():
    assert _builder("LaMP-3", "instruction").build(
        Question(id="q", user_id="u", input="raw", query={"text": "x"}), []).prompt.text == "raw"


def test_budget_drops_and_cuts_items_and_reports_truncation():
    items = [ProfileItem(id=f"i{i}", fields={"text": "word " * 40, "score": "3"}) for i in range(5)]
    q = Question(id="q", user_id="u", input="review: hi", query={"text": "hi"})
    full = _builder("LaMP-3", "demonstrations", 4096).build(q, items)
    assert not full.truncated and len(full.item_ids) == 5
    tight = _builder("LaMP-3", "demonstrations", 120).build(q, items)
    assert tight.truncated and 0 < len(tight.item_ids) < 5
    assert tight.prompt_tokens <= 120


def test_demonstration_style_needs_demo_fields():
    with pytest.raises(InputError, match="no demonstration format"):
        _builder("LaMP-1", "demonstrations")
