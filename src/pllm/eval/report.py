"""Method comparison reports: each metric with a 95% bootstrap interval, the paired difference
against "no personalization", counts of unparseable outputs, truncated prompts and empty profiles,
wall time and tokens/s; written as JSON and a markdown table."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pllm.eval.tables import devices_text, method_table
from pllm.io import atomic_write_json, atomic_write_text
from pllm.pipeline import PredictionRecord, is_unparseable
from pllm.stats import Interval, fast_bootstrap
from pllm.tasks.spec import TaskSpec


@dataclass
class MethodResult:
    method: str
    records: list[PredictionRecord]
    seconds: float = 0.0
    kind: str = "llm"  # llm | baseline
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)  # questions computed per device (bench cells)


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
    devices: dict[str, int] = field(default_factory=dict)  # questions computed per device


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
        metrics = {m: fast_bootstrap(m, preds, golds, spec.labels, n_resamples=n_resamples, seed=seed)
                   for m in spec.metrics}
        vs = {}
        if ref is not None and res is not ref:
            ref_preds = [r.prediction for r in ref.records]
            vs = {m: fast_bootstrap(m, preds, golds, spec.labels, n_resamples=n_resamples, seed=seed,
                                    ref_preds=ref_preds) for m in spec.metrics}
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in res.records)
        rows.append(MethodRow(
            method=res.method, kind=res.kind, n=len(res.records), metrics=metrics, vs_none=vs,
            unparseable=sum(is_unparseable(r) for r in res.records),
            truncated=sum(r.truncated for r in res.records),
            empty_profile=sum(r.empty_profile for r in res.records),
            mean_prompt_tokens=sum(r.prompt_tokens for r in res.records) / max(len(res.records), 1),
            seconds=round(res.seconds, 3),
            tokens_per_second=round(tokens / res.seconds, 1) if res.seconds > 0 and tokens else 0.0,
            config=res.config, timings=res.timings, devices=res.devices,
        ))
    return rows


def higher_is_better(metric: str) -> bool:
    from pllm.metrics import METRICS

    return METRICS.get(metric).higher_is_better


@dataclass
class Conclusion:
    """Which LLM method did best on the primary metric, which baseline did best, and the paired
    difference between the two (or against `none` when there is no baseline): the line a reader wants."""

    metric: str
    higher_is_better: bool
    best: str
    best_value: float
    against: str | None = None  # the best baseline, else "none"
    against_value: float | None = None
    against_is_baseline: bool = False
    difference: Interval | None = None  # metric(best) - metric(against), paired 95% interval

    @property
    def text(self) -> str:
        line = f"best LLM method: {self.best} {self.metric} {self.best_value:.3f}"
        if self.against is None or self.difference is None:
            return line
        d = self.difference
        if not d.excludes_zero:
            verdict = "no clear difference"
        elif (d.value > 0) == self.higher_is_better:
            verdict = f"{self.best} better"
        else:
            verdict = "baseline better" if self.against_is_baseline else f"{self.against} better"
        what = "best baseline" if self.against_is_baseline else "reference"
        return (f"{line}; {what}: {self.against} {self.against_value:.3f}; "
                f"difference {d.fmt_signed()} ({verdict})")


def conclude(spec: TaskSpec, results: Sequence[MethodResult], rows: Sequence[MethodRow], *,
             n_resamples: int = 1000, seed: int = 0) -> Conclusion | None:
    """The conclusion of a comparison (None without an LLM method). Best = best primary-metric value."""
    metric = spec.primary_metric
    higher = higher_is_better(metric)

    def best_of(kind: str) -> MethodRow | None:
        cands = [r for r in rows if r.kind == kind]
        return (max if higher else min)(cands, key=lambda r: r.metrics[metric].value) if cands else None

    best = best_of("llm")
    if best is None:
        return None
    against = best_of("baseline")
    if against is None and best.method != "none":
        against = next((r for r in rows if r.method == "none"), None)
    out = Conclusion(metric, higher, best.method, best.metrics[metric].value)
    if against is not None:
        by_name = {r.method: r for r in results}
        a, b = by_name[best.method].records, by_name[against.method].records
        out.against, out.against_value = against.method, against.metrics[metric].value
        out.against_is_baseline = against.kind == "baseline"
        out.difference = fast_bootstrap(metric, [r.prediction for r in a], [r.target for r in a], spec.labels,
                                        n_resamples=n_resamples, seed=seed, ref_preds=[r.prediction for r in b])
    return out


def machine_text(rows: Sequence[MethodRow]) -> str:
    """The CPU count of this machine and the devices that computed the rows (timings mean little without)."""
    devices: dict[str, int] = {}
    for r in rows:
        for d, n in r.devices.items():
            devices[d] = devices.get(d, 0) + n
    where = devices_text(devices, default="no device recorded")
    return f"{os.cpu_count()} CPUs ({platform.platform()}); LLM rows computed on: {where}"


def report_dict(spec: TaskSpec, rows: Sequence[MethodRow], *, meta: dict[str, Any] | None = None,
                conclusion: Conclusion | None = None) -> dict[str, Any]:
    return {"task": spec.name, "primary_metric": spec.primary_metric,
            "higher_is_better": higher_is_better(spec.primary_metric), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "meta": meta or {}, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "conclusion": None if conclusion is None else {**dataclasses.asdict(conclusion), "text": conclusion.text},
            "methods": rows}


def plot_rows(spec: TaskSpec, rows: Sequence[MethodRow], path: Path) -> Path:
    """The primary metric by method with 95% intervals, drawn by the bench's plot (one plotting engine)."""
    from pllm.eval.plots import plot_by_method

    task = {"task": spec.name, "primary_metric": spec.primary_metric, "n_questions": rows[0].n if rows else 0,
            "higher_is_better": {m: higher_is_better(m) for m in spec.metrics},
            "rows": [{"cell": r.method, "kind": r.kind, "method": r.method,
                      "metrics": {m: dataclasses.asdict(iv) for m, iv in r.metrics.items()}} for r in rows]}
    return plot_by_method(task, path)


