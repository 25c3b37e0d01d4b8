"""Chat as a prompt style, so a chat turn takes the pipeline's one retrieve-and-prompt path
(`pllm.pipeline.Personalizer`): the client's conversation goes to the model through its chat template, with
the user's retrieved memories in front of the last user message (or in the system turn, `memory_in="system"`)
and an optional cached summary of them in the system turn.

The question carries the conversation in `query["messages"]` (OpenAI-style role/content dicts, oldest
first; `chat_question` builds it); its items are the user's memories, read through `MEMORY_SPEC`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pllm.errors import InputError
from pllm.models.base import Prompt
from pllm.prompting.styles import PROMPT_STYLES, PromptBuilder, PromptStyle
from pllm.tasks.spec import TaskSpec, render
from pllm.types import ProfileItem, Question

BASE_INSTRUCTION = ("You are a helpful assistant. When it is relevant, use what you know about the user to "
                    "personalize your answer.")
MEMORY_PLACES = ("user", "system")

# A memory is its `text` field, for retrieval, for the chat prompt and for the profile summarizer. The metric
# only satisfies the spec (every task names one); chat turns are never scored.
MEMORY_SPEC = TaskSpec(name="serve-memory", kind="generation", description="A user's free-text memories.",
                       item_text="{text}", item_template="{text}", parser="text", metrics=["rouge-1"])


def chat_question(messages: Sequence[dict[str, str]], *, id: str, user_id: str,
                  profile: Sequence[ProfileItem] = ()) -> Question:
    """One chat turn as a question: the last user message is its input (and so the retrieval query)."""
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return Question(id=id, user_id=user_id, input=last_user, query={"input": last_user, "messages": list(messages)},
                    profile=list(profile))


@PROMPT_STYLES.register("chat")
class ChatStyle(PromptStyle):
    """A conversation with memories. The builder's budget is the memories' own (each memory cut to
    `item_tokens`, best first until the next would overflow): the client's conversation is never cut.

    One leading system turn (chat templates accept one, first) holds the personalization instruction, the
    profile summary and the client's own system message(s). The memory lines go into that system turn
    (memory_in="system") or in front of the last user message (memory_in="user", "Things I told you
    before: ..."); small models such as the embedded SmolLM2-135M read context in the user turn and ignore
    it in the system turn. `Prompt.messages` is for chat-template backends, `text` a plain transcript for
    others.
    """

    name = "chat"
    chat = True

    def __init__(self, *, memory_in: str = "user", item_tokens: int = 96) -> None:
        if memory_in not in MEMORY_PLACES:
            raise InputError(f"memory_in must be one of {MEMORY_PLACES}, got {memory_in!r}", field="memory_in")
        self.memory_in, self.item_tokens = memory_in, item_tokens

    def render_item(self, spec: TaskSpec, item: ProfileItem) -> str:
        return " ".join(render(spec.item_template, item.fields, what=f"{spec.name} item_template").split())

    def fit(self, builder: PromptBuilder, question: Question, items: Sequence[ProfileItem],
            summary: str | None) -> tuple[list[str], list[str], bool]:
        lines: list[str] = []
        used: list[str] = []
        spent = 0
        for item in items:
            line = "- " + builder.truncate_tokens(self.render_item(builder.spec, item), self.item_tokens)
            cost = builder.count_tokens(line)
            if spent + cost > builder.max_prompt_tokens:
                return lines, used, True
            lines.append(line)
            used.append(item.id)
            spent += cost
        return lines, used, False

    def render(self, spec: TaskSpec, question: Question, items: Sequence[str], summary: str | None) -> str:
        return self.prompt(spec, question, items, summary).text

    def prompt(self, spec: TaskSpec, question: Question, items: Sequence[str], summary: str | None) -> Prompt:
        messages: list[dict[str, str]] = question.query["messages"]
        parts = [BASE_INSTRUCTION] if items or summary else []
        if summary:
            parts.append(f"About the user: {summary}")
        if items and self.memory_in == "system":
            parts.append("What you know about the user:\n" + "\n".join(items))
        client_system = [m["content"] for m in messages if m["role"] == "system"]
        merged = "\n\n".join([*parts, *client_system])
        turns = [dict(m) for m in messages if m["role"] != "system"]
        last_index = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "user"), None)
        if items and self.memory_in == "user" and last_index is not None:
            turns[last_index]["content"] = ("Things I told you before:\n" + "\n".join(items) + "\n\n"
                                            + turns[last_index]["content"])
        full = ([{"role": "system", "content": merged}] if merged else []) + turns
        if len(turns) == 1 and turns[0]["role"] == "user":
            text = turns[0]["content"]
        else:
            text = "\n".join(f"{m['role']}: {m['content']}" for m in turns)
        return Prompt(text=text, chat=True, system=merged or None, question=question, messages=full)
