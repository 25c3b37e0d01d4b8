"""The personalization server: an OpenAI-compatible chat endpoint whose answers use each user's memory,
a typed memory API, tenant-scoped API keys, and back-pressure. See docs/serving.md.

    from pllm.serve import ServeConfig, create_app, run
    run(ServeConfig(), host="127.0.0.1", port=8000)      # or: pllm serve
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pllm.serve.app import ServerState, create_app
from pllm.serve.auth import KeyStore, Principal, store_user_id
from pllm.serve.chat import PERSONALIZERS, ChatContext, ChatPersonalizer
from pllm.serve.config import ADMIN_KEY_ENV, ServeConfig


def make_server(config: ServeConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "warning", graceful_timeout_s: float = 30.0,
                on_ready: Callable[[str], None] | None = None) -> Any:
    """A uvicorn server for `config`; `on_ready(url)` is called once the models are loaded (lifespan
    startup) and the port is really open, so a URL printed there can be used at once (port 0: the
    port the system picked)."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:  # not started: lifespan or bind failed, and was logged
                bound = self.servers[0].sockets[0].getsockname()[1]
                on_ready(f"http://{f'[{host}]' if ':' in host else host}:{bound}/v1")

    return _Server(uvicorn.Config(create_app(config), host=host, port=port, log_level=log_level, workers=1,
                                  # uvicorn annotates this int but waits with asyncio, which takes float seconds
                                  timeout_graceful_shutdown=graceful_timeout_s,  # type: ignore[arg-type]
                                  access_log=False))


def run(config: ServeConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "warning", graceful_timeout_s: float = 30.0,
        on_ready: Callable[[str], None] | None = None) -> None:
    """Serve with uvicorn until SIGINT/SIGTERM; in-flight requests (writes included) finish first."""
    make_server(config, host=host, port=port, log_level=log_level, graceful_timeout_s=graceful_timeout_s,
                on_ready=on_ready).run()


__all__ = ["ADMIN_KEY_ENV", "PERSONALIZERS", "ChatContext", "ChatPersonalizer", "KeyStore", "Principal",
           "ServeConfig", "ServerState", "create_app", "make_server", "run", "store_user_id"]