def write_report(folder: str | Path, spec: TaskSpec, rows: Sequence[MethodRow], *, title: str,
                 meta: dict[str, Any] | None = None, conclusion: Conclusion | None = None) -> tuple[Path, Path]:
    """report.json, report.md and the plot it links (PNG beside it). `meta` keys `model` and `data` are
    shown in the header; the machine is this one (CPU count) and the devices the rows were computed on."""
    folder = Path(folder)
    meta = meta or {}
    json_path = atomic_write_json(folder / "report.json", report_dict(spec, rows, meta=meta, conclusion=conclusion))
    md = [f"# {title}", "", f"Task `{spec.name}`: {spec.description}", "",
          f"- model: {meta.get('model', '—')}",
          f"- data: `{meta.get('data') or meta.get('questions') or '—'}`",
          f"- machine: {machine_text(rows)}",
          f"- questions: {rows[0].n if rows else 0}"
          + (f"; wall time {meta['seconds'] / 60:.1f} min" if meta.get("seconds") else ""),
          *[f"- one-time training: {line}" for line in meta.get("training", [])], ""]
    if conclusion is not None:
        md += ["**" + conclusion.text[0].upper() + conclusion.text[1:] + ".**", ""]
    md += ["Intervals: 95% bootstrap (1,000 resamples); Δ is the paired difference against no "
           "personalization; the conclusion's difference is paired the same way.", "",
           method_table(spec, rows).markdown()]
    if rows:
        png = plot_rows(spec, rows, folder / f"{_slug(spec.primary_metric)}_by_method.png")
        md += [f"![{spec.primary_metric} by method, 95% intervals]({png.name})", ""]
    md_path = atomic_write_text(folder / "report.md", "\n".join(md))
    return json_path, md_path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def write_predictions(folder: str | Path, spec: TaskSpec, method: str, records: Sequence[PredictionRecord], *,
                      outputs: str | Path | None = None) -> Path:
    """Official LaMP predictions shape, plus the per-question detail beside it.

    The `task` field is what LaMP's own scorer expects: the gold file's (`outputs`), else e.g. `LaMP_3`.
    """
    from pllm.tasks.lamp import predictions_task, write_outputs

    safe = method.replace("/", "_").replace("@", "-").replace("+", "_")
    write_outputs(Path(folder) / f"predictions_{safe}.json", predictions_task(spec, outputs),
                  {r.id: (r.prediction if r.prediction is not None else "") for r in records})
    return atomic_write_json(Path(folder) / f"details_{safe}.json", [r.to_json() for r in records])
