"""User store: users, profile items, questions, embeddings and cached summaries."""

from pllm.users.store import (
    FORGET_HOOKS,
    ForgetReport,
    ImportReport,
    SQLiteUserStore,
    UserStore,
    UserSummary,
    open_store,
)

__all__ = ["FORGET_HOOKS", "ForgetReport", "ImportReport", "SQLiteUserStore", "UserStore", "UserSummary",
           "open_store"]
