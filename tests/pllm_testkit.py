"""Test helpers shared across test folders (a uniquely named module: `conftest` names clash across folders).

Fakes here are registered through the real extension points (GENERATORS, EMBEDDERS) by fixtures in
`tests/conftest.py`, never patched into the code under test."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pllm.models.base import Generation, Generator, Prompt
from pllm.retrieval.embedders import Embedder
from pllm.types import Question

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


def write_recbole_movielens(folder: Path, genres: Sequence[str], ratings: Iterable[tuple[int, int, int, int]], *,
                            title: str = "Movie") -> Path:
    """A small MovieLens-100k in RecBole's atomic format (the layout of ../shared/data): movie m (from 1) is
    "{title} m" from 1980 + m % 20 with `genres[m - 1]` (space-separated); `ratings` are (user, movie, rating,
    timestamp) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{m}\t{title} {m}\t{1980 + m % 20}\t{g}" for m, g in enumerate(genres, start=1)]
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{m}\t{r}\t{ts}" for u, m, r, ts in ratings]
    (folder / "ml-100k.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    (folder / "ml-100k.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    return folder


def folder_digest(folder: Path) -> str:
    """sha256 over a folder's file names and bytes: equal builds give equal digests."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def read_split(folder: Path, split: str, spec: Any = None) -> list[Question]:
    """One split of a built task folder: its questions with their gold outputs as targets."""
    from pllm.tasks.lamp import read_questions  # lazily: the server plugin imports this module

    return read_questions(folder / f"{split}_questions.json", spec=spec, outputs=folder / f"{split}_outputs.json")


def random_lora(base: Any, seed: int, *, r: int = 4, alpha: float = 8) -> Any:
    """A peft LoRA model (q_proj, v_proj; "default" adapter) over a copy of `base.model` with random, non-zero
    A and B: saved like a trained adapter, fast and distinct per seed."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM")
    model = get_peft_model(copy.deepcopy(base.model), cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _weekend_chat(c: int) -> tuple[str, str, list[str]]:
    turns = [f"User 1: Hello there, what do you like doing on weekends {c}?",
             f"User 2: I really like playing chess in the park number {c}.",
             "User 1: I mostly go fishing with my old dad on the lake.",
             f"User 2: Fishing sounds calm, I should try it some weekend {c}.",
             "User 1: You should, it is the best way to relax for me.",
             "User 2: Thanks, I will think about it and tell you later."]
    return f"I fish.\nI have a dad.\nI am {c}.", f"I play chess.\nI live {c}.\nI like parks.", turns


def write_persona_csv(path: Path, n: int = 8,
                      conversation: Callable[[int], tuple[str, str, list[str]]] = _weekend_chat) -> Path:
    """A tiny Synthetic-Persona-Chat CSV: n conversations, `conversation(c)` giving each one's two persona
    texts and its turns (default: 6 turns, the persona-chat-reply builder's input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user 1 personas", "user 2 personas", "Best Generated Conversation"])
        for c in range(n):
            first, second, turns = conversation(c)
            w.writerow([first, second, "\n".join(turns)])
    return path


POSTGRES_ENV = "PLLM_TEST_POSTGRES"  # postgresql://... of a database the tests may create schemas in
POSTGRES_REQUIRED_ENV = "PLLM_TEST_POSTGRES_REQUIRED"  # 1: a missing or unreachable server fails, not skips


def postgres_schema_url(url: str, schema: str) -> str:
    """`url` with every connection's search_path set to `schema` (a fresh schema per test: isolation
    without creating a database each time)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
