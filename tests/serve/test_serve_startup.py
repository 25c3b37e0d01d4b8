"""Start-up as a newcomer sees it: the URL is printed once the models are loaded and the port is open,
the store path printed is the real one, and the one-time model conversion is announced."""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pllm_serve_testutil import HERE, SRC

from pllm.cli import configure_logging
from pllm.models.base import GENERATORS
from pllm.serve import ServeConfig, make_server
from pllm_testkit import EchoGenerator

LOADED: list[float] = []


class SlowLoading(EchoGenerator):
    """Takes a while to construct, like a real model, and records when it finished."""

    def __init__(self, model: str | None = None) -> None:
        time.sleep(0.3)
        super().__init__(model)
        LOADED.append(time.monotonic())


@pytest.fixture
def slow_backend() -> Iterator[str]:
    GENERATORS.register("test-slow-load", SlowLoading, replace=True)
    LOADED.clear()
    yield "test-slow-load"
    GENERATORS.unregister("test-slow-load")


def test_on_ready_fires_after_the_model_loads_with_the_port_open(slow_backend, tmp_path):
    seen: dict[str, object] = {}

    def ready(url: str) -> None:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # accepted: the port is open now
            pass
        seen.update(url=url, loaded=list(LOADED), at=time.monotonic())

    config = ServeConfig(db=str(tmp_path / "s.db"), backend=slow_backend, embedder=None, retriever="bm25",
                         preload=True)
    server = make_server(config, host="127.0.0.1", port=0, on_ready=ready)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while "url" not in seen and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", str(seen.get("url"))), seen
        assert seen["loaded"], "ready before the model was loaded"
        assert httpx.get(str(seen["url"]).removesuffix("/v1") + "/healthz", timeout=5).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_cli_prints_the_real_store_and_the_url_when_it_works(pllm_home):
    env = {**os.environ, "PLLM_HOME": str(pllm_home), "COLUMNS": "500",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", "import sys; from pllm.cli import main; sys.argv[0] = 'pllm'; main()", "serve",
           "--port", "0", "--plugin", "pllm_serve_fakes", "--backend", "serve-echo", "--embedder", "serve-bow"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr] + [lines.put(None)], daemon=True).start()
    text = ""
    try:
        deadline = time.monotonic() + 120
        while "ready at" not in text and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            text += line
        url = re.search(r"ready at (http://127\.0\.0\.1:\d+)/v1", text)
        assert url, text
        assert httpx.get(url.group(1) + "/healthz", timeout=5).status_code == 200  # works the moment it is printed
        store = pllm_home / "pllm.sqlite3"
        assert f"pllm serve: loading the serve-echo model and serve-bow embedder (store {store})" in text
        assert f"(store {store}, backend serve-echo" in text and "$PLLM_HOME" not in text
        assert text.index("loading the") < text.index("ready at")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(("pllm_log", "announced"), [(None, True), ("ERROR", False)])
def test_model_conversion_is_announced_unless_logs_are_turned_down(monkeypatch, pllm_log, announced):
    logger = logging.getLogger("pllm.models.embedded")
    before = logger.level
    if pllm_log is None:
        monkeypatch.delenv("PLLM_LOG", raising=False)
    else:
        monkeypatch.setenv("PLLM_LOG", pllm_log)
    try:
        configure_logging()
        assert logger.isEnabledFor(logging.INFO) is announced
    finally:
        logger.setLevel(before)
