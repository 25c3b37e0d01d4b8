"""The personalization server: an OpenAI-compatible chat endpoint whose answers use each user's memory,
a typed memory API, tenant-scoped API keys, and back-pressure. See docs/serving.md.

    from pllm.serve import ServeConfig, create_app, run
    run(ServeConfig(), host="127.0.0.1", port=8000)      # or: pllm serve
"""

from __future__ import annotations

from pllm.serve.app import ServerState, create_app
from pllm.serve.auth import KeyStore, Principal, store_user_id
from pllm.serve.chat import PERSONALIZERS, ChatContext, Personalizer
from pllm.serve.config import ADMIN_KEY_ENV, ServeConfig


def run(config: ServeConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "warning", graceful_timeout_s: float = 30.0) -> None:
    """Serve with uvicorn until SIGINT/SIGTERM; in-flight requests (writes included) finish first."""
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, workers=1,
                timeout_graceful_shutdown=graceful_timeout_s, access_log=False)


__all__ = ["ADMIN_KEY_ENV", "PERSONALIZERS", "ChatContext", "KeyStore", "Personalizer", "Principal",
           "ServeConfig", "ServerState", "create_app", "run", "store_user_id"]
