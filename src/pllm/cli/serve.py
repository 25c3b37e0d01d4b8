"""`pllm serve` (the personalization server) and `pllm keys create|list|revoke` (its API keys).

Registered twice in `_SUBAPPS`: `("pllm.cli.serve", None)` adds the top-level `serve` command through
`register`, and `("pllm.cli.serve", "keys")` adds `app` as the `keys` group.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from pllm.cli.common import DbOption, console, err_console, open_db
from pllm.errors import InputError

if TYPE_CHECKING:
    from pllm.serve.config import ServeConfig

app = typer.Typer(no_args_is_help=True, help="Manage the API keys of `pllm serve` (stored hashed in the store).")


@app.command("create")
def create(
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant the key belongs to (required unless --admin)."),
    name: str = typer.Option("", "--name", help="A label shown by `pllm keys list`."),
    admin: bool = typer.Option(False, "--admin", help="An admin key: manages keys, reads no user data."),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (key included)."),
) -> None:
    """Create a key and print it once (only its sha256 is stored)."""
    from pllm.serve.auth import KeyStore

    with open_db(db) as store:
        key, info = KeyStore(store).create(tenant=tenant, role="admin" if admin else "tenant", name=name)
    if as_json:
        print(json.dumps({"key": key, **info.to_dict()}))
        return
    print(key)
    err_console.print(f"created {info.role} key {info.id}" + (f" for tenant {info.tenant}" if info.tenant else "")
                      + "; it is shown only now")


@app.command("list")
def list_(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's keys."),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List keys (ids, tenants, roles; never the keys themselves)."""
    from pllm.serve.auth import KeyStore

    with open_db(db) as store:
        keys = KeyStore(store).list(tenant=tenant)
    if as_json:
        print(json.dumps([k.to_dict() for k in keys]))
        return
    table = Table("id", "tenant", "role", "name", "status")
    for k in keys:
        table.add_row(k.id, k.tenant or "-", k.role, k.name, "revoked" if k.revoked_at else "active")
    console.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="Key id (from `pllm keys list`)."),
           db: str | None = DbOption) -> None:
    """Revoke a key; a running server refuses it from its next request."""
    from pllm.serve.auth import KeyStore

    with open_db(db) as store:
        info = KeyStore(store).revoke(key_id)
    console.print(f"revoked key {info.id}")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="Port to bind."),
    db: str | None = DbOption,
    backend: str = typer.Option("hf", "--backend", help="Generator backend (GENERATORS)."),
    model: str | None = typer.Option(None, "--model", help="Model for the backend (default: embedded SmolLM2)."),
    model_name: str | None = typer.Option(None, "--model-name", help="Model id served at /v1/models."),
    embedder: str = typer.Option("minilm", "--embedder", help="Embedder (EMBEDDERS); 'none' disables dense search."),
    embed_precision: str = typer.Option("float32", "--embed-precision", help="Embedder forward-pass precision: "
                                        "float32 or bfloat16 (autocast; ~1.8x faster writes on CPUs with bf16 "
                                        "instructions, vectors stored apart from float32 ones)."),
    retriever: str = typer.Option("dense", "--retriever", help="Default retriever for search and chat."),
    cross_encoder: str | None = typer.Option(None, "--cross-encoder", help="Cross-encoder model folder (or name in "
                                             "the Hugging Face cache) for the rerank-ce retriever."),
    k: int = typer.Option(4, "--k", help="Default memories per chat turn / search."),
    memory_in: str = typer.Option("user", "--memory-in", help="Where memories go in the chat prompt: 'user' "
                                                              "(before the last user message) or 'system'."),
    chat_memory: str = typer.Option("off", "--chat-memory", help="Memory from chats when a request names none: "
                                    "off, raw (each user turn stored as an item after the answer) or extract "
                                    "(also 'slot: fact' lines the model writes from it)."),
    concurrency: int = typer.Option(1, "--concurrency", help="Generations at once."),
    queue: int = typer.Option(8, "--queue", help="Chat requests that may wait; more get 429 + Retry-After."),
    timeout: float = typer.Option(120.0, "--timeout", help="Per-request deadline in seconds (504 past it)."),
    max_body_bytes: int = typer.Option(2_000_000, "--max-body-bytes", help="Largest request body (413 past it)."),
    synchronous: str = typer.Option("FULL", "--synchronous", help="SQLite synchronous mode: FULL or NORMAL."),
    no_preload: bool = typer.Option(False, "--no-preload", help="Load models on first use, not at startup."),
    torch_threads: int | None = typer.Option(None, "--torch-threads", help="torch intra-op threads (default: "
                                                                           "torch's; 1 suits small shared CPUs)."),
    personalizer: str = typer.Option("auto", "--personalizer", help="Personalizer when a chat request names none: "
                                     "auto, none, user-adapter, preference, soft, or a plugin's."),
    adapt_task: str | None = typer.Option(None, "--adapt-task", help="Task whose per-user adapters (pllm adapt) "
                                                                     "serve chat (default: the user's only one)."),
    soft: Path | None = typer.Option(None, "--soft", help="Soft-prompt user encoder (pllm soft train) for the "
                                                           "'soft' personalizer."),
    plugin: list[str] = typer.Option([], "--plugin", help="Module to import first (registers personalizers, "
                                                           "generators, embedders); repeatable."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    workers: int = typer.Option(1, "--workers", help="Server processes on one port and one store (each loads "
                                "its own models); they see each other's writes through the store's per-user "
                                "versions. Use a postgresql:// --store for more than a few."),
    prefix_cache_users: int = typer.Option(0, "--prefix-cache-users", help="Users whose last chat prompt's KV "
                                           "cache is kept for their next turn (LRU; 0: off; hf backend)."),
) -> None:
    """Run the personalization server (OpenAI-compatible chat + memory API) until Ctrl-C / SIGTERM."""
    from pllm.serve import ServeConfig, run
    from pllm.serve.features import open_with_features

    for module in plugin:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InputError(f"cannot import plugin {module!r}: {exc}", field="--plugin") from None
    config = ServeConfig(db=str(db) if db else None, backend=backend, model=model, model_name=model_name,
                         embedder=None if embedder == "none" else embedder, embed_precision=embed_precision,
                         retriever=retriever, k=k, cross_encoder=cross_encoder, memory_in=memory_in,
                         chat_memory=chat_memory, gen_concurrency=concurrency, gen_queue=queue,
                         request_timeout_s=timeout, max_body_bytes=max_body_bytes, synchronous=synchronous,
                         preload=not no_preload,
                         torch_threads=torch_threads, personalizer=personalizer, adapt_task=adapt_task,
                         soft=str(soft) if soft else None, prefix_cache_users=prefix_cache_users)
    if workers < 1:
        raise InputError(f"must be >= 1, got {workers}", field="--workers")
    if workers > 1 and prefix_cache_users:  # a forget reaches one worker: another's cache would keep the text
        raise InputError("works with one worker only (each worker would keep its own cache, and forgetting a "
                         "user reaches one of them)", field="--prefix-cache-users")
    with open_with_features(config.db) as opened:  # a bad store fails here, once, before any worker starts
        store = opened.location
    if workers > 1:
        _serve_workers(config, plugin, workers=workers, host=host, port=port, log_level=log_level, store=store)
        return
    what = f"{config.backend} model" + (f" and {config.embedder} embedder" if config.embedder else "")
    err_console.print(f"pllm serve: loading the {what} (store {store})..." if config.preload else
                      f"pllm serve: starting (store {store}; models load on first use)...")

    def ready(url: str) -> None:  # called once the models are loaded and the port is open
        err_console.print(f"pllm serve: ready at {url} (store {store}, backend {config.backend}, retriever "
                          f"{config.retriever}); Ctrl-C stops it")

    run(config, host=host, port=port, log_level=log_level, on_ready=ready)


def _serve_workers(config: ServeConfig, plugins: list[str], *, workers: int, host: str, port: int, log_level: str,
                   store: str) -> None:
    """`workers` uvicorn processes, each building the app from the config in the environment."""
    import dataclasses
    import os

    import uvicorn

    from pllm.serve.app import CONFIG_ENV, PLUGINS_ENV

    os.environ[CONFIG_ENV] = json.dumps(dataclasses.asdict(config))
    os.environ[PLUGINS_ENV] = ",".join(plugins)
    err_console.print(f"pllm serve: starting {workers} workers at http://{host}:{port}/v1 (store {store}); "
                      "Ctrl-C stops them")
    uvicorn.run("pllm.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False, timeout_graceful_shutdown=30)


def register(root: typer.Typer) -> None:
    root.command("serve")(serve)
