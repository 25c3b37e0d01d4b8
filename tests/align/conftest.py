"""Fixtures for the alignment tests: one torch thread (the machine is shared; multi-threaded tiny-model
training spends its time spin-waiting) and a small DSP-format file. Helpers live in `align_helpers.py`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from align_helpers import STYLES


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def dsp_file(tmp_path: Path) -> Path:
    """Ten queries, each answered in the five DSP styles (words the tiny tokenizer knows)."""
    rows = [{"query": f"question {i} : what is the best {w} ?",
             "responses": {s: f"{t} {i}" for s, t in STYLES.items()}}
            for i, w in enumerate(["movie", "book", "paper", "product", "tweet", "news", "review", "title",
                                   "article", "headline"])]
    path = tmp_path / "dsp.json"
    path.write_text(json.dumps(rows))
    return path
