"""Per-user prefix KV caching: later chat turns reuse the earlier prompt's cache and give the same greedy text as
computing everything; forgetting a user drops their cache; streaming hands over every token as it is decoded."""

from __future__ import annotations

import pytest

from pllm.errors import InputError
from pllm.models.base import Prompt
from pllm.models.prefix_cache import PrefixCache
from pllm.models.testing import make_tiny_generator
from pllm.types import Question

FOLLOW_UPS = ["and the book is bad", "what about the movie", "I love this movie"]


def _chat(gen, user: str, *, stream: bool) -> list[str]:
    """Three turns of one conversation (system turn, history, new message), each answered greedily."""
    question = Question(id="q", user_id=user, input="", query={})
    messages = [{"role": "system", "content": "you are a movie critic"}, {"role": "user", "content": "great movie"}]
    answers = []
    for follow_up in FOLLOW_UPS:
        prompt = Prompt(text=messages[-1]["content"], messages=[dict(m) for m in messages], question=question)
        if stream:
            answers.append("".join(gen.stream(prompt, max_new_tokens=8)))
        else:
            answers.append(gen.generate([prompt], max_new_tokens=8)[0].text)
        messages += [{"role": "assistant", "content": answers[-1]}, {"role": "user", "content": follow_up}]
    return answers


@pytest.mark.parametrize("stream", [False, True])
def test_cached_and_uncached_greedy_text_are_identical(stream: bool) -> None:
    gen = make_tiny_generator(seed=0)
    uncached = _chat(gen, "u1", stream=stream)
    gen.prefix_cache = PrefixCache(max_users=4)
    assert _chat(gen, "u1", stream=stream) == uncached
    stats = gen.prefix_cache.stats
    assert stats["misses"] == 1 and stats["hits"] == 2  # the first turn computes all, the later ones reuse
    assert stats["reused_tokens"] > stats["computed_tokens"] / 2


def test_forget_drops_the_users_cache_and_users_are_kept_lru() -> None:
    gen = make_tiny_generator(seed=0)
    gen.prefix_cache = cache = PrefixCache(max_users=2)
    for user in ("u1", "u2"):
        _chat(gen, user, stream=False)
    assert len(cache) == 2 and cache.forget("u1") == 1 and cache.forget("u1") == 0 and len(cache) == 1
    misses = cache.stats["misses"]
    _chat(gen, "u1", stream=False)  # computed from scratch again
    assert cache.stats["misses"] == misses + 1
    _chat(gen, "u3", stream=False)  # a third user: the least recently used (u2) goes
    assert cache.forget("u2") == 0 and cache.forget("u1") == 1 and cache.forget("u3") == 1


def test_prompts_without_a_user_are_not_cached_and_bad_sizes_are_refused() -> None:
    gen = make_tiny_generator(seed=0)
    gen.prefix_cache = PrefixCache(max_users=2)
    gen.generate([Prompt(text="great movie")], max_new_tokens=4)
    assert len(gen.prefix_cache) == 0 and not gen.prefix_cache.stats
    with pytest.raises(InputError, match="prefix cache users must be >= 1"):
        PrefixCache(max_users=0)


def test_streaming_hands_over_each_token_as_it_is_decoded() -> None:
    import queue

    import torch

    from pllm.models.hf import token_streamer

    gen = make_tiny_generator(seed=0)
    prompt = Prompt(text="the movie is great")
    pieces = list(gen.stream(prompt, max_new_tokens=8))
    assert "".join(pieces) == gen.generate([prompt], max_new_tokens=8)[0].text and len(pieces) >= 4
    streamer = token_streamer(gen.tokenizer)
    streamer.put(torch.tensor([gen.encode_prompt(prompt)]))  # the prompt: skipped
    for word in ("movie", "great"):  # each new token is there at once, not held back until a space follows
        streamer.put(torch.tensor([gen.tokenizer.convert_tokens_to_ids(word)]))
        assert streamer.text_queue.get(timeout=1).strip() == word
    streamer.end()
    with pytest.raises(queue.Empty):
        while True:  # only the end marker is left
            assert streamer.text_queue.get_nowait() in ("", None)
