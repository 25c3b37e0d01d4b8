"""Score rankers on the same `movielens-rec` questions and report ranking metrics with bootstrap
intervals, a paired difference against popularity, and scoring time per user.

Per-user results are appended to a JSONL checkpoint per ranker, so a long LLM run can be resumed (and a
report written from whatever is finished, with the count of users stated)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pllm.eval.tables import devices_text
from pllm.io import atomic_write_json, atomic_write_text
from pllm.models.base import device_label
from pllm.rec.data import target_index
from pllm.rec.metrics import bootstrap_ranking, paired_ranking_difference, rank_of_target
from pllm.rec.rankers import Ranker
from pllm.stats import Interval
from pllm.types import Question

DEFAULT_METRICS = ("recall@1", "recall@5", "ndcg@5", "mrr")
Progress = Callable[[str, int, int], None]


@dataclass
class RankerResult:
    ranker: str
    kind: str
    ranks: dict[str, int]  # question id -> 1-based rank of the target
    seconds: dict[str, float]  # question id -> scoring seconds
    config: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _load_checkpoint(path: Path | None) -> dict[str, dict[str, Any]]:
    """Finished questions from `path`, its unsharded base and every shard (`<stem>.<shard>.jsonl`, written by
    parallel runs): a shard run resumes past what an unsharded run or another shard already scored."""
    done: dict[str, dict[str, Any]] = {}
    if path is None:
        return done
    base = path.with_name(re.sub(r"\.s\d+$", "", path.stem) + path.suffix)
    for p in dict.fromkeys([base, path, *sorted(base.parent.glob(f"{base.stem}.*{base.suffix}"))]):
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash mid-write: score it again
                    continue
                done[rec["id"]] = rec
    return done


def recorded_scores(checkpoint: str | Path) -> dict[str, np.ndarray]:
    """Question id -> the candidate scores a `run_ranker` checkpoint (and its shards) recorded."""
    return {qid: np.asarray(rec["scores"], dtype=np.float64)
            for qid, rec in _load_checkpoint(Path(checkpoint)).items() if "scores" in rec}


def run_ranker(ranker: Ranker, questions: Sequence[Question], *, label: str | None = None,
               checkpoint: str | Path | None = None, progress: Progress | None = None,
               fit_seconds: float = 0.0, score_missing: bool = True) -> RankerResult:
    """Score every question (one `ranker.score` call per user question), resuming from `checkpoint`;
    with score_missing=False only what the checkpoint holds is read back (assembling a report)."""
    name = label or ranker.name
    ckpt = Path(checkpoint) if checkpoint else None
    done = _load_checkpoint(ckpt)
    if ckpt:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    ranks: dict[str, int] = {}
    secs: dict[str, float] = {}
    devices: Counter[str] = Counter()
    device = device_label(getattr(ranker, "generator", None))
    fh = ckpt.open("a", encoding="utf-8") if ckpt else None
    try:
        for i, q in enumerate(questions):
            if q.id in done:
                ranks[q.id], secs[q.id] = int(done[q.id]["rank"]), float(done[q.id]["seconds"])
                devices.update([done[q.id]["device"]] if done[q.id].get("device") else [])
            elif not score_missing:
                continue
            else:
                t0 = time.perf_counter()
                scores = ranker.score(q)
                dt = time.perf_counter() - t0
                ranks[q.id], secs[q.id] = rank_of_target(scores, target_index(q)), dt
                devices.update([device] if device else [])
                if fh:
                    fh.write(json.dumps({"id": q.id, "user_id": q.user_id, "rank": ranks[q.id], "seconds": dt,
                                         "scores": [round(float(s), 5) for s in scores],
                                         **({"device": device} if device else {})}) + "\n")
                    fh.flush()
            if progress:
                progress(name, i + 1, len(questions))
    finally:
        if fh:
            fh.close()
    extra = {k: getattr(ranker, k) for k in ("prompt_tokens", "unparseable") if hasattr(ranker, k)}
    if devices:  # where the LLM scored: timings are only comparable on the same device
        extra["devices"] = dict(devices.most_common())
    return RankerResult(ranker=name, kind=ranker.kind, ranks=ranks, seconds=secs, config=ranker.describe(),
                        fit_seconds=fit_seconds, extra=extra)


@dataclass
class RankerRow:
    ranker: str
    kind: str
    n: int
    metrics: dict[str, Interval]
    vs_reference: dict[str, Interval]
    seconds_per_user: float
    seconds_per_user_p90: float
    fit_seconds: float
    config: dict[str, Any]
    extra: dict[str, Any]


def summarize(results: Sequence[RankerResult], *, metrics: Sequence[str] = DEFAULT_METRICS,
              reference: str = "popularity", n_resamples: int = 1000, seed: int = 0) -> list[RankerRow]:
    """One row per ranker over the questions it finished (`n`); the difference against `reference` is
    paired on the questions both finished, so a partial LLM run is still compared like with like."""
    ref = next((r for r in results if r.ranker == reference), None)
    rows = []
    for res in results:
        ids = sorted(res.ranks)
        ranks = [res.ranks[i] for i in ids]
        secs = np.array([res.seconds[i] for i in ids]) if ids else np.zeros(1)
        vs = {}
        shared = [i for i in ids if ref is not None and i in ref.ranks]
        if ref is not None and res is not ref and shared:
            mine, theirs = [res.ranks[i] for i in shared], [ref.ranks[i] for i in shared]
            vs = {m: paired_ranking_difference(m, mine, theirs, n_resamples=n_resamples, seed=seed) for m in metrics}
        rows.append(RankerRow(
            ranker=res.ranker, kind=res.kind, n=len(ids),
            metrics={m: bootstrap_ranking(m, ranks, n_resamples=n_resamples, seed=seed) for m in metrics}
            if ids else {},
            vs_reference=vs, seconds_per_user=float(secs.mean()), seconds_per_user_p90=float(np.quantile(secs, 0.9)),
            fit_seconds=round(res.fit_seconds, 3), config=res.config, extra=res.extra))
    return rows


def markdown_table(rows: Sequence[RankerRow], *, metrics: Sequence[str] = DEFAULT_METRICS,
                   reference: str = "popularity") -> str:
    head = ["ranker", "users"] + [f"{m} [95% CI]" for m in metrics] + \
        [f"ΔNDCG@5 vs {reference} [95% CI]", "s/user (mean)", "s/user (p90)", "fit s", "ran on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r.vs_reference.get("ndcg@5")
        if not r.metrics:
            continue
        cells = [r.ranker, str(r.n)] + [r.metrics[m].fmt() for m in metrics] + [
            d.fmt() if d else "—", f"{r.seconds_per_user:.4f}", f"{r.seconds_per_user_p90:.4f}", f"{r.fit_seconds:.2f}",
            devices_text(r.extra.get("devices"), default="cpu")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(folder: str | Path, rows: Sequence[RankerRow], *, meta: dict[str, Any], extra_md: str = "",
                 title: str = "Recommendation on MovieLens-100k") -> tuple[Path, Path]:
    folder = Path(folder)
    json_path = atomic_write_json(folder / "report.json", {
        "task": "movielens-rec", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "meta": meta, "rankers": rows})
    md = [f"# {title}", "", markdown_table(rows), extra_md]
    md_path = atomic_write_text(folder / "report.md", "\n".join(md))
    return json_path, md_path
