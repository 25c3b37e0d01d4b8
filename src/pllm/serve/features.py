"""The features that keep data in the user store (API keys, per-user adapters, preferences), registered with
it explicitly at start-up by the server and the CLI: their tables migrate, and forgetting a user reaches
every feature's rows and artifacts, whichever modules this process happened to import. (Memories are the
store's own items, embeddings and summaries.)"""

from __future__ import annotations

from pathlib import Path

from pllm.users.store import Feature, UserStore, open_store


def builtin_features() -> list[Feature]:
    from pllm.adapt.store import ADAPTERS
    from pllm.align.store import PREFERENCES
    from pllm.serve.auth import KEYS

    return [KEYS, ADAPTERS, PREFERENCES]


def register_features(store: UserStore) -> UserStore:
    for feature in builtin_features():
        store.register_feature(feature)
    return store


def open_with_features(location: str | Path | None = None) -> UserStore:
    """The store at `location` (`open_store`: a SQLite path or a postgresql:// URL; None: $PLLM_STORE, else the
    default file) with every built-in feature registered; a store whose schema is newer than this code is
    refused before anything is written."""
    return open_store(location, features=builtin_features())
