"""Method comparison reports: each metric with a 95% bootstrap interval, the paired difference
against "no personalization", counts of unparseable outputs, truncated prompts and empty profiles,
wall time and tokens/s; written as JSON and a markdown table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pllm.eval.stats import Interval, bootstrap_metric, paired_difference
from pllm.io import atomic_write_json, atomic_write_text
from pllm.pipeline import PredictionRecord, is_unparseable
from pllm.tasks.spec import TaskSpec


@dataclass
class MethodResult:
    method: str
    records: list[PredictionRecord]
    seconds: float = 0.0
    kind: str = "llm"  # llm | baseline
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodRow:
    method: str
    kind: str
    n: int
    metrics: dict[str, Interval]
    vs_none: dict[str, Interval] = field(default_factory=dict)
    unparseable: int = 0
    truncated: int = 0
    empty_profile: int = 0
    mean_prompt_tokens: float = 0.0
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def summarize(spec: TaskSpec, results: Sequence[MethodResult], *, reference: str = "none",
              n_resamples: int = 1000, seed: int = 0) -> list[MethodRow]:
    """One row per method; methods must be scored on the same questions (checked)."""
    if not results:
        return []
    ids = [r.id for r in results[0].records]
    for res in results:
        if [r.id for r in res.records] != ids:
            raise ValueError(f"method {res.method!r} was scored on different questions than {results[0].method!r}")
    golds = [r.target for r in results[0].records]
    if any(g is None for g in golds):
        raise ValueError("some questions have no gold output; pass --outputs")
    ref = next((r for r in results if r.method == reference), None)
    rows = []
    for res in results:
        preds = [r.prediction for r in res.records]
        metrics = {m: bootstrap_metric(m, preds, golds, spec.labels, n_resamples=n_resamples, seed=seed)
                   for m in spec.metrics}
        vs = {}
        if ref is not None and res is not ref:
            ref_preds = [r.prediction for r in ref.records]
            vs = {m: paired_difference(m, preds, ref_preds, golds, spec.labels, n_resamples=n_resamples, seed=seed)
                  for m in spec.metrics}
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in res.records)
        rows.append(MethodRow(
            method=res.method, kind=res.kind, n=len(res.records), metrics=metrics, vs_none=vs,
            unparseable=sum(is_unparseable(r) for r in res.records),
            truncated=sum(r.truncated for r in res.records),
            empty_profile=sum(r.empty_profile for r in res.records),
            mean_prompt_tokens=sum(r.prompt_tokens for r in res.records) / max(len(res.records), 1),
            seconds=round(res.seconds, 3),
            tokens_per_second=round(tokens / res.seconds, 1) if res.seconds > 0 and tokens else 0.0,
            config=res.config, timings=res.timings,
        ))
    return rows


def markdown_table(spec: TaskSpec, rows: Sequence[MethodRow]) -> str:
    arrows = {m: ("↑" if _higher(m) else "↓") for m in spec.metrics}
    head = ["method"] + [f"{m} {arrows[m]} [95% CI]" for m in spec.metrics] + \
        [f"Δ{spec.primary_metric} vs none [95% CI]", "unparseable", "truncated", "prompt tok", "sec"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.method] + [r.metrics[m].fmt() for m in spec.metrics]
        d = r.vs_none.get(spec.primary_metric)
        cells += [d.fmt() if d else "—", str(r.unparseable), str(r.truncated),
                  f"{r.mean_prompt_tokens:.0f}" if r.kind == "llm" else "—", f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _higher(metric: str) -> bool:
    from pllm.eval.metrics import METRICS

    return METRICS.get(metric).higher_is_better


def report_dict(spec: TaskSpec, rows: Sequence[MethodRow], *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"task": spec.name, "primary_metric": spec.primary_metric,
            "higher_is_better": _higher(spec.primary_metric), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "meta": meta or {}, "methods": rows}


def write_report(folder: str | Path, spec: TaskSpec, rows: Sequence[MethodRow], *, title: str,
                 meta: dict[str, Any] | None = None) -> tuple[Path, Path]:
    folder = Path(folder)
    json_path = atomic_write_json(folder / "report.json", report_dict(spec, rows, meta=meta))
    md = [f"# {title}", "", f"Task `{spec.name}`: {spec.description}", "",
          f"Questions: {rows[0].n if rows else 0}. Intervals: 95% bootstrap (1,000 resamples); "
          "Δ is the paired difference against no personalization.", "", markdown_table(spec, rows)]
    md_path = atomic_write_text(folder / "report.md", "\n".join(md))
    return json_path, md_path


def write_predictions(folder: str | Path, spec: TaskSpec, method: str, records: Sequence[PredictionRecord]) -> Path:
    """Official LaMP predictions shape, plus the per-question detail beside it."""
    from pllm.tasks.lamp import write_outputs

    safe = method.replace("/", "_").replace("@", "-").replace("+", "_")
    write_outputs(Path(folder) / f"predictions_{safe}.json", spec.name,
                  {r.id: (r.prediction if r.prediction is not None else "") for r in records})
    return atomic_write_json(Path(folder) / f"details_{safe}.json", records)
