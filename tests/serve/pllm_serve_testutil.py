"""Helpers for the server tests (a module of its own so test files can import it by a unique name)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The server on a free loopback port with the fakes loaded: through `pllm serve --plugin` (cli=True), or
    through uvicorn's app factory (`python -m uvicorn --factory pllm.serve.app:app_from_env`), which starts
    faster because it does not import every CLI command."""

    def __init__(self, home: Path, *extra: str, env: dict[str, str] | None = None, port: int | None = None,
                 cli: bool = False, config: dict | None = None) -> None:
        self.home, self.extra, self.port, self.cli = home, extra, port or free_port(), cli
        cfg = {"backend": "serve-echo", "embedder": "serve-bow", **(config or {})}
        self.env = {**os.environ, "PLLM_HOME": str(home),
                    "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), str(SRC),
                                                  os.environ.get("PYTHONPATH", "")]),
                    "PLLM_SERVE_PLUGINS": "pllm_serve_fakes", "PLLM_SERVE_CONFIG": json.dumps(cfg), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"server-{self.port}-{time.monotonic_ns()}.log"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        if self.cli:
            cmd = [sys.executable, "-c", "import sys; from pllm.cli import main; sys.argv[0] = 'pllm'; main()",
                   "serve", "--host", "127.0.0.1", "--port", str(self.port), "--plugin", "pllm_serve_fakes",
                   "--backend", "serve-echo", "--embedder", "serve-bow", *self.extra]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "pllm.serve.app:app_from_env", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", "--timeout-graceful-shutdown", "30",
                   *self.extra]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc is not None else None
