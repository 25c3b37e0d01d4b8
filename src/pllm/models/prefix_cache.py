"""Per-user prompt prefix caching: the KV cache of a user's last chat turn, reused by their next one.

A chat prompt repeats from turn to turn: the system turn, the personalization preamble and the conversation so
far come back in front of each new message. Recomputing them makes the first token wait for the whole prompt
(1.5 s for ~300 tokens on 2 CPU cores); keeping the KV cache of the last turn's prompt and answer, and
computing only the tokens after the longest shared token prefix, makes it wait for the new message alone.

The entries are keyed by the store's user id (`Prompt.question.user_id`) and the peft adapter that computed them
(none for the bare model: a chat served with the user's adapter keeps its own entry), kept for the `max_users`
most recent (user, adapter) pairs (LRU), and dropped when the user is forgotten (`pllm serve` calls `forget`)
or the adapter is loaded again (`drop_adapter`: it may have been retrained). Each request gets its own copy cut
to the shared prefix, so concurrent requests never share a cache object. A cache is only valid for the weights
that computed it: it belongs to one generator.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pllm.errors import InputError

if TYPE_CHECKING:
    from transformers.cache_utils import Cache


CacheKey = tuple[str, str | None]  # (user, adapter that computed the entry; None: the bare model)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """The last turn's token ids and KV cache per user (LRU over users)."""

    def __init__(self, max_users: int = 64) -> None:
        if max_users < 1:
            raise InputError(f"prefix cache users must be >= 1, got {max_users}", field="prefix_cache_users")
        self.max_users = max_users
        self._entries: OrderedDict[CacheKey, tuple[list[int], Cache]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # hits, misses, reused_tokens, computed_tokens

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(user: str, adapter: str | None = None) -> CacheKey:
        """A user's entry, apart per adapter that computed it (peft's "__base__" row is the bare model)."""
        return user, None if adapter == "__base__" else adapter

    def take(self, key: CacheKey, ids: Sequence[int]) -> tuple[int, Cache | None]:
        """(n, cache): a private copy of the user's cache cut to the n first tokens of `ids` it already holds
        (at least one token is left to compute, so the model has logits to start from); (0, None) if none."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        n = min(common_prefix_len(entry[0], ids), len(ids) - 1) if entry is not None else 0
        if entry is None or n <= 0:
            self.stats.update(misses=1, computed_tokens=len(ids))
            return 0, None
        cache = copy.deepcopy(entry[1])
        drop = cache.get_seq_length() - n
        if drop > 0:
            cache.crop(-drop)  # a negative argument removes that many tokens in every transformers version
        self.stats.update(hits=1, reused_tokens=n, computed_tokens=len(ids) - n)
        return n, cache

    def put(self, key: CacheKey, ids: Sequence[int], cache: Cache) -> None:
        """Keep `cache` (which holds the first `cache.get_seq_length()` tokens of `ids`) as the user's entry."""
        held = list(ids[:cache.get_seq_length()])
        with self._lock:
            self._entries[key] = (held, cache)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def forget(self, user: str) -> int:
        """Drop the user's entries (bare model and every adapter); returns how many were dropped."""
        return self._drop(lambda key: key[0] == user)

    def drop_adapter(self, adapter: str) -> int:
        """Drop every user's entry computed with `adapter` (loaded again: maybe retrained); returns how many."""
        return self._drop(lambda key: key[1] == adapter)

    def _drop(self, which: Callable[[CacheKey], bool]) -> int:
        with self._lock:
            keys = [k for k in self._entries if which(k)]
            for k in keys:
                del self._entries[k]
            return len(keys)
