"""The features that keep data in the user store (API keys, per-user adapters, preferences), registered with
it explicitly at start-up by the server and the CLI: their tables migrate, and forgetting a user reaches
every feature's rows and artifacts, whichever modules this process happened to import. (Memories are the
store's own items, embeddings and summaries.)"""

from __future__ import annotations

from pllm.users.store import Feature, SQLiteUserStore


def builtin_features() -> list[Feature]:
    from pllm.adapt.store import ADAPTERS
    from pllm.align.store import PREFERENCES
    from pllm.serve.auth import KEYS

    return [KEYS, ADAPTERS, PREFERENCES]


def register_features(store: SQLiteUserStore) -> SQLiteUserStore:
    for feature in builtin_features():
        store.register_feature(feature)
    return store
