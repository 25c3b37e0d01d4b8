"""Helpers and fixtures shared by the alignment tests (no conftest.py here: the suite imports the top-level
`conftest` by name, which a second conftest module would shadow). Test modules import the fixtures they use.

`one_thread` (autouse where imported): one torch thread, since multi-threaded tiny-model training on a shared
machine spends its time spin-waiting. `dsp_file`: a small DSP-format file over words the tiny tokenizer knows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pllm.adapt.store import AdapterRecord, AdapterStore, named_record
from pllm.align.store import PreferencePair
from pllm_testkit import random_lora

# tests/conftest.py's SHARED_DATA: ../shared/data relative to the repo
DSP_PATH = Path(__file__).resolve().parents[3] / "shared" / "data" / "dsp" / "domain_specific_preference.test.json"

STYLES = {
    "academy": "the paper gives the following answer based on previous examples",
    "business": "our product gives great value , please rate it",
    "entertainment": "I love this movie , it is great fun",
    "literature": "her words are like a poem , a summary of our history",
    "normal": "the answer is this one",
}


def movie_pairs(n: int = 8, flip: bool = False) -> list[PreferencePair]:
    good, bad = "great movie , I love it", "bad movie , I hate it"
    if flip:
        good, bad = bad, good
    return [PreferencePair(id=f"p{i}", prompt=f"what is the rating of this movie {i} ?", chosen=good, rejected=bad)
            for i in range(n)]


def save_random_adapter(base, store: AdapterStore, name: str, seed: int, *, kind: str = "dpo",
                        users: list[str] | None = None, dimensions: list[str] | None = None,
                        r: int = 4, alpha: float = 8.0) -> AdapterRecord:
    """A LoRA adapter with random (non-zero) A and B, stored like a trained one: fast and distinct per seed."""
    model = random_lora(base, seed, r=r, alpha=alpha)
    record = named_record(name, kind, base.model_id, users=users or [], dimensions=dimensions or [])
    return store.write(record, lambda tmp: model.save_pretrained(str(tmp)))


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread: None) -> Iterator[None]:
    yield


@pytest.fixture(name="dsp_file")
def dsp_file_fixture(tmp_path: Path) -> Path:
    """Ten queries, each answered in the five DSP styles (words the tiny tokenizer knows)."""
    rows = [{"query": f"question {i} : what is the best {w} ?",
             "responses": {s: f"{t} {i}" for s, t in STYLES.items()}}
            for i, w in enumerate(["movie", "book", "paper", "product", "tweet", "news", "review", "title",
                                   "article", "headline"])]
    path = tmp_path / "dsp.json"
    path.write_text(json.dumps(rows))
    return path
