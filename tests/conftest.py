"""Fixtures shared by the whole suite: an isolated PLLM_HOME per test, a tiny random generator, and
fakes registered through the real extension points (GENERATORS, EMBEDDERS), never by patching.
Helper classes live in `pllm_testkit` (import them from there, not from `conftest`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pllm.models.base import GENERATORS
from pllm.retrieval.embedders import EMBEDDERS, clear_loaded_embedders
from pllm_testkit import BowEmbedder, EchoGenerator, lamp3_outputs, lamp3_records

# The embedded model is converted once per machine (about 20-50 s), not once per test: every test gets a
# fresh PLLM_HOME, but converted weights live in a shared models folder.
os.environ.setdefault("PLLM_MODELS_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                             / "pllm" / "cache" / "models"))


@pytest.fixture(autouse=True)
def pllm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "pllm-home"
    monkeypatch.setenv("PLLM_HOME", str(home))
    return home


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test: tiny models are dominated by per-op threading overhead (about 10x
    slower with 2 threads on a busy machine). Test folders that train tiny models make it autouse."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_generator():
    from pllm.models.testing import make_tiny_generator

    return make_tiny_generator(seed=0)


@pytest.fixture
def bow_embedder() -> Iterator[str]:
    EMBEDDERS.register("test-bow", BowEmbedder, replace=True)
    clear_loaded_embedders()
    yield "test-bow"
    EMBEDDERS.unregister("test-bow")
    clear_loaded_embedders()


@pytest.fixture
def echo_backend() -> Iterator[str]:
    GENERATORS.register("test-echo", EchoGenerator, replace=True)
    yield "test-echo"
    GENERATORS.unregister("test-echo")


@pytest.fixture
def lamp3_files(tmp_path: Path) -> tuple[Path, Path]:
    q, o = tmp_path / "dev_questions.json", tmp_path / "dev_outputs.json"
    q.write_text(json.dumps(lamp3_records()))
    o.write_text(json.dumps(lamp3_outputs()))
    return q, o
