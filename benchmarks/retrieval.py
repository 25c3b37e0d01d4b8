"""Per-query retrieval latency of bm25 and dense top-k over 100-, 1,000- and 10,000-item profiles.

Indexes are built once per profile (build time is reported separately: dense "cold" encodes every item,
"warm" reads them back from the embedding cache), then each query is timed on its own. Dense is timed
twice: end to end (query encoding with the embedder + ranking; the query LRU is off so every query is
encoded) and ranking only (`search_vector` with the query already embedded). As a reference, bm25s's
generic `tokenize()` + `retrieve()` path is timed on the same index.

Item texts are synthetic but English-like (topic words, fillers and function words drawn with a fixed
seed), so both BM25 vocabularies and MiniLM inputs look like short reviews.

    python benchmarks/retrieval.py            # full run, real MiniLM embedder
    python benchmarks/retrieval.py --quick    # 100 and 1,000 items, fewer queries
    python benchmarks/retrieval.py --fake-embedder   # hashed bag-of-words instead of MiniLM
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pllm.retrieval import (  # noqa: E402
    BM25Index,
    DenseIndex,
    DenseRetriever,
    Doc,
    Embedder,
    MemoryEmbeddingCache,
    load_embedder,
    make_retriever,
)

TOPICS = {
    "movies": "film movie director actor actress plot scene sequel trailer cinema screenplay thriller "
              "comedy drama soundtrack character villain hero ending astronaut space galaxy",
    "food": "recipe pasta tomato garlic basil oven bake flavor sauce spicy dessert chocolate bread soup "
            "kitchen restaurant chef dinner breakfast salad",
    "travel": "hotel flight beach mountain museum city island airport luggage tour guide hiking train "
              "passport village coast sunset ferry hostel",
    "tech": "laptop battery screen keyboard software update camera phone charger processor memory "
            "wireless bluetooth headphones speaker app bug",
    "books": "novel author chapter story poetry biography library fiction mystery romance history "
             "series translation paperback narrator prose",
    "sports": "football match team coach goal season player league training marathon tennis stadium "
              "score injury championship referee",
    "home": "garden sofa lamp kitchen vacuum cleaner mattress pillow curtains paint drill shelf "
            "plants tomatoes furniture",
    "music": "album song guitar concert band lyrics drummer vinyl piano melody chorus singer tour "
             "playlist jazz rock",
}
FILLERS = ("really great quite terrible amazing decent poor excellent surprisingly honestly overall "
           "absolutely slightly cheap expensive worth recommend love hate enjoyed disappointed bought "
           "tried returned again first last new old").split()
FUNCTION = "the a an and but of to in on for with it this that was is very my we".split()


def synthetic_texts(n: int, seed: int, min_words: int = 12, max_words: int = 40) -> list[str]:
    """Review-like texts: each picks a main topic, mixes in a second one, fillers and function words."""
    rng = random.Random(seed)
    topics = [t.split() for t in TOPICS.values()]
    out = []
    for _ in range(n):
        main, other = rng.sample(topics, 2)
        words = []
        for _ in range(rng.randint(min_words, max_words)):
            r = rng.random()
            pool = main if r < 0.4 else other if r < 0.5 else FILLERS if r < 0.7 else FUNCTION
            words.append(rng.choice(pool))
        out.append(" ".join(words).capitalize() + ".")
    return out


class HashedBowEmbedder(Embedder):
    """Cheap deterministic stand-in for MiniLM (hashed bag of words) for `--fake-embedder` runs."""

    name = "fake-hashed-bow-384"
    dim = 384

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(tok.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


def _latency(fn: Callable[[Any], object], inputs: Sequence[Any]) -> dict[str, float]:
    """p50/p99/mean in milliseconds of `fn` per input, after one untimed warm-up call."""
    fn(inputs[0])
    times = []
    for x in inputs:
        t0 = time.perf_counter_ns()
        fn(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    arr = np.asarray(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean()), "n_queries": len(times)}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000


def run(sizes: Sequence[int], n_queries: int, k: int, embedder: Embedder) -> dict[str, Any]:
    import bm25s

    queries = synthetic_texts(n_queries, seed=2, min_words=4, max_words=12)
    query_vecs = embedder.encode(queries)
    results: dict[str, Any] = {}
    for n in sizes:
        docs = [Doc(t) for t in synthetic_texts(n, seed=1000 + n)]
        row: dict[str, Any] = {}

        bm25_index, ms = _timed(lambda docs=docs: make_retriever("bm25").build(docs))
        assert isinstance(bm25_index, BM25Index)
        row["bm25"] = {"build_ms": ms, **_latency(lambda q, ix=bm25_index: ix.search(q, k), queries)}
        model = bm25_index._model  # same bm25s index, through the library's generic query path
        row["bm25s_retrieve"] = _latency(
            lambda q, m=model: m.retrieve(bm25s.tokenize([q], show_progress=False, return_ids=False), k=k,
                                          show_progress=False, n_threads=0),
            queries,
        )

        cache = MemoryEmbeddingCache()
        retriever = DenseRetriever(embedder, cache=cache, query_cache_size=0)
        _, cold_ms = _timed(lambda r=retriever, docs=docs: r.build(docs))
        dense_index, warm_ms = _timed(lambda r=retriever, docs=docs: r.build(docs))
        assert isinstance(dense_index, DenseIndex)
        row["dense"] = {"build_cold_ms": cold_ms, "build_warm_ms": warm_ms,
                        **_latency(lambda q, ix=dense_index: ix.search(q, k), queries)}
        row["dense_rank_only"] = _latency(lambda v, ix=dense_index: ix.search_vector(v, k), list(query_vecs))
        results[str(n)] = row
    return results


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'items':>7} {'method':<16} {'p50 ms':>9} {'p99 ms':>9} {'build ms':>22}",
             "-" * 67]
    for n, row in results.items():
        for method, r in row.items():
            if "build_ms" in r:
                build = f"{r['build_ms']:.1f}"
            elif "build_cold_ms" in r:
                build = f"cold {r['build_cold_ms']:.0f} / warm {r['build_warm_ms']:.1f}"
            else:
                build = "-"
            lines.append(f"{n:>7} {method:<16} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {build:>22}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 and 1,000 items, 50 queries")
    p.add_argument("--fake-embedder", action="store_true", help="hashed bag-of-words instead of MiniLM")
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    p.add_argument("--queries", type=int, default=None)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = args.sizes or ([100, 1000] if args.quick else [100, 1000, 10000])
    n_queries = args.queries or (50 if args.quick else 200)

    embedder, load_ms = _timed(lambda: HashedBowEmbedder() if args.fake_embedder else load_embedder("minilm"))
    results = run(sizes, n_queries, args.k, embedder)
    report = {
        "benchmark": "retrieval",
        "k": args.k,
        "embedder": embedder.name,
        "embedder_device": getattr(embedder, "device", "cpu"),
        "embedder_load_ms": load_ms,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    print()
    print(_table(results))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
