"""Re-rankers: a base retriever (default: dense) shortlists `depth` items, a slower relevance scorer that
reads the question and the item together re-orders them. Only the base's candidates are ever returned.

- `rerank-llm`: pointwise relevance from a language model (any `Generator`): a few-shot "does the memory say the
  answer to the question?" prompt per candidate, scored log P(" Yes") - log P(" No") in one batch where the
  backend scores continuations, else by generating the answer (yes 1, no -1, anything else 0, counted);
- `rerank-ce`: a sentence-transformers `CrossEncoder` loaded from a model name or folder (`cross_encoder=`).

A scorer that fails (a typed `PllmError`: a backend refusing, a remote error) leaves the base order, counted
as `rerank_fallbacks`; `counters()` also holds `rerank_unparsed` (generated answers that were neither yes nor no).
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pllm.errors import InputError, PllmError
from pllm.retrieval.base import RETRIEVERS, Doc, Hit, Retriever, RetrieverIndex, merge_counters
from pllm.retrieval.conversation import DEFAULT_BASE, Composite

if TYPE_CHECKING:
    from pllm.models.base import Generator, Prompt

log = logging.getLogger(__name__)


class RelevanceScorer(ABC):
    """Scores (question, item text) pairs together, higher = more relevant; what a re-ranker orders by."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()  # the server searches one index from several io threads

    @abstractmethod
    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """(len(texts),) relevance of each text to `query`; may raise PllmError (the caller falls back)."""

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# Few-shot, not instruction-only: on 36 benchmark questions SmolLM2-135M-Instruct asked by instruction alone
# (chat template or raw) ranked the evidence below small talk for nearly every question; with these four
# examples (none from the benchmark's templates) it keeps most of it in the top 5.
LLM_RELEVANCE_TEMPLATE = (
    "Does the memory say the answer to the question?\n\n"
    "Question: Where do I work?\nMemory: I got a job at the bakery downtown.\nAnswer: Yes\n\n"
    "Question: What is my cat's name?\nMemory: Do you have any pets?\nAnswer: No\n\n"
    "Question: Which sport do I play?\nMemory: I love playing sports with my friends.\nAnswer: No\n\n"
    "Question: Where did I travel last summer?\nMemory: We spent two weeks in Portugal in July.\nAnswer: Yes\n\n"
    "Question: {question}\nMemory: {memory}\nAnswer:"
)


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline in a memory must not end the prompt's "Memory:" line


class LLMRelevanceScorer(RelevanceScorer):
    """log P(" Yes") - log P(" No") after `template` (fields `question`, `memory`), or, for a backend that
    cannot score, the generated answer read as yes (1), no (-1) or neither (0, counted `rerank_unparsed`)."""

    def __init__(self, generator: Generator, *, template: str = LLM_RELEVANCE_TEMPLATE, batch_size: int = 32) -> None:
        super().__init__()
        if "{question}" not in template or "{memory}" not in template:
            raise InputError("the relevance template needs {question} and {memory}", field="template")
        if batch_size < 1:
            raise InputError(f"must be >= 1, got {batch_size!r}", field="batch_size")
        self.generator, self.template, self.batch_size = generator, template, batch_size

    def prompts(self, query: str, texts: Sequence[str]) -> list[Prompt]:
        from pllm.models.base import Prompt

        q = _one_line(query)
        return [Prompt(text=self.template.format(question=q, memory=_one_line(t)), chat=False) for t in texts]

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        prompts = self.prompts(query, texts)
        self.count("rerank_scored", len(prompts))
        if self.generator.supports_scoring:
            logp = self.generator.score(prompts, [" Yes", " No"], batch_size=self.batch_size)  # (N, 2)
            return np.asarray(logp[:, 0] - logp[:, 1], dtype=np.float64)
        answers = self.generator.generate(prompts, max_new_tokens=3, stop=["\n"], batch_size=self.batch_size)
        out = np.zeros(len(prompts), dtype=np.float64)
        for i, g in enumerate(answers):
            word = re.match(r"\W*(\w+)", g.text)
            said = word.group(1).lower() if word else ""
            if said in ("yes", "no"):
                out[i] = 1.0 if said == "yes" else -1.0
            else:
                self.count("rerank_unparsed")
        return out


class PairPredictor(Protocol):
    """What `rerank-ce` needs of a cross-encoder: sentence-transformers' `CrossEncoder.predict` on pairs."""

    def predict(self, sentences: list[tuple[str, str]], batch_size: int = ...) -> np.ndarray: ...


_CROSS_ENCODERS: dict[str, PairPredictor] = {}
_CE_LOCK = threading.Lock()


def load_cross_encoder(model: str) -> PairPredictor:
    """A sentence-transformers CrossEncoder from a model name or folder, loaded once per process; one that
    cannot be loaded (not installed, no such folder, no network for a hub name) is an InputError naming it."""
    with _CE_LOCK:
        if model not in _CROSS_ENCODERS:
            try:
                from sentence_transformers import CrossEncoder

                _CROSS_ENCODERS[model] = CrossEncoder(model, device="cpu", local_files_only=True)
            except (ImportError, OSError, ValueError, RuntimeError) as err:
                raise InputError(f"rerank-ce: cannot load the cross-encoder model {model!r} ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else 'no detail'}); give a local model "
                                 "folder or the name of one in the Hugging Face cache", field="cross_encoder") from err
        return _CROSS_ENCODERS[model]


