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

from pllm.io import atomic_write_json, atomic_write_text
from pllm.pipeline import PredictionRecord, is_unparseable
from pllm.stats import Interval, bootstrap_metric, paired_difference
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
            config=res.config, timings=res.timings, devices=res.devices,
        ))
    return rows


@dataclass
class Table:
    """A results table as text cells: rendered as padded markdown (report.md, and the console when it
    is not a terminal) or drawn by the CLI as a rich table on a terminal, so every output shares one
    set of columns. `optional` lists droppable columns, first dropped first, to fit a width."""

    head: list[str]
    body: list[list[str]]
    optional: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fit(self, width: int | None, *, markdown: bool = True) -> Table:
        """This table without optional columns until it is at most `width` wide, as markdown or as the
        console's borderless table (three characters between columns, none at the edges)."""
        table, dropped = self, []
        for col in self.optional:
            if width is None or table.width(markdown=markdown) <= width:
                break
            keep = [i for i, h in enumerate(table.head) if h != self.head[col]]
            table = Table([table.head[i] for i in keep], [[r[i] for i in keep] for r in table.body])
            dropped.append(self.head[col].rstrip(" ↑↓"))
        table.notes = [*self.notes] + ([f"not shown at {width} columns: {', '.join(dropped)}"] if dropped else [])
        return table

    def widths(self) -> list[int]:
        return [max(len(x) for x in col) for col in zip(self.head, *self.body, strict=True)]

    def width(self, *, markdown: bool = True) -> int:
        return sum(self.widths()) + 3 * len(self.head) + (1 if markdown else -3)

    def markdown(self, *, pad: bool = False) -> str:
        """Markdown; `pad` aligns the columns for reading as plain text (a console or a log)."""
        widths = self.widths() if pad else [0] * len(self.head)

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        rows = [line(self.head), "|" + "|".join("-" * (w + 2) if pad else "---" for w in widths) + "|"]
        return "\n".join(rows + [line(r) for r in self.body]) + "\n"


def method_table(spec: TaskSpec, rows: Sequence[MethodRow], *, compact: bool = False) -> Table:
    """The method comparison table. `compact` (the console's form) writes intervals as `0.995 ±0.13`
    and uses short headers, so a typical run fits 80 columns; the report keeps full intervals."""
    arrows = {m: ("↑" if _higher(m) else "↓") for m in spec.metrics}
    p = spec.primary_metric
    if compact:
        head = ["method"] + [f"{m} {arrows[m]}" for m in spec.metrics] + \
            [f"Δ{p} vs none", "unparsed", "trunc", "tok", "sec"]
    else:
        head = ["method"] + [f"{m} {arrows[m]} [95% CI]" for m in spec.metrics] + \
            [f"Δ{p} vs none [95% CI]", "unparseable", "truncated", "prompt tok", "sec"]
    body = []
    for r in rows:
        d = r.vs_none.get(p)
        cells = [r.method + (" (baseline)" if r.kind == "baseline" and not compact else "")]
        cells += [r.metrics[m].fmt_short() if compact else r.metrics[m].fmt() for m in spec.metrics]
        cells += ["—" if d is None else d.fmt_short(signed=True) if compact else d.fmt_signed(),
                  str(r.unparseable), str(r.truncated),
                  f"{r.mean_prompt_tokens:.0f}" if r.kind == "llm" else "—", f"{r.seconds:.1f}"]
        body.append(cells)
    n = len(head)
    secondary = [1 + i for i, m in enumerate(spec.metrics) if m != p][::-1]
    notes = ["± = half the 95% interval"] if compact else []
    return Table(head, body, optional=[*secondary, n - 2, n - 1, n - 3], notes=notes)


def markdown_table(spec: TaskSpec, rows: Sequence[MethodRow]) -> str:
    return method_table(spec, rows).markdown()


def _higher(metric: str) -> bool:
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
    higher = _higher(metric)

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
        out.difference = paired_difference(metric, [r.prediction for r in a], [r.prediction for r in b],
                                           [r.target for r in a], spec.labels, n_resamples=n_resamples, seed=seed)
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
            "higher_is_better": _higher(spec.primary_metric), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "meta": meta or {}, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "conclusion": None if conclusion is None else {**dataclasses.asdict(conclusion), "text": conclusion.text},
            "methods": rows}


