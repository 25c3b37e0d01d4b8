"""Test helpers shared across test folders (a uniquely named module: `conftest` names clash across folders).

Fakes here are registered through the real extension points (GENERATORS, EMBEDDERS) by fixtures in
`tests/conftest.py`, never patched into the code under test."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pllm.models.base import Generation, Generator, Prompt
from pllm.retrieval.embedders import Embedder

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class BowEmbedder(Embedder):
    """Hashed bag of words (sha1 buckets): deterministic, offline, and counts what it encodes."""

    def __init__(self, dim: int = 64) -> None:
        self.name, self.dim = f"test-bow-{dim}", dim
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.sha1(tok.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        n[n == 0] = 1
        return out / n


class EchoGenerator(Generator):
    """A fake backend: generates a fixed answer, scores a candidate by whether it appears in the prompt
    (so retrieved demonstrations visibly change label scores), and counts calls."""

    name = "test-echo"
    supports_scoring = True

    def __init__(self, model: str | None = None, answer: str = "3") -> None:
        self.model_id = model or "echo"
        self.answer = answer
        self.generate_calls = 0
        self.prompts: list[Prompt] = []

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
        self.generate_calls += 1
        self.prompts.extend(prompts)
        return [Generation(text=self.answer, prompt_tokens=self.count_tokens(p.text), completion_tokens=1)
                for p in prompts]

    def score(self, prompts, continuations, *, batch_size=8, normalize=False):
        from pllm.models.base import normalize_continuations

        self.prompts.extend(prompts)
        conts = normalize_continuations(len(prompts), continuations)
        return np.array([[float(p.text.count(c.strip())) for c in cs] for p, cs in zip(prompts, conts)])


def lamp3_records() -> list[dict]:
    reviews = [
        ("u1", [("r1", "great phone, love the battery", "5"), ("r2", "terrible screen, broke fast", "1"),
                ("r3", "good value for money", "4")], "q1", "love this great battery life", "5"),
        ("u1", [("r1", "great phone, love the battery", "5"), ("r4", "okay but slow", "3")], "q2",
         "slow and okay", "3"),
        ("u2", [("s1", "awful, broke in a day", "1"), ("s2", "bad bad bad", "2")], "q3", "awful thing broke", "1"),
    ]
    out = []
    for user, items, qid, text, _ in reviews:
        out.append({
            "id": qid, "user_id": user,
            "input": "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
                     f"or 5 without further explanation. review: {text}",
            "profile": [{"id": i, "text": t, "score": s} for i, t, s in items],
        })
    return out


def lamp3_outputs() -> dict:
    return {"task": "LaMP-3", "golds": [{"id": "q1", "output": "5"}, {"id": "q2", "output": "3"},
                                         {"id": "q3", "output": "1"}]}
