"""The personalization server: `create_app(config)` gives a FastAPI app with

- `POST /v1/chat/completions` (OpenAI shapes, SSE streaming), `GET /v1/models`;
- the memory API under `/v1/users/{user}` (items, search, export, forget);
- key management under `/v1/admin/keys` (admin keys only);
- `GET /healthz` (no key; says nothing about data).

Every data route authenticates a tenant key and works on `<tenant>/<user>` store ids only, so another
tenant's users answer 404 exactly like users that never existed. Store work runs in a bounded thread pool
(the event loop never waits on SQLite), generation in the `GenerationLimiter`'s thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import BackgroundTasks, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pllm import pipeline
from pllm.errors import InputError, NotFoundError, PllmError, UnknownNameError
from pllm.models.base import Generation, Generator, load_generator
from pllm.models.prefix_cache import PrefixCache
from pllm.prompting.chat import MEMORY_SPEC, ChatStyle, chat_question
from pllm.retrieval import RETRIEVERS, Embedder, load_embedder
from pllm.serve.auth import KeyStore, Principal, store_user_id
from pllm.serve.chat import AUTO, NONE, PERSONALIZERS, ChatContext, ChatPersonalizer, StopScanner
from pllm.serve.config import ServeConfig
from pllm.serve.errors import APIError, error_body, forbidden, not_found, timed_out, unauthorized
from pllm.serve.features import open_with_features
from pllm.serve.limits import BodyLimitMiddleware, GenerationLimiter
from pllm.serve.memory import MemoryService
from pllm.serve.personalizers import AUTO_ORDER
from pllm.serve.remember import MEMORY_MODES, ChatMemory, chat_turn
from pllm.serve.schemas import (
    ChatRequest,
    Deleted,
    ItemHistory,
    ItemIn,
    ItemOut,
    ItemsAdded,
    ItemsIn,
    ItemsPage,
    ItemVersionOut,
    KeyCreate,
    SearchHitOut,
    SearchOut,
    UserExport,
    UserForgotten,
)
from pllm.types import ProfileItem, Question

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServerState:
    """What the routes share: the store, keys, memory service, limiter and the lazily loaded models."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.store = open_with_features(config.db)  # every feature's tables and forget
        self.store.set_synchronous(config.synchronous)
        self.keys = KeyStore(self.store, env_admin_key=config.resolved_admin_key())
        self.memory = MemoryService(self.store, embedder=self.embedder if config.embedder else None,
                                    generator=self.generator, cross_encoder=config.cross_encoder,
                                    default_retriever=config.retriever, cache_users=config.index_cache_users,
                                    busy_retries=config.busy_retries, version_check=config.version_check)
        self.limiter = GenerationLimiter(config.gen_concurrency, config.gen_queue)
        self.io = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="pllm-io")
        self.chat_memory = ChatMemory(self.memory, self.limiter, self.generator, run_io=self.run_io,
                                      merge_similarity=config.memory_merge_similarity,
                                      extract_max_tokens=config.extract_max_tokens)
        self._generator: Generator | None = None
        self._embedder: Embedder | None = None
        self._personalizers: dict[str, ChatPersonalizer] = {}
        self._load_lock = threading.Lock()
        self.closed = False

    # -- lazily loaded models ---------------------------------------------------------------------
    def generator(self) -> Generator:
        with self._load_lock:
            if self._generator is None:
                self._generator = load_generator(self.config.backend, self.config.model)
                if self.config.prefix_cache_users and hasattr(self._generator, "prefix_cache"):
                    self._generator.prefix_cache = PrefixCache(self.config.prefix_cache_users)
            return self._generator

    def forget_prefix(self, uid: str) -> int:
        """Drop the user's cached chat prefix (a forget hook of the served model, not of the store)."""
        cache = getattr(self._generator, "prefix_cache", None)
        return cache.forget(uid) if isinstance(cache, PrefixCache) else 0

    def embedder(self) -> Embedder:
        with self._load_lock:
            if self._embedder is None:
                self._embedder = load_embedder(str(self.config.embedder), precision=self.config.embed_precision)
            return self._embedder

    def model_id(self) -> str:
        return self.config.model_name or self.generator().model_id

    def personalizer(self, name: str) -> ChatPersonalizer:
        with self._load_lock:
            if name not in self._personalizers:
                self._personalizers[name] = PERSONALIZERS.get(name)(self.store)
            return self._personalizers[name]

    def loaded_personalizers(self) -> list[ChatPersonalizer]:
        with self._load_lock:
            return list(self._personalizers.values())

    # -- threads ----------------------------------------------------------------------------------
    async def run_io(self, fn: Callable[[], T]) -> T:
        """Run store/retrieval work in the io pool under the request timeout (504 past it; the work itself
        cannot be interrupted and finishes in the background, so a timed-out write may still land)."""
        fut = asyncio.get_running_loop().run_in_executor(self.io, fn)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise timed_out(f"the request did not finish within {self.config.request_timeout_s:.1f} s") from None

    def close(self) -> None:
        """Finish in-flight writes and generations, then close the store (graceful shutdown)."""
        if self.closed:
            return
        self.closed = True
        self.io.shutdown(wait=True)
        self.limiter.shutdown()
        self.store.close()