def plot_rows(spec: TaskSpec, rows: Sequence[MethodRow], path: Path) -> Path:
    """The primary metric by method with 95% intervals, drawn by the bench's plot (one plotting engine)."""
    from pllm.eval.plots import plot_by_method

    task = {"task": spec.name, "primary_metric": spec.primary_metric, "n_questions": rows[0].n if rows else 0,
            "higher_is_better": {m: _higher(m) for m in spec.metrics},
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
          + (f"; wall time {meta['seconds'] / 60:.1f} min" if meta.get("seconds") else ""), ""]
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
    return atomic_write_json(Path(folder) / f"details_{safe}.json", records)


# -- bench reports (grids of cells; see pllm.eval.bench) --------------------------------------------
# Metrics that are a function of the mean of per-question scores: bootstrapping them needs each
# question scored once (by the metric itself, on that one question) instead of once per resample,
# which is what makes 1,000-resample intervals of ROUGE affordable. The draws are the same as
# `stats.bootstrap_metric`'s (same generator, seed and order), so the intervals are identical.
_MEAN_OF = {"accuracy": (lambda x: x, lambda m: m), "mae": (lambda x: x, lambda m: m),
            "rmse": (lambda x: x * x, lambda m: m ** 0.5),
            "rouge-1": (lambda x: x, lambda m: m), "rouge-L": (lambda x: x, lambda m: m)}


def _per_question(metric: str, preds: Sequence[str | None], golds: Sequence[str], labels) -> Any:
    import numpy as np

    from pllm.metrics import METRICS

    m = METRICS.get(metric)
    to, _ = _MEAN_OF[metric]
    return np.array([to(m.compute([p], [g], labels)) for p, g in zip(preds, golds)], dtype=np.float64)


def _draws(n: int, n_resamples: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(n_resamples)])  # (R, n), as stats draws them


def fast_bootstrap(metric: str, preds, golds, labels=None, *, n_resamples: int = 1000, seed: int = 0,
                   alpha: float = 0.05, ref_preds=None) -> Interval:
    """`stats.bootstrap_metric` (or, with `ref_preds`, `stats.paired_difference`), computed from
    per-question scores when the metric is a mean of them, and by the generic resampling otherwise."""
    import numpy as np

    if metric not in _MEAN_OF:
        if ref_preds is None:
            return bootstrap_metric(metric, preds, golds, labels, n_resamples=n_resamples, seed=seed, alpha=alpha)
        return paired_difference(metric, preds, ref_preds, golds, labels, n_resamples=n_resamples, seed=seed,
                                 alpha=alpha)
    _, agg = _MEAN_OF[metric]
    idx = _draws(len(golds), n_resamples, seed)
    a = _per_question(metric, preds, golds, labels)
    if ref_preds is None:
        value, samples = agg(a.mean()), agg(a[idx].mean(axis=1))
    else:
        b = _per_question(metric, ref_preds, golds, labels)
        value, samples = agg(a.mean()) - agg(b.mean()), agg(a[idx].mean(axis=1)) - agg(b[idx].mean(axis=1))
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return Interval(float(value), float(lo), float(hi))


