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
from pllm_testkit import (
    POSTGRES_ENV,
    POSTGRES_REQUIRED_ENV,
    BowEmbedder,
    EchoGenerator,
    lamp3_outputs,
    lamp3_records,
    postgres_schema_url,
)

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
def postgres_url() -> Iterator[str]:
    """A store URL on the PostgreSQL server named by $PLLM_TEST_POSTGRES, in a schema of its own that is
    dropped afterwards. Skipped without the variable; with $PLLM_TEST_POSTGRES_REQUIRED=1 (CI) a missing
    variable or an unreachable server fails the test instead."""
    import uuid

    required = os.environ.get(POSTGRES_REQUIRED_ENV) == "1"
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        reason = f"PostgreSQL store tests need ${POSTGRES_ENV}=postgresql://... (.ci/run starts a server)"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg

    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = f"${POSTGRES_ENV} is unreachable: {' '.join(str(exc).split())}"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"pllm_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield postgres_schema_url(url, schema)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, once per implementation: a SQLite file, and a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite3")
    return str(request.getfixturevalue("postgres_url"))


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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model saved as a folder, for commands that load a model by path (`--model`)."""
    from pllm.models.testing import make_tiny_generator

    gen = make_tiny_generator(seed=0)
    folder = tmp_path_factory.mktemp("tiny-model")
    gen.model.save_pretrained(folder)
    gen.tokenizer.save_pretrained(folder)
    return folder


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
