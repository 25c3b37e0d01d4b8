"""Back-pressure and size limits.

`GenerationLimiter`: at most `concurrency` generations run at once; each tenant may have at most
`concurrency + queue` requests admitted (running or waiting), past that the tenant's request is refused at once
with 429 and a Retry-After estimated from recent generation times. The bound is per tenant so that one
tenant's burst only refuses that tenant: another tenant's request still waits its turn (slots are granted
first come, first served).
A slot is released only when the worker thread really finishes (a timed-out or abandoned generation
keeps its slot until the model is done), so the bound on model work holds even under timeouts.
Background model work (memory extraction) takes no slot: it runs between the slots' work, pausing in
`wait_idle` while any request runs or waits.

`BodyLimitMiddleware`: refuses bodies over `max_bytes` with 413 (from Content-Length when given, else
while reading), before any parsing.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from pllm.serve.errors import error_body, overloaded, timed_out

T = TypeVar("T")


class GenerationLimiter:
    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency, self.queue = concurrency, queue
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="pllm-gen")
        self._sem: asyncio.Semaphore | None = None
        self.active = 0
        self.waiting = 0
        self.rejected = 0
        self.admitted: dict[str, int] = {}  # per tenant: running + waiting
        self._durations: deque[float] = deque(maxlen=32)
        self._idle = threading.Event()  # set while no request runs or waits for a slot
        self._idle.set()

    def _update_idle(self) -> None:
        if self.active == 0 and self.waiting == 0:
            self._idle.set()
        else:
            self._idle.clear()

    def wait_idle(self) -> None:
        """Block (in a worker thread) until no request runs or waits: background work calls this between its
        steps, so a request never waits for more than one step of it."""
        self._idle.wait()

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # created inside the running loop
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: mean recent duration x queue ahead / concurrency."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        ahead = self.waiting + self.active
        return max(1, math.ceil(mean * ahead / self.concurrency))

    async def acquire(self, timeout: float, tenant: str = "") -> None:
        """Wait for a slot (at most `timeout` s); 429 at once when the tenant's queue is full, 504 on timeout."""
        sem = self._semaphore()
        # Admitted = running + waiting (a request counts as waiting until its semaphore acquire returns).
        mine = self.admitted.get(tenant, 0)
        if mine >= self.concurrency + self.queue:
            self.rejected += 1
            raise overloaded(self.retry_after(), f"the server is busy: {mine} of your requests admitted, "
                                                 f"{self.active} generation(s) running and {self.waiting} waiting "
                                                 f"(queue limit {self.queue} per tenant); retry later")
        self.admitted[tenant] = mine + 1
        self.waiting += 1
        self._update_idle()
        try:
            await asyncio.wait_for(sem.acquire(), timeout)
        except BaseException as exc:  # timed out, or cancelled (the request is gone)
            self.waiting -= 1
            self._update_idle()
            self._leave(tenant)
            if isinstance(exc, asyncio.TimeoutError):
                raise timed_out(f"no generation slot became free within {timeout:.1f} s") from None
            raise
        self.waiting -= 1
        self.active += 1  # in one step: background work never sees a gap between waiting and running
        self._update_idle()

    def _leave(self, tenant: str) -> None:
        left = self.admitted.pop(tenant) - 1
        if left:
            self.admitted[tenant] = left

    def release(self, started: float | None = None, tenant: str = "") -> None:
        """Give the slot back (call on the event loop thread)."""
        if started is not None:
            self._durations.append(time.monotonic() - started)
        self.active -= 1
        self._update_idle()
        self._leave(tenant)
        self._semaphore().release()

    async def hold(self, timeout: float, tenant: str = "") -> Slot:
        """Acquire a slot for `tenant` and return it; close it when no more jobs will be submitted."""
        await self.acquire(timeout, tenant)
        return Slot(self, asyncio.get_running_loop(), tenant)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class Slot:
    """A held generation slot. Jobs submitted through it run in the generation thread; the slot goes back
    once it is closed and every job has really finished (a job cannot be interrupted, so a request that
    timed out or went away still holds the slot until the model is done)."""

    def __init__(self, limiter: GenerationLimiter, loop: asyncio.AbstractEventLoop, tenant: str = "") -> None:
        self.limiter, self.loop, self.tenant = limiter, loop, tenant
        self.started = time.monotonic()
        self.pending = 0
        self.closed = False
        self.released = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        if self.closed:
            raise RuntimeError("slot is closed")
        self.pending += 1
        fut = self.limiter.executor.submit(fn)
        fut.add_done_callback(self._on_done)
        return fut

    def _on_done(self, _fut: Future) -> None:
        try:
            self.loop.call_soon_threadsafe(self._job_done)
        except RuntimeError:  # the loop is closed (shutdown): nobody is waiting for the slot any more
            pass

    async def run(self, fn: Callable[[], T], timeout: float) -> T:
        fut = self.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), max(0.0, timeout))
        except asyncio.TimeoutError:
            raise timed_out("generation did not finish within the request timeout") from None

    def _job_done(self) -> None:
        self.pending -= 1
        self._maybe_release()

    def close(self) -> None:
        """No more jobs (call on the event loop thread)."""
        self.closed = True
        self._maybe_release()

    def _maybe_release(self) -> None:
        if self.closed and self.pending == 0 and not self.released:
            self.released = True
            self.limiter.release(self.started, self.tenant)


class BodyLimitMiddleware:
    """Pure ASGI: 413 for bodies over `max_bytes`; the body is buffered (it is small by construction)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._reject(send, declared)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(send, size)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        buffered = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return buffered
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Callable, size: int) -> None:
        payload = json.dumps(error_body(f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes",
                                        code="body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
