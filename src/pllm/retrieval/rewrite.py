"""Model-based query rewriting (`rewrite`): a language model splits the question into short search queries, the
base retriever (default: dense) ranks the profile for each, and the rankings (the original question's among
them) are fused by RRF (`hybrid.rrf_fuse`), so a question with several parts finds each part's turn.

The model's answer is read as one query per line; an answer with no usable line (empty, only the question
again, or a model error) falls back to the question alone and is counted (`rewrite_fallbacks`), never raised.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pllm.errors import InputError, PllmError
from pllm.retrieval.base import RETRIEVERS, Doc, Hit, Retriever, RetrieverIndex, merge_counters
from pllm.retrieval.conversation import DEFAULT_BASE, Composite
from pllm.retrieval.hybrid import rrf_fuse

if TYPE_CHECKING:
    from pllm.models.base import Generator

log = logging.getLogger(__name__)

REWRITE_TEMPLATE = (
    "Write short search queries that find the facts needed to answer the question, one per line.\n\n"
    "Question: Where did my sister move after she finished college?\n"
    "Queries:\nmy sister finished college\nmy sister moved to a new city\n\n"
    "Question: What breed is the dog I got last spring?\n"
    "Queries:\nI got a dog\nthe dog's breed\n\n"
    "Question: {question}\nQueries:\n"
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


def parse_queries(text: str, question: str, max_queries: int) -> list[str]:
    """The queries of a model's answer: one per line up to the first blank line or next "Question:", bullets
    and numbering removed, duplicates and the question itself dropped; at most `max_queries`."""
    seen = {" ".join(question.lower().split())}
    out: list[str] = []
    for raw in text.strip().splitlines():
        line = _BULLET.sub("", raw).strip().strip('"')
        if not line or line.lower().startswith(("question:", "queries:")):
            break
        key = " ".join(line.lower().split())
        if re.search(r"\w", line) and key not in seen:
            seen.add(key)
            out.append(line)
        if len(out) == max_queries:
            break
    return out


class QueryRewriter:
    """Asks `generator` for a question's sub-queries (greedy), remembering the last `cache_size` questions'
    answers so a repeated question costs no generation; counts rewrites, fallbacks and model errors."""

    def __init__(self, generator: Generator, *, max_queries: int = 3, max_new_tokens: int = 40,
                 template: str = REWRITE_TEMPLATE, cache_size: int = 256) -> None:
        if "{question}" not in template:
            raise InputError("the rewrite template needs {question}", field="template")
        if max_queries < 1:
            raise InputError(f"must be >= 1, got {max_queries!r}", field="max_queries")
        self.generator, self.max_queries, self.max_new_tokens = generator, max_queries, max_new_tokens
        self.template, self.cache_size = template, cache_size
        self._cache: OrderedDict[str, list[str]] = OrderedDict()
        self._counts = {"rewrites": 0, "rewrite_fallbacks": 0, "rewrite_errors": 0}
        self._lock = threading.Lock()

    def rewrite(self, question: str) -> list[str]:
        """Sub-queries of `question` ([] when the model gave none: the caller searches the question alone)."""
        with self._lock:
            if question in self._cache:
                self._cache.move_to_end(question)
                return list(self._cache[question])
        from pllm.models.base import Prompt

        prompt = Prompt(text=self.template.format(question=" ".join(question.split())), chat=False)
        try:
            text = self.generator.generate([prompt], max_new_tokens=self.max_new_tokens, stop=["\n\n"],
                                           batch_size=1)[0].text
            queries = parse_queries(text, question, self.max_queries)
            error = False
        except PllmError as err:  # a backend's typed failure (remote error, refused prompt): search as asked
            log.warning("query rewriting failed, searching the question alone: %s", err)
            queries, error = [], True
        with self._lock:
            self._counts["rewrites"] += 1
            self._counts["rewrite_fallbacks"] += not queries
            self._counts["rewrite_errors"] += error
            self._cache[question] = queries
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return list(queries)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class RewriteIndex(RetrieverIndex):
    def __init__(self, base: RetrieverIndex, n: int, rewriter: QueryRewriter, depth: int | None,
                 rrf_k: float) -> None:
        self.base, self.n, self.rewriter, self.depth, self.rrf_k = base, n, rewriter, depth, rrf_k

    def __len__(self) -> int:
        return self.n

    def search(self, query: str, k: int, *, query_timestamp: float | None = None, seed_key: str = "") -> list[Hit]:
        if k <= 0 or self.n == 0:
            return []
        queries = [query, *self.rewriter.rewrite(query)]
        if len(queries) == 1:
            return self.base.search(query, k, query_timestamp=query_timestamp, seed_key=seed_key)
        depth = self.n if self.depth is None else max(k, self.depth)
        rankings = [self.base.search(q, depth, query_timestamp=query_timestamp, seed_key=seed_key) for q in queries]
        return rrf_fuse(rankings, [1.0] * len(rankings), self.n, k, self.rrf_k)

    def counters(self) -> dict[str, int]:
        return merge_counters([self.rewriter.counters(), self.base.counters()])


class RewriteRetriever(Composite):
    """`rewrite`: the question and up to `max_queries` model-written sub-queries each ranked by the base (to
    `depth` hits, None: the whole profile), fused by RRF with constant `rrf_k`."""

    name: ClassVar[str] = "rewrite"
    needs_generator = True

    def __init__(self, base: str | Retriever | tuple[str, Mapping[str, Any]] = DEFAULT_BASE, *,
                 generator: Generator | None = None, max_queries: int = 3, depth: int | None = None,
                 rrf_k: float = 60.0, template: str = REWRITE_TEMPLATE, **forwarded: Any) -> None:
        if generator is None:
            raise InputError("rewrite asks a language model: give generator= (the served or evaluated one)",
                             field="generator")
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise InputError(f"rewrite: depth must be None or an integer >= 1, got {depth!r}", field="depth")
        super().__init__(base, generator=generator, **forwarded)
        # One rewriter per retriever: the server and benchmarks build one retriever per user, so its cache and
        # counters are that user's.
        self.rewriter = QueryRewriter(generator, max_queries=max_queries, template=template)
        self.depth, self.rrf_k = depth, float(rrf_k)

    def build(self, docs: Sequence[Doc]) -> RewriteIndex:
        return RewriteIndex(self.base.build(docs), len(docs), self.rewriter, self.depth, self.rrf_k)


RETRIEVERS.register("rewrite", RewriteRetriever)
