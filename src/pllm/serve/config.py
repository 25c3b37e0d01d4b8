"""Server settings: one dataclass, validated once, so a bad limit fails at startup and not under load."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pllm.errors import InputError
from pllm.prompting.chat import MEMORY_PLACES
from pllm.retrieval.base import RETRIEVERS, retriever_needs_embedder, retriever_reads_train
from pllm.retrieval.embedders import PRECISIONS, check_precision
from pllm.serve.remember import MEMORY_MODES
from pllm.users.store import is_postgres_url

ADMIN_KEY_ENV = "PLLM_ADMIN_KEY"
_T = TypeVar("_T")


def _help(text: str, default: _T) -> _T:
    return field(default=default, metadata={"help": text})


@dataclass
class ServeConfig:
    """Everything `create_app` needs; every limit here is enforced per request."""

    db: str | None = _help("The user store: a SQLite path or a postgresql:// URL (None: $PLLM_STORE, else "
                           "$PLLM_HOME/pllm.sqlite3).", None)
    backend: str = _help("Generator backend registered in GENERATORS (hf, openai, or a plugin's).", "hf")
    model: str | None = _help("Model for the backend (None: the embedded SmolLM2-135M-Instruct).", None)
    model_name: str | None = _help("Model id served at /v1/models and accepted in requests "
                                   "(None: the generator's own model id).", None)
    embedder: str | None = _help("Embedder registered in EMBEDDERS; items are embedded on write. "
                                 "None disables dense and hybrid retrieval.", "minilm")
    embed_precision: str = _help(f"Precision of the embedder's forward pass ({', '.join(PRECISIONS)}). bfloat16 "
                                 "(autocast, CPU or CUDA) writes ~1.8x faster on CPUs with bf16 instructions at "
                                 "cosine >= 0.9999 to float32; its vectors are stored under their own model name, "
                                 "so a store's float32 vectors are re-encoded, not reused.", "float32")
    retriever: str = _help("Default retriever for search and chat (dense, bm25, hybrid, recency, random, none, "
                           "dated, window, rerank-llm, rerank-ce, rewrite).", "dense")
    cross_encoder: str | None = _help("Cross-encoder model (a folder, or a name in the Hugging Face cache) of the "
                                      "rerank-ce retriever (None: rerank-ce is refused).", None)
    k: int = _help("Default number of memories retrieved for a chat turn and returned by search.", 4)
    max_k: int = _help("Largest k a request may ask for.", 50)
    admin_key: str | None = _help(f"Admin key (None: ${ADMIN_KEY_ENV}, if set); stored admin keys also work.",
                                  None)
    max_body_bytes: int = _help("Largest request body; bigger ones get 413.", 2_000_000)
    max_items_per_request: int = _help("Most items one POST may add.", 1000)
    max_item_chars: int = _help("Longest item text (characters).", 20_000)
    max_fields_bytes: int = _help("Largest JSON of one item's extra fields.", 20_000)
    max_messages: int = _help("Most messages in one chat request.", 100)
    max_message_chars: int = _help("Longest chat message (characters).", 32_000)
    default_max_tokens: int = _help("Answer length when a chat request gives no max_tokens.", 128)
    max_new_tokens: int = _help("Largest max_tokens a chat request may ask for.", 512)
    memory_token_budget: int = _help("Tokens of retrieved memories in the system message.", 384)
    memory_in: str = _help("Where retrieved memories go: 'user' (in front of the last user message; the "
                           "embedded SmolLM2-135M ignores context in the system turn) or 'system'.", "user")
    chat_memory: str = _help("Memory from chats for requests that name none: 'off', 'raw' (each new user turn "
                             "is stored as an item of the request's user, after the answer is sent) or "
                             "'extract' (the turn, and 'slot: fact' lines the model writes from it).", "off")
    memory_merge_similarity: float = _help("A learned fact whose embedding has at least this cosine with a "
                                           "stored fact's is merged into it (count and sources kept).", 0.9)
    extract_max_tokens: int = _help("Tokens the model may write when extracting facts from a chat turn.", 64)
    memory_item_tokens: int = _help("Each memory is cut to this many tokens in the system message.", 96)
    gen_concurrency: int = _help("Generations run at once (one model on CPU: 1).", 1)
    gen_queue: int = _help("Chat requests that may wait for a generation slot; more get 429.", 8)
    request_timeout_s: float = _help("Per-request deadline (slot wait + generation, or a memory "
                                     "operation); past it the request gets 504.", 120.0)
    io_threads: int = _help("Worker threads for store reads/writes and retrieval.", 8)
    index_cache_users: int = _help("Users whose search indexes stay in memory (LRU).", 2048)
    synchronous: str = _help("SQLite synchronous mode for this server's connection: FULL makes every "
                             "acknowledged write survive power loss, NORMAL only a process crash.", "FULL")
    version_check: bool = _help("Check the user's version in the store on every request and rebuild a cached "
                                "index that is behind (another worker or machine wrote). Off only for one worker "
                                "alone on its store: it saves one query per request.", True)
    busy_retries: int = _help("Retries of a write that finds the database busy (another process).", 5)
    personalizer: str = _help("Personalizer for chat requests that name none: 'auto' (the user's own adapter, "
                              "else their alignment preference, else the soft encoder, whichever has something "
                              "for the user), 'none' (memory only), or a name in PERSONALIZERS.", "auto")
    adapt_task: str | None = _help("Task whose per-user adapters (pllm adapt) the 'user-adapter' personalizer "
                                   "serves (None: the only task the user has an adapter for).", None)
    soft: str | None = _help("Soft-prompt user encoder folder (pllm soft train) for the 'soft' personalizer "
                             "(None: no soft prompting).", None)
    preload: bool = _help("Load the generator and embedder at startup rather than on first use.", True)
    prefix_cache_users: int = _help("Users whose last chat turn's KV cache (prompt and answer) is kept so their "
                                    "next turn computes only its new tokens (LRU over users; 0: off). Needs a "
                                    "backend with a prefix cache (hf).", 0)
    torch_threads: int | None = _help("torch intra-op threads (None: torch's default). On a small shared CPU "
                                      "box 1 avoids thread oversubscription between concurrent requests.", None)

    def __post_init__(self) -> None:
        positive = ("k", "max_k", "max_body_bytes", "max_items_per_request", "max_item_chars", "max_fields_bytes",
                    "max_messages", "max_message_chars", "default_max_tokens", "max_new_tokens",
                    "memory_token_budget", "memory_item_tokens", "gen_concurrency", "io_threads",
                    "index_cache_users")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise InputError(f"must be >= 1, got {getattr(self, name)!r}", field=name)
        if self.gen_queue < 0:
            raise InputError(f"must be >= 0, got {self.gen_queue!r}", field="gen_queue")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise InputError(f"must be >= 1, got {self.torch_threads!r}", field="torch_threads")
        if self.prefix_cache_users < 0:
            raise InputError(f"must be >= 0, got {self.prefix_cache_users!r}", field="prefix_cache_users")
        if self.busy_retries < 0:
            raise InputError(f"must be >= 0, got {self.busy_retries!r}", field="busy_retries")
        if self.k > self.max_k:
            raise InputError(f"default k {self.k} exceeds max_k {self.max_k}", field="k")
        if self.default_max_tokens > self.max_new_tokens:
            raise InputError(f"default_max_tokens {self.default_max_tokens} exceeds max_new_tokens "
                             f"{self.max_new_tokens}", field="default_max_tokens")
        if not self.request_timeout_s > 0:
            raise InputError(f"must be > 0, got {self.request_timeout_s!r}", field="request_timeout_s")
        if self.memory_in not in MEMORY_PLACES:
            raise InputError(f"must be 'user' or 'system', got {self.memory_in!r}", field="memory_in")
        if self.chat_memory not in MEMORY_MODES:
            raise InputError(f"must be one of {MEMORY_MODES.names()}, got {self.chat_memory!r}",
                             field="chat_memory")
        if not 0.0 < self.memory_merge_similarity <= 1.0:
            raise InputError(f"must be in (0, 1], got {self.memory_merge_similarity!r}",
                             field="memory_merge_similarity")
        if self.extract_max_tokens < 1:
            raise InputError(f"must be >= 1, got {self.extract_max_tokens!r}", field="extract_max_tokens")
        if self.memory_token_budget < 16:  # the pipeline's smallest budget (chat's method budgets the memories)
            raise InputError(f"must be >= 16, got {self.memory_token_budget!r}", field="memory_token_budget")
        self.synchronous = str(self.synchronous).upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise InputError(f"must be FULL, NORMAL or EXTRA, got {self.synchronous!r}", field="synchronous")
        check_precision(self.embed_precision, field="embed_precision")
        if self.soft is not None and not Path(self.soft).is_dir():
            raise InputError(f"no soft-prompt encoder folder at {self.soft}", field="soft")
        # An unknown retriever is refused per request (400, listing the known ones), as a request's own is.
        if self.embedder is None and self.retriever in RETRIEVERS and retriever_needs_embedder(self.retriever):
            raise InputError(f"retriever {self.retriever!r} needs an embedder", field="retriever")
        if self.retriever in RETRIEVERS and retriever_reads_train(self.retriever):
            raise InputError(f"retriever {self.retriever!r} ranks by other users' answers from a train split, which "
                             "a server does not hold", field="retriever")

    @property
    def db_path(self) -> Path | None:
        """The SQLite file given (None: the default, $PLLM_STORE, or a postgresql:// URL)."""
        return Path(self.db) if self.db and not is_postgres_url(self.db) else None

    def resolved_admin_key(self) -> str | None:
        return self.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