# -- auth ---------------------------------------------------------------------------------------------
def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate(state: ServerState, key: str | None, *, admin: bool) -> Principal:
    if key is None:
        raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    principal = state.keys.authenticate(key)
    if principal is None:
        raise unauthorized("invalid API key")
    if admin and not principal.is_admin:
        raise forbidden("this route needs an admin key")
    if not admin and principal.is_admin:
        raise forbidden("admin keys manage keys only; use a tenant key for user data and chat")
    return principal


def _check_user(user: str) -> str:
    if not user or len(user) > 256 or not user.strip() or any(ord(c) < 32 for c in user):
        raise APIError(422, "user id must be 1-256 printable characters", param="user")
    if "/" in user:  # a user id is a URL path segment: one with '/' could never be addressed again
        raise APIError(422, "user id must not contain '/'", param="user", code="validation_error")
    return user


# -- error handlers -----------------------------------------------------------------------------------
def _validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    parts, first = [], None
    for err in errors[:10]:
        if err.get("type") == "json_invalid":  # loc is (body, character offset): say what is wrong and where
            detail = (err.get("ctx") or {}).get("error", "invalid JSON")
            return f"request body is not valid JSON: {detail} at character {err['loc'][-1]}", "body"
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        first = first or where
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    if len(errors) > 10:
        parts.append(f"... and {len(errors) - 10} more")
    return "; ".join(parts), first