def _by_profile_size(spec: TaskSpec, results: Sequence[Any], sizes: Sequence[int], bins: int, *,
                     n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The primary metric per profile-size bin (quantile edges over the questions), per method, and its
    95% bootstrap interval within the bin (`intervals`: bins hold a quarter of the questions, so their
    values are noisier than the table's)."""
    import numpy as np

    from pllm.metrics import METRICS

    sizes_arr = np.array(sizes)
    edges = sorted(set(np.quantile(sizes_arr, np.linspace(0, 1, bins + 1)).round().astype(int).tolist()))
    groups = []
    for i in range(max(len(edges) - 1, 1)):
        lo, hi = (edges[i], edges[i + 1]) if len(edges) > 1 else (edges[0], edges[0])
        last = i == len(edges) - 2 or len(edges) == 1
        mask = (sizes_arr >= lo) & ((sizes_arr <= hi) if last else (sizes_arr < hi))
        if mask.any():
            groups.append((lo, hi, last, np.flatnonzero(mask)))
    metric = METRICS.get(spec.primary_metric)
    out = {"metric": spec.primary_metric,
           "bins": [{"low": lo, "high": hi, "closed": last, "n": int(len(ix))} for lo, hi, last, ix in groups],
           "methods": {}, "intervals": {}}
    for res in results:
        preds = [r.prediction for r in res.records]
        golds = [r.target for r in res.records]
        out["methods"][res.method] = [metric.compute([preds[i] for i in ix], [golds[i] for i in ix], spec.labels)
                                      for _, _, _, ix in groups]
        ivs = [fast_bootstrap(spec.primary_metric, [preds[i] for i in ix], [golds[i] for i in ix], spec.labels,
                              n_resamples=n_resamples, seed=seed) for _, _, _, ix in groups]
        out["intervals"][res.method] = [[iv.low, iv.high] for iv in ivs]
    return out


def judge_summary(lines: Sequence[dict[str, Any]], *, n_resamples: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> dict[str, Any]:
    """Win, tie and loss rates of judged pairs (A = the cell, B = its reference; a win = A preferred in
    both orders) and the score (wins + half the ties), each with a 95% bootstrap interval over questions."""
    import numpy as np

    from pllm.judge.judge import Verdict, Vote, summarize_verdicts

    verdicts = [Verdict(x["winner"], [Vote(**v) for v in x["votes"]], x.get("unparseable", 0), x.get("seconds", 0.0))
                for x in lines]
    s = summarize_verdicts(verdicts)
    outcome = {"win_rate": np.array([v.winner == "A" for v in verdicts], dtype=np.float64),
               "tie_rate": np.array([v.winner == "tie" for v in verdicts], dtype=np.float64),
               "loss_rate": np.array([v.winner == "B" for v in verdicts], dtype=np.float64)}
    outcome["score"] = outcome["win_rate"] + 0.5 * outcome["tie_rate"]
    idx = _draws(len(verdicts), n_resamples, seed)  # (R, n): the same draws as the metrics' intervals
    out: dict[str, Any] = {"n": s.n}
    for name, x in outcome.items():
        lo, hi = np.quantile(x[idx].mean(axis=1), [alpha / 2, 1 - alpha / 2])
        out[name] = Interval(float(x.mean()), float(lo), float(hi))
    out.update(unparseable=s.unparseable, first_position_rate=s.as_dict()["first_position_rate"],
               seconds_per_pair=float(np.mean([v.seconds for v in verdicts])) if verdicts else 0.0)
    return out


def bench_task_report(spec: TaskSpec, done: Sequence[tuple[Any, MethodResult]], questions: Sequence[Any], *,
                      incomplete: Sequence[dict[str, Any]] = (), skipped: Sequence[str] = (),
                      n_resamples: int = 1000, seed: int = 0, profile_bins: int = 4,
                      judged: dict[str, dict[str, Any]] | None = None, judge: dict[str, Any] | None = None,
                      **meta: Any) -> dict[str, Any]:
    """One task's part of a bench report: a row per complete cell, each metric with its 95% bootstrap
    interval, the paired difference against the `none` cell of the same prompt style and model, the
    counts, timings and tokens/s, plus the primary metric by profile size. `judged` ({cell label:
    {against, verdicts}}) adds each judged cell's win/tie/loss rates against its reference cell."""
    golds = [q.target for q in questions]
    rows = []
    by_cell = {cell.label: (cell, res) for cell, res in done}
    for cell, res in done:
        preds = [r.prediction for r in res.records]
        ref = None
        if cell.kind == "llm" and cell.method != "none":
            ref = next((r for c, r in by_cell.values() if c.kind == "llm" and c.method == "none"
                        and c.style == cell.style and c.model == cell.model), None)
        elif cell.kind == "baseline":  # against the first no-personalization cell (default style, first model)
            ref = next((r for c, r in by_cell.values() if c.kind == "llm" and c.method == "none"), None)
        metrics = {m: fast_bootstrap(m, preds, golds, spec.labels, n_resamples=n_resamples, seed=seed)
                   for m in spec.metrics}
        vs = {}
        if ref is not None:
            ref_preds = [r.prediction for r in ref.records]
            vs = {m: fast_bootstrap(m, preds, golds, spec.labels, n_resamples=n_resamples, seed=seed,
                                    ref_preds=ref_preds) for m in spec.metrics}
        gen_tokens = sum(r.completion_tokens for r in res.records)
        all_tokens = sum(r.prompt_tokens + r.completion_tokens for r in res.records)
        rows.append({
            "cell": cell.label, "kind": cell.kind, "method": cell.method, "k": cell.k, "style": cell.style,
            "model": cell.model, "reference": ref.method if ref is not None else None, "n": len(res.records),
            "metrics": metrics, "vs_none": vs,
            "unparseable": sum(is_unparseable(r) for r in res.records),
            "truncated": sum(bool(r.truncated) for r in res.records),
            "empty_profile": sum(bool(r.empty_profile) for r in res.records),
            "mean_prompt_tokens": round(sum(r.prompt_tokens for r in res.records) / max(len(res.records), 1), 1),
            "seconds": round(res.seconds, 3),
            "questions_per_second": round(len(res.records) / res.seconds, 3) if res.seconds > 0 else None,
            "tokens_per_second": round(all_tokens / res.seconds, 1) if res.seconds > 0 and all_tokens else None,
            "generated_tokens_per_second": round(gen_tokens / res.seconds, 2) if res.seconds > 0 and gen_tokens
            else None,
            "timings": res.timings, "config": res.config, "devices": res.devices,
        })
        if judged and cell.label in judged:
            rows[-1]["judge"] = {"against": judged[cell.label]["against"],
                                 **judge_summary(judged[cell.label]["verdicts"], n_resamples=n_resamples, seed=seed)}
    sizes = [len(q.profile) for q in questions]
    return {
        "task": spec.name, "description": spec.description, "primary_metric": spec.primary_metric,
        "metrics": list(spec.metrics), "higher_is_better": {m: _higher(m) for m in spec.metrics},
        "n_questions": len(questions), "profile_size": {"min": min(sizes), "median": sorted(sizes)[len(sizes) // 2],
                                                         "max": max(sizes)} if sizes else {},
        "rows": rows, "incomplete": list(incomplete), "skipped": list(skipped),
        "by_profile_size": _by_profile_size(spec, [r for _, r in done], sizes, profile_bins, n_resamples=n_resamples,
                                            seed=seed) if done else {},
        "n_resamples": n_resamples, **({"judge": judge} if judge is not None else {}), **meta,
    }


def devices_text(devices: dict[str, int] | None, default: str = "—") -> str:
    """Where questions were computed: one device name, or each with its count when mixed."""
    devices = devices or {}
    if len(devices) <= 1:
        return next(iter(devices), default)
    return ", ".join(f"{d} ({n})" for d, n in devices.items())


def _fmt_iv(iv: Any, digits: int = 3) -> str:
    if iv is None:
        return "—"
    if isinstance(iv, dict):
        iv = Interval(iv["value"], iv["low"], iv["high"])
    return iv.fmt(digits)


def bench_markdown(report: dict[str, Any], plots: dict[str, dict[str, str]] | None = None, *,
                   base: str | Path | None = None) -> str:
    """The markdown bench report: per task, a table of every cell and the plots."""
    plots = plots or {}
    cfg = report.get("config", {})
    machine = report.get("machine", {})
    lines = ["# pllm bench report", "",
             f"Rows computed on: {_all_devices(report)}. Models: {', '.join(cfg.get('models', []))}; "
             f"k: {cfg.get('k')}; styles: {cfg.get('styles')}. Report written {report.get('created', '')} on "
             f"{machine.get('platform', '?')} ({machine.get('cpus', '?')} CPUs, torch {machine.get('torch', '?')}, "
             f"cuda: {machine.get('cuda', '?')}).", "",
             f"Every interval is a 95% bootstrap interval ({cfg.get('n_resamples', 1000)} resamples over "
             "questions). Δ is the paired difference against no personalization (`none`) in the same prompt "
             "style and model (baselines: against the first `none`), resampled jointly. Unparseable outputs "
             "are scored as wrong (worst error for numbers, empty text for ROUGE). Wall time and tokens/s are "
             "as measured on the device in the `ran on` column (the machine above is the one that wrote this "
             "report; it may have been shared).", ""]
    for name, t in report.get("tasks", {}).items():
        lines += [f"## {name}", "", f"Task `{t['task']}`: {t['description']}", "",
                  f"Questions: {t['n_questions']} ({t.get('split', 'test')} split of `{t.get('data', '?')}`); "
                  f"profile size min/median/max: {t['profile_size'].get('min')}/"
                  f"{t['profile_size'].get('median')}/{t['profile_size'].get('max')}.", ""]
        judged = [r for r in t["rows"] if r.get("judge")]
        lines.append(bench_table(t).markdown().rstrip("\n"))
        if t.get("judge"):
            lines += _judge_markdown(t["judge"], judged)
        if t.get("incomplete"):
            lines += ["", "Not finished (not in the table): " + "; ".join(
                f"{c['cell']} ({c['done']}/{c['total']})" for c in t["incomplete"]) + "."]
        if t.get("skipped"):
            lines += ["", "Skipped: " + "; ".join(t["skipped"]) + "."]
        llm = [r for r in t["rows"] if r["kind"] == "llm" and r.get("timings")]
        if llm:
            lines += ["", "Where LLM time goes (seconds, summed over questions): " + "; ".join(
                f"{r['cell']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items() if v)
                for r in llm) + "."]
        for kind, path in plots.get(name, {}).items():
            rel = os.path.relpath(path, base) if base is not None else path
            lines += ["", f"![{name}: {kind}]({rel})"]
        lines.append("")
    return "\n".join(lines) + "\n"


def bench_table(t: dict[str, Any], *, compact: bool = False) -> Table:
    """One bench task's table (the same engine as `method_table`): every cell with its metrics, the
    difference against `none`, the judge's win rate when judged, counts, speed and the device."""
    metrics, p = t["metrics"], t["primary_metric"]
    arrows = {m: "↑" if t["higher_is_better"][m] else "↓" for m in metrics}
    judged = any(r.get("judge") for r in t["rows"])

    def iv(x: Any, signed: bool = False) -> str:
        if x is None:
            return "—"
        x = Interval(x["value"], x["low"], x["high"]) if isinstance(x, dict) else x
        return x.fmt_short(signed=signed) if compact else x.fmt_signed() if signed else x.fmt()

    ci = "" if compact else " [95% CI]"
    head = ["cell"] + [f"{m} {arrows[m]}{ci}" for m in metrics] + [f"Δ{p} vs none{ci}"] + \
        ([f"judge win{ci}" if compact else "judge win vs ref [95% CI]"] if judged else []) + \
        (["unparsed", "trunc", "tok", "sec"] if compact else ["unparseable", "truncated", "prompt tok", "wall s"]) + \
        ["q/s", "tok/s", "ran on"]
    body = []
    for r in t["rows"]:
        cells = [r["cell"] + (" (baseline)" if r["kind"] == "baseline" and not compact else "")]
        cells += [iv(r["metrics"][m]) for m in metrics] + [iv(r["vs_none"].get(p), signed=True)]
        if judged:
            cells.append(iv(r["judge"]["win_rate"]) if r.get("judge") else "—")
        cells += [str(r["unparseable"]), str(r["truncated"]),
                  f"{r['mean_prompt_tokens']:.0f}" if r["kind"] == "llm" else "—", f"{r['seconds']:.1f}",
                  f"{r['questions_per_second']:.2f}" if r.get("questions_per_second") else "—",
                  f"{r['tokens_per_second']:.0f}" if r.get("tokens_per_second") else "—",
                  devices_text(r.get("devices"))]
        body.append(cells)
    n = len(head)
    secondary = [1 + i for i, m in enumerate(metrics) if m != p][::-1]
    return Table(head, body, optional=[*secondary, n - 2, n - 3, n - 5, n - 1, n - 4, n - 6],
                 notes=["± = half the 95% interval"] if compact else [])


def _all_devices(report: dict[str, Any]) -> str:
    """Every device that produced a row of the report, with its question count: cells may have run on
    other machines than the one that wrote the report (a GPU lent for a while, then this CPU)."""
    total: dict[str, int] = {}
    for t in report.get("tasks", {}).values():
        for r in t.get("rows", []):
            for d, n in (r.get("devices") or {}).items():
                total[d] = total.get(d, 0) + n
    if not total:
        return "no device recorded"
    return ", ".join(f"{d} ({n} questions)" for d, n in sorted(total.items(), key=lambda x: -x[1]))


def _judge_markdown(meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """The judge section of one task: who judged, how, and each judged cell against its reference."""
    cfg = meta.get("config", {})
    judge = meta["backend"] + (f":{meta['model']}" if meta.get("model") else "")
    lines = ["", f"Personalized LLM-as-judge (`{judge}`, readout {cfg.get('readout')}, {cfg.get('k')} profile items "
             f"by {cfg.get('retriever')}) on the first {meta['questions']} questions: each cell's prediction (A) "
             f"against its reference cell's (B; `{meta['against']}`"
             + (" = the none cell of the same style and model" if meta["against"] == "none" else "")
             + "), asked in both orders. A win is A preferred in both orders, a loss B in both; a split or an "
             "unparseable vote is a tie. Score = wins + half the ties (0.5: no preference).", ""]
    if rows:
        head = ["cell", "vs", "pairs", "win [95% CI]", "tie [95% CI]", "loss [95% CI]", "score [95% CI]",
                "unparseable votes", "first-shown vote rate"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            j = r["judge"]
            lines.append("| " + " | ".join([r["cell"], j["against"], str(j["n"]), _fmt_iv(j["win_rate"]),
                                            _fmt_iv(j["tie_rate"]), _fmt_iv(j["loss_rate"]), _fmt_iv(j["score"]),
                                            str(j["unparseable"]), f"{j['first_position_rate']:.3f}"]) + " |")
    if meta.get("incomplete"):
        lines += ["", "Not judged yet: " + "; ".join(f"{c['cell']} vs {c['against']} ({c['done']}/{c['total']})"
                                                     for c in meta["incomplete"]) + "."]
    return lines


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed from bench report `a` to `b`: per task and cell, each metric's value before and
    after, and whether the new value lies outside the old 95% interval."""
    out = []
    for task in sorted(set(a.get("tasks", {})) | set(b.get("tasks", {}))):
        ta, tb = a.get("tasks", {}).get(task), b.get("tasks", {}).get(task)
        if ta is None or tb is None:
            out.append({"task": task, "cell": "*", "change": "only in " + ("B" if ta is None else "A")})
            continue
        rows_a = {r["cell"]: r for r in ta["rows"]}
        rows_b = {r["cell"]: r for r in tb["rows"]}
        for cell in list(rows_a) + [c for c in rows_b if c not in rows_a]:
            ra, rb = rows_a.get(cell), rows_b.get(cell)
            if ra is None or rb is None:
                out.append({"task": task, "cell": cell, "change": "only in " + ("B" if ra is None else "A")})
                continue
            for m in tb["metrics"]:
                ia, ib = ra["metrics"].get(m), rb["metrics"].get(m)
                if ia is None or ib is None:
                    continue
                delta = ib["value"] - ia["value"]
                outside = not ia["low"] <= ib["value"] <= ia["high"]
                better = (delta > 0) == tb["higher_is_better"][m] if delta else None
                out.append({"task": task, "cell": cell, "metric": m, "a": ia["value"], "b": ib["value"],
                            "delta": delta, "outside_a_ci": outside,
                            "change": ("better" if better else "worse") if outside and delta else "same"})
    return out
