"""The chat style: a conversation with the user's memories, built by the pipeline's one retrieve-and-prompt
path (`Personalizer`), its budget spent on the memories alone."""

from __future__ import annotations

import pytest

from pllm.errors import InputError
from pllm.models.base import Prompt
from pllm.models.testing import make_tiny_generator
from pllm.pipeline import MethodConfig, Personalizer
from pllm.prompting import MEMORY_SPEC, ChatStyle, chat_question
from pllm.types import ProfileItem, Question

MEMORIES = [ProfileItem(id="dog", fields={"text": "my dog is called Rex"}),
            ProfileItem(id="diet", fields={"text": "I am  vegetarian"}),
            ProfileItem(id="job", fields={"text": "I work night shifts as a nurse"})]
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello!"}, {"role": "user", "content": "what is my dog called"}]


def _prompt(method: MethodConfig, style: ChatStyle, messages: list[dict[str, str]] = MESSAGES) -> tuple[Prompt, list]:
    question = chat_question(messages, id="turn-1", user_id="alice", profile=MEMORIES)
    built = Personalizer(MEMORY_SPEC, make_tiny_generator(), method, style=style).build_prompts([question])[0]
    return built.prompt, built.item_ids


def test_memories_go_before_the_last_user_message() -> None:
    prompt, used = _prompt(MethodConfig(retriever="bm25", k=2, style="chat"), ChatStyle())
    assert used[0] == "dog" and len(used) == 2
    assert [m["role"] for m in prompt.messages] == ["system", "user", "assistant", "user"]
    assert prompt.system == prompt.messages[0]["content"] and prompt.system.endswith("\n\nAnswer briefly.")
    assert prompt.messages[1]["content"] == "hi"
    assert prompt.messages[-1]["content"].startswith("Things I told you before:\n- my dog is called Rex\n- ")
    assert prompt.messages[-1]["content"].endswith("\n\nwhat is my dog called")
    assert prompt.text.startswith("user: hi\nassistant: hello!\nuser: Things I told you before:")
    assert prompt.question.input == "what is my dog called" and prompt.question.user_id == "alice"


def test_memories_in_the_system_turn_and_whitespace_folded() -> None:
    prompt, used = _prompt(MethodConfig(retriever="recency", k=3, style="chat"), ChatStyle(memory_in="system"))
    assert used == ["dog", "diet", "job"]  # undated: profile order
    assert "What you know about the user:\n- my dog is called Rex\n- I am vegetarian\n" in prompt.system
    assert prompt.messages[-1] == {"role": "user", "content": "what is my dog called"}


def test_the_budget_is_the_memories_own() -> None:
    gen = make_tiny_generator()
    memories = [ProfileItem(id=f"m{i}", fields={"text": f"memory {i} " + "long story " * 40}) for i in range(3)]
    lines = ["- " + gen.truncate_to_tokens(" ".join(m.fields["text"].split()), 12) for m in memories]
    budget = gen.count_tokens(lines[0]) + gen.count_tokens(lines[1])  # two lines fit, not three
    assert budget >= 16 and gen.count_tokens(lines[0]) < gen.count_tokens("- " + memories[0].fields["text"])
    question = chat_question([{"role": "user", "content": "dog? " * 500}], id="t", user_id="alice", profile=memories)
    method = MethodConfig(retriever="recency", k=3, style="chat", max_prompt_tokens=budget)
    built = Personalizer(MEMORY_SPEC, gen, method, style=ChatStyle(item_tokens=12)).build_prompts([question])[0]
    # Each memory is cut to its 12 tokens and the lines stop at the budget; the long conversation is never cut.
    assert built.item_ids == ["m0", "m1"] and built.truncated
    assert built.prompt.messages[-1]["content"] == "Things I told you before:\n" + "\n".join(lines[:2]) + "\n\n" + (
        "dog? " * 500)


def test_no_memories_no_instruction() -> None:
    prompt, used = _prompt(MethodConfig(style="chat"), ChatStyle(), [{"role": "user", "content": "hi"}])
    assert used == [] and prompt.system is None and prompt.messages == [{"role": "user", "content": "hi"}]
    assert prompt.text == "hi"


def test_a_search_supplied_by_the_caller_replaces_the_index() -> None:
    asked: list[tuple[str, str, int]] = []

    def search(question: Question, query: str, k: int) -> list[ProfileItem]:
        asked.append((question.user_id, query, k))
        return [MEMORIES[2]]

    question = chat_question(MESSAGES, id="t", user_id="alice", profile=MEMORIES)
    pers = Personalizer(MEMORY_SPEC, make_tiny_generator(), MethodConfig(retriever="dense", k=2, style="chat"),
                        style=ChatStyle(), search=search)
    assert pers.build_prompts([question])[0].item_ids == ["job"]
    assert asked == [("alice", "what is my dog called", 2)]


def test_bad_memory_place() -> None:
    with pytest.raises(InputError, match="memory_in"):
        ChatStyle(memory_in="assistant")