class CrossEncoderScorer(RelevanceScorer):
    """A cross-encoder's score of each (question, text) pair."""

    def __init__(self, model: PairPredictor, *, batch_size: int = 32) -> None:
        super().__init__()
        self.model, self.batch_size = model, batch_size

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        self.count("rerank_scored", len(texts))
        scores = np.asarray(self.model.predict([(query, t) for t in texts], batch_size=self.batch_size),
                            dtype=np.float64)
        return scores.reshape(len(texts), -1)[:, -1]  # a 2-class head: the "relevant" column


class RerankIndex(RetrieverIndex):
    def __init__(self, base: RetrieverIndex, texts: list[str], scorer: RelevanceScorer, depth: int) -> None:
        self.base, self.texts, self.scorer, self.depth = base, texts, scorer, depth
        self._fallbacks = 0

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = "") -> list[Hit]:
        if k <= 0 or not self.texts:
            return []
        cands = self.base.search(query, max(k, self.depth), query_timestamp=query_timestamp, seed_key=seed_key)
        if not cands:
            return []
        try:
            scores = self.scorer.score(query, [self.texts[h.index] for h in cands])
        except PllmError as err:
            self._fallbacks += 1
            log.warning("re-ranking failed, the base order is kept: %s", err)
            return cands[:k]
        if scores.shape != (len(cands),):
            raise PllmError(f"the relevance scorer gave {scores.shape} scores for {len(cands)} candidates")
        scores = np.where(np.isfinite(scores), scores, -np.inf)  # an unscorable candidate goes last
        order = np.argsort(-scores, kind="stable")[:k]  # ties keep the base's order
        return [Hit(cands[i].index, float(scores[i])) for i in order]

    def counters(self) -> dict[str, int]:
        own = {**self.scorer.counters(), "rerank_fallbacks": self._fallbacks}
        return merge_counters([own, self.base.counters()])


class Reranking(Composite):
    """A composite whose index re-orders the base's top `depth` (at least k) with `scorer()`."""

    def __init__(self, base: str | Retriever | tuple[str, Mapping[str, Any]] = DEFAULT_BASE, *, depth: int = 20,
                 **forwarded: Any) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise InputError(f"{self.name}: the number of candidates to re-rank must be an integer >= 1, got "
                             f"{depth!r}", field="depth")
        super().__init__(base, **forwarded)
        self.depth = depth

    @abstractmethod
    def scorer(self) -> RelevanceScorer:
        """The scorer of one index (its counters are that index's)."""

    def build(self, docs: Sequence[Doc]) -> RerankIndex:
        return RerankIndex(self.base.build(docs), [d.text for d in docs], self.scorer(), self.depth)


class LLMRerankRetriever(Reranking):
    """`rerank-llm`: the base's top `depth` re-ordered by `LLMRelevanceScorer` with `generator`."""

    name: ClassVar[str] = "rerank-llm"
    needs_generator = True

    def __init__(self, base: str | Retriever | tuple[str, Mapping[str, Any]] = DEFAULT_BASE, *,
                 generator: Generator | None = None, depth: int = 20, batch_size: int = 32,
                 template: str = LLM_RELEVANCE_TEMPLATE, **forwarded: Any) -> None:
        if generator is None:
            raise InputError("rerank-llm asks a language model: give generator= (the served or evaluated one)",
                             field="generator")
        super().__init__(base, depth=depth, generator=generator, **forwarded)
        self.generator = generator
        LLMRelevanceScorer(generator, template=template, batch_size=batch_size)  # checks the options now
        self.template, self.batch_size = template, batch_size

    def scorer(self) -> LLMRelevanceScorer:
        return LLMRelevanceScorer(self.generator, template=self.template, batch_size=self.batch_size)


class CrossEncoderRerankRetriever(Reranking):
    """`rerank-ce`: the base's top `depth` re-ordered by a cross-encoder (`cross_encoder`: a model name or folder,
    loaded once per process, or a loaded model with `predict(pairs)`)."""

    name: ClassVar[str] = "rerank-ce"
    takes_cross_encoder = True

    def __init__(self, base: str | Retriever | tuple[str, Mapping[str, Any]] = DEFAULT_BASE, *,
                 cross_encoder: str | PairPredictor | None = None, depth: int = 20, batch_size: int = 32,
                 **forwarded: Any) -> None:
        if cross_encoder is None or cross_encoder == "":
            raise InputError("rerank-ce needs a cross-encoder model: give cross_encoder= (a model folder or name; "
                             "`pllm serve --cross-encoder`)", field="cross_encoder")
        super().__init__(base, depth=depth, **forwarded)
        self.model = load_cross_encoder(cross_encoder) if isinstance(cross_encoder, str) else cross_encoder
        self.batch_size = batch_size

    def scorer(self) -> CrossEncoderScorer:
        return CrossEncoderScorer(self.model, batch_size=self.batch_size)


RETRIEVERS.register("rerank-llm", LLMRerankRetriever)
RETRIEVERS.register("rerank-ce", CrossEncoderRerankRetriever)
