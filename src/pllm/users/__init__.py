"""User store: users, profile items, questions, embeddings and cached summaries."""

from pllm.users.store import (
    EmbeddingRows,
    Feature,
    ForgetReport,
    ImportReport,
    ItemVersion,
    SQLiteUserStore,
    UserStore,
    UserSummary,
    open_store,
)

__all__ = ["EmbeddingRows", "Feature", "ForgetReport", "ImportReport", "ItemVersion", "SQLiteUserStore", "UserStore",
           "UserSummary", "open_store"]