def _install_error_handlers(app: FastAPI) -> None:
    def respond(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(list(exc.errors()))
        return respond(422, error_body(message, param=param, code="validation_error"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return respond(exc.status_code, error_body(str(exc.detail), type=kind), getattr(exc, "headers", None))

    @app.exception_handler(UnknownNameError)
    async def _unknown(request: Request, exc: UnknownNameError) -> JSONResponse:
        return respond(400, error_body(str(exc), code="unknown_name"))

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return respond(422, error_body(str(exc), param=exc.field, code="validation_error"))

    @app.exception_handler(NotFoundError)
    async def _missing(request: Request, exc: NotFoundError) -> JSONResponse:
        return respond(404, error_body(str(exc), type="not_found_error", code="not_found"))

    @app.exception_handler(PllmError)
    async def _pllm(request: Request, exc: PllmError) -> JSONResponse:
        return respond(400, error_body(str(exc)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return respond(500, error_body("internal server error", type="server_error", code="internal_error"))


# -- the app ------------------------------------------------------------------------------------------
def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The server for `config` (defaults: the store under $PLLM_HOME, the embedded model, MiniLM)."""
    config = config or ServeConfig()
    if config.personalizer not in (AUTO, NONE):
        PERSONALIZERS.get(config.personalizer)
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.torch_threads is not None:
            import torch

            torch.set_num_threads(config.torch_threads)
        if config.preload:
            loop = asyncio.get_running_loop()
            if config.embedder:
                await loop.run_in_executor(state.io, state.embedder)
            await loop.run_in_executor(state.io, state.generator)
        try:
            yield
        finally:
            await state.chat_memory.drain()  # memory from chats still being written
            await asyncio.get_running_loop().run_in_executor(None, state.close)

    app = FastAPI(title="pllm personalization server", version="1", lifespan=lifespan)
    app.state.pllm = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    _install_error_handlers(app)

    async def tenant_call(request: Request, fn: Callable[[str], T]) -> T:
        """Authenticate a tenant key and run `fn(tenant)` in the io pool, in one hop."""
        key = _bearer(request)

        def work() -> T:
            principal = _authenticate(state, key, admin=False)
            return fn(str(principal.tenant))

        return await state.run_io(work)

    def existing_user(tenant: str, user: str) -> str:
        """The store id of the tenant's `user`; 404 when that user holds no data."""
        uid = store_user_id(tenant, user)
        if not state.memory.exists(uid):
            raise not_found(f"user {user!r} not found", param="user")
        return uid

    async def user_call(request: Request, user: str, fn: Callable[[str], T]) -> T:
        """`tenant_call` for a route on one existing user: check the id, then run `fn(store id)`."""
        _check_user(user)
        return await tenant_call(request, lambda tenant: fn(existing_user(tenant, user)))

    # -- misc ---------------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        model = await tenant_call(request, lambda tenant: state.model_id())
        return {"object": "list", "data": [_model_card(model)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> dict[str, Any]:
        served = await tenant_call(request, lambda tenant: state.model_id())
        if model_id != served:
            raise APIError(404, f"model {model_id!r} is not served here; available: {served}", param="model",
                           type="not_found_error", code="model_not_found")
        return _model_card(served)

    # -- memory -------------------------------------------------------------------------------------
    @app.post("/v1/users/{user}/items", status_code=201, response_model=ItemsAdded)
    async def add_items(user: str, request: Request) -> ItemsAdded:
        _check_user(user)
        try:
            payload = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(422, f"request body is not valid JSON: {exc}", param="body",
                           code="validation_error") from None
        try:
            items_in = (ItemsIn.model_validate(payload).items if isinstance(payload, dict) and "items" in payload
                        else [ItemIn.model_validate(payload)])
        except ValidationError as exc:
            message, param = _validation_message(list(exc.errors()))
            raise APIError(422, message, param=param, code="validation_error") from None
        if len(items_in) > config.max_items_per_request:
            raise APIError(413, f"{len(items_in)} items in one request; the limit is {config.max_items_per_request}",
                           param="items", code="too_many_items")
        for i, it in enumerate(items_in):
            if len(it.text) > config.max_item_chars:
                raise APIError(422, f"items.{i}.text: {len(it.text)} characters; the limit is "
                                    f"{config.max_item_chars}", param=f"items.{i}.text", code="validation_error")
            if len(json.dumps(it.fields, ensure_ascii=False)) > config.max_fields_bytes:
                raise APIError(422, f"items.{i}.fields: larger than {config.max_fields_bytes} bytes of JSON",
                               param=f"items.{i}.fields", code="validation_error")
        items = [it.to_item() for it in items_in]
        stored = await tenant_call(request, lambda tenant: state.memory.add(store_user_id(tenant, user), items))
        return ItemsAdded(user=user, data=[ItemOut.of(it) for it in stored])

    @app.get("/v1/users/{user}/items", response_model=ItemsPage)
    async def list_items(request: Request, user: str, limit: int = Query(100, ge=1, le=1000),
                         offset: int = Query(0, ge=0)) -> ItemsPage:
        def work(uid: str) -> ItemsPage:
            items = state.memory.page(uid, limit=limit, offset=offset)
            total = state.memory.count_items(uid)
            return ItemsPage(user=user, data=[ItemOut.of(it) for it in items], total=total, limit=limit,
                             offset=offset, has_more=offset + len(items) < total)

        return await user_call(request, user, work)

    @app.get("/v1/users/{user}/search", response_model=SearchOut)
    async def search(request: Request, user: str, q: str = Query(..., min_length=1, max_length=4000),
                     k: int | None = Query(None, ge=0), retriever: str | None = Query(None)) -> SearchOut:
        _check_user(user)
        k_ = config.k if k is None else k
        if k_ > config.max_k:
            raise APIError(422, f"k: {k_} exceeds the limit of {config.max_k}", param="k", code="validation_error")
        name = retriever or config.retriever
        RETRIEVERS.get(name)

        def work(tenant: str) -> SearchOut:
            uid = existing_user(tenant, user)
            hits = state.memory.search(uid, q, k_, retriever=name, scope=tenant)
            return SearchOut(user=user, query=q, retriever=name,
                             data=[SearchHitOut(item=ItemOut.of(h.item), score=h.score) for h in hits])

        return await tenant_call(request, work)

    @app.get("/v1/users/{user}/items/{item}/history", response_model=ItemHistory)
    async def item_history(request: Request, user: str, item: str) -> ItemHistory:
        def work(uid: str) -> ItemHistory:
            versions = state.memory.history(uid, item)
            if not versions:
                raise not_found(f"item {item!r} not found for user {user!r}", param="item")
            return ItemHistory(user=user, item=item, data=[
                ItemVersionOut(version=v.version, text=ItemOut.of(ProfileItem(id=item, fields=v.fields)).text,
                               fields={k: x for k, x in v.fields.items() if k != "text"}, timestamp=v.timestamp,
                               replaced_at=v.replaced_at) for v in versions])

        return await user_call(request, user, work)

    @app.get("/v1/memory/stats")
    async def memory_stats(request: Request) -> dict[str, Any]:
        stats = await tenant_call(request, lambda tenant: state.chat_memory.stats(tenant))
        return {"object": "memory.stats", **stats.to_dict()}

    @app.delete("/v1/users/{user}/items/{item}", response_model=Deleted)
    async def delete_item(request: Request, user: str, item: str) -> Deleted:
        def work(uid: str) -> Deleted:
            if not state.memory.delete(uid, item):
                raise not_found(f"item {item!r} not found for user {user!r}", param="item")
            return Deleted(id=item, object="item")

        return await user_call(request, user, work)

    @app.delete("/v1/users/{user}", response_model=UserForgotten)
    async def forget_user(request: Request, user: str) -> UserForgotten:
        def work(uid: str) -> UserForgotten:
            rows = state.memory.forget(uid)
            if config.prefix_cache_users:
                rows["prefix_cache"] = state.forget_prefix(uid)
            for p in state.loaded_personalizers():
                rows[f"personalizer:{p.name}"] = p.forget(uid)
            return UserForgotten(id=user, rows=rows)

        return await user_call(request, user, work)

    @app.get("/v1/users/{user}/export", response_model=UserExport)
    async def export_user(request: Request, user: str) -> UserExport:
        def work(uid: str) -> UserExport:
            data = state.memory.export(uid)
            return UserExport(user=user, exported_at=time.time(), items=[ItemOut.of(it) for it in data["items"]],
                              n_embeddings=data["n_embeddings"], profile_summaries=data["profile_summaries"])

        return await user_call(request, user, work)

    # -- keys (admin) -------------------------------------------------------------------------------
    async def admin_call(request: Request, fn: Callable[[], T]) -> T:
        key = _bearer(request)

        def work() -> T:
            _authenticate(state, key, admin=True)
            return fn()

        return await state.run_io(work)

    @app.post("/v1/admin/keys", status_code=201)
    async def create_key(request: Request, body: KeyCreate) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            key, info = state.keys.create(tenant=body.tenant, role=body.role, name=body.name)
            return {"key": key, **info.to_dict()}

        return await admin_call(request, work)

    @app.get("/v1/admin/keys")
    async def list_keys(request: Request, tenant: str | None = Query(None)) -> dict[str, Any]:
        keys = await admin_call(request, lambda: state.keys.list(tenant=tenant))
        return {"object": "list", "data": [k.to_dict() for k in keys]}

    @app.delete("/v1/admin/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
        info = await admin_call(request, lambda: state.keys.revoke(key_id))
        return info.to_dict()

    # -- chat ---------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest, background: BackgroundTasks) -> Any:
        return await _chat(state, request, body, background)

    return app


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "pllm"}


def _chat_checks(config: ServeConfig, body: ChatRequest) -> tuple[list[dict[str, str]], int, int]:
    """Config-dependent limits and unsupported options; returns the messages as role/content dicts, max tokens
    and k."""
    if body.tools:
        raise APIError(400, "tools: tool calling is not supported by this server", param="tools",
                       code="unsupported_parameter")
    if body.logprobs:
        raise APIError(400, "logprobs: token log-probabilities are not returned by this server", param="logprobs",
                       code="unsupported_parameter")
    if body.response_format is not None and body.response_format != {"type": "text"}:
        raise APIError(400, "response_format: structured output is not supported (only {\"type\": \"text\"})",
                       param="response_format", code="unsupported_parameter")
    if len(body.messages) > config.max_messages:
        raise APIError(422, f"messages: {len(body.messages)} messages; the limit is {config.max_messages}",
                       param="messages", code="validation_error")
    messages = []
    for i, m in enumerate(body.messages):
        text = m.text()
        if len(text) > config.max_message_chars:
            raise APIError(422, f"messages.{i}.content: {len(text)} characters; the limit is "
                                f"{config.max_message_chars}", param=f"messages.{i}.content", code="validation_error")
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    if not any(m["role"] != "system" for m in messages):
        raise APIError(422, "messages: give at least one user or assistant message", param="messages",
                       code="validation_error")
    max_tokens = body.max_completion_tokens or body.max_tokens or config.default_max_tokens
    if max_tokens > config.max_new_tokens:
        raise APIError(422, f"max_tokens: {max_tokens} exceeds the limit of {config.max_new_tokens}",
                       param="max_tokens", code="validation_error")
    k = config.k if body.k is None else body.k
    if k > config.max_k:
        raise APIError(422, f"k: {k} exceeds the limit of {config.max_k}", param="k", code="validation_error")
    return messages, max_tokens, k


async def _chat(state: ServerState, request: Request, body: ChatRequest, background: BackgroundTasks) -> Any:
    config = state.config
    messages, max_tokens, k = _chat_checks(config, body)
    mode = MEMORY_MODES.get(body.memory or config.chat_memory)
    if body.memory is not None and mode.store_turn and body.user is None:
        raise APIError(422, f"memory: {body.memory!r} stores the turn in a user's memory; give `user`",
                       param="memory", code="validation_error")
    retriever = body.retriever or config.retriever
    # The pipeline's method in the chat style (names checked here, before any work); k=0 asks for no memories.
    method = pipeline.MethodConfig(retriever=retriever if k else "none", k=k, style="chat",
                                   max_prompt_tokens=config.memory_token_budget)
    wanted = body.adapter or config.personalizer
    candidates = ([n for n in AUTO_ORDER if n in PERSONALIZERS] if wanted == AUTO
                  else [] if wanted == NONE else [wanted])
    for name in candidates:
        PERSONALIZERS.get(name)
    user = _check_user(body.user) if body.user is not None else None
    key = _bearer(request)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"

    def retrieve() -> tuple[str, str | None, pipeline.Personalizer, Question, list[ProfileItem]]:
        principal = _authenticate(state, key, admin=False)
        tenant = str(principal.tenant)
        served = state.model_id()
        if body.model != served:
            raise APIError(404, f"model {body.model!r} is not served here; available: {served}", param="model",
                           type="not_found_error", code="model_not_found")
        uid = store_user_id(tenant, user) if user is not None else None
        question = chat_question(messages, id=request_id, user_id=uid or "",
                                 profile=state.memory.items(uid) if uid is not None else [])

        def search(q: Question, query: str, k: int) -> list[ProfileItem]:
            return [h.item for h in state.memory.search(q.user_id, query, k, retriever=retriever, scope=tenant)
                    ] if query.strip() else []

        summarized = dataclasses.replace(method, profile=body.profile and bool(question.profile))  # needs memories
        personalizer = pipeline.Personalizer(
            MEMORY_SPEC, state.generator(), summarized, store=state.store, search=search,
            style=ChatStyle(memory_in=config.memory_in, item_tokens=config.memory_item_tokens))
        return tenant, uid, personalizer, question, personalizer.retrieve(question)

    tenant, uid, personalizer, question, memories = await state.run_io(retrieve)
    turn = chat_turn(messages, body.session) if mode.store_turn and uid is not None else None

    def remember() -> None:  # on the event loop, once the answer is out (the writes are scheduled, not awaited)
        if turn is not None and uid is not None:
            state.chat_memory.after_reply(mode, tenant=tenant, user_id=uid, turn=turn)
    created = int(time.time())
    temperature = body.temperature or 0.0

    def prepare() -> tuple[ChatContext, list[str], str | None]:
        """In the generation thread: the profile summary (a generation itself), the prompt, and the first of the
        candidate personalizers that has something for this request (its name, None if none)."""
        built = personalizer.build_prompts([question], retrieved=[memories])[0]
        used = built.item_ids
        # Downstream (personalizers, generators) the question's profile is what the prompt shows.
        prompt = dataclasses.replace(built.prompt, question=dataclasses.replace(
            question, profile=[m for m in memories if m.id in set(used)]))
        ctx = ChatContext(tenant=tenant, user=user, store_user_id=uid, messages=messages, memories=memories,
                          prompt=prompt, generator=personalizer.generator, options={"max_tokens": max_tokens},
                          config=config, embedder=state.embedder if config.embedder else None)
        for name in candidates:
            personalized = state.personalizer(name).personalize(ctx)
            if personalized is not None:
                return personalized, used, name
        return ctx, used, None

    extras: dict[str, Any] = {"retriever": retriever, "memories": [], "adapter": None, "profile": body.profile}
    deadline = time.monotonic() + config.request_timeout_s
    slot = await state.limiter.hold(config.request_timeout_s, tenant)
    try:
        ctx, used, extras["adapter"] = await slot.run(prepare, deadline - time.monotonic())
        extras["memories"] = used
        model = body.model
        if not body.stream:
            def generate() -> Generation:
                return ctx.generator.generate([ctx.prompt], max_new_tokens=max_tokens, temperature=temperature,
                                              stop=body.stops() or None, batch_size=1)[0]

            gen = await slot.run(generate, deadline - time.monotonic())

            async def after_response() -> None:
                remember()

            background.add_task(after_response)  # runs after the response is sent: the reply does not wait
            finish = "length" if gen.completion_tokens >= max_tokens else "stop"
            return {
                "id": request_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                             "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                          "total_tokens": gen.prompt_tokens + gen.completion_tokens},
                "pllm": extras,
            }
        stream = _Stream(ctx, max_tokens=max_tokens, temperature=temperature, stops=body.stops(),
                         loop=asyncio.get_running_loop(), on_close=remember)
        slot.submit(stream.produce)
    finally:
        slot.close()  # the slot goes back once the submitted jobs are done
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        stream.events(request_id=request_id, created=created, model=model, extras=extras,
                      include_usage=include_usage, deadline=deadline),
        media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Stream:
    """One streamed completion: `produce` runs in the generation thread and hands pieces to the event loop;
    `events` turns them into OpenAI chunks. If the client goes away or the deadline passes, the producer
    stops at the next piece and closes the model's stream, so the generation slot comes back promptly."""

    def __init__(self, ctx: ChatContext, *, max_tokens: int, temperature: float, stops: list[str],
                 loop: asyncio.AbstractEventLoop, on_close: Callable[[], None]) -> None:
        self.ctx, self.max_tokens, self.temperature = ctx, max_tokens, temperature
        self.scanner = StopScanner(stops)
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.abandoned = threading.Event()
        self.on_close = on_close  # memory from the chat: after the stream ends, finished or dropped

    def _put(self, kind: str, value: Any) -> None:
        if not self.abandoned.is_set():
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
            except RuntimeError:  # loop closed
                self.abandoned.set()

    def produce(self) -> None:
        gen = self.ctx.generator
        pieces: list[str] = []
        try:
            pieces_in = gen.stream(self.ctx.prompt, max_new_tokens=self.max_tokens, temperature=self.temperature)
            for piece in pieces_in:
                pieces.append(piece)
                out = self.scanner.feed(piece)
                if out:
                    self._put("delta", out)
                if self.abandoned.is_set() or self.scanner.stopped:  # nobody listens / the answer is complete
                    close = getattr(pieces_in, "close", None)
                    if close is not None:
                        close()  # stops the model at its next token, so the slot comes back promptly
                    break
            if self.abandoned.is_set():
                return
            tail = self.scanner.flush()
            if tail:
                self._put("delta", tail)
            full = "".join(pieces)
            completion = gen.count_tokens(full)
            finish = "length" if not self.scanner.stopped and completion >= self.max_tokens else "stop"
            self._put("end", {"finish_reason": finish, "prompt_tokens": gen.count_prompt_tokens(self.ctx.prompt),
                              "completion_tokens": completion})
        except BaseException as exc:  # noqa: BLE001 - reported to the client as an error event
            log.exception("streamed generation failed")
            self._put("error", exc)

    async def events(self, *, request_id: str, created: int, model: str, extras: dict[str, Any],
                     include_usage: bool, deadline: float) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
            obj = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **more}
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""}, pllm=extras)
            while True:
                try:
                    kind, value = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    yield f"data: {json.dumps(error_body('generation did not finish within the request timeout', type='timeout_error', code='timeout'))}\n\n"  # noqa: E501
                    break
                if kind == "delta":
                    yield chunk({"content": value})
                elif kind == "error":
                    message = str(value) if isinstance(value, PllmError) else "generation failed"
                    yield f"data: {json.dumps(error_body(message, type='server_error'))}\n\n"
                    break
                else:
                    yield chunk({}, value["finish_reason"])
                    if include_usage:
                        usage = {"prompt_tokens": value["prompt_tokens"],
                                 "completion_tokens": value["completion_tokens"],
                                 "total_tokens": value["prompt_tokens"] + value["completion_tokens"]}
                        obj = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                               "model": model, "choices": [], "usage": usage}
                        yield f"data: {json.dumps(obj)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            self.abandoned.set()
            self.on_close()


CONFIG_ENV = "PLLM_SERVE_CONFIG"
PLUGINS_ENV = "PLLM_SERVE_PLUGINS"


def app_from_env() -> FastAPI:
    """App factory for `python -m uvicorn --factory pllm.serve.app:app_from_env`: ServeConfig fields as JSON
    in $PLLM_SERVE_CONFIG, and comma-separated modules to import first (plugins) in $PLLM_SERVE_PLUGINS."""
    import importlib
    import os
    from dataclasses import fields

    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(module)
    raw = os.environ.get(CONFIG_ENV, "").strip()
    try:
        values = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"${CONFIG_ENV} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise InputError(f"${CONFIG_ENV} must be a JSON object of ServeConfig fields")
    unknown = sorted(set(values) - {f.name for f in fields(ServeConfig)})
    if unknown:
        raise InputError(f"${CONFIG_ENV}: unknown fields {unknown}")
    return create_app(ServeConfig(**values))
