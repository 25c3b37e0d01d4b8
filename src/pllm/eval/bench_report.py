"""The report of a bench grid: per task, a row per complete cell with its metrics' 95% bootstrap
intervals, the paired difference against the `none` cell, counts, speed and the device; the primary
metric by profile size; the judge's win rates; as JSON and markdown. And what changed between two
reports (`pllm bench --compare`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pllm.eval.report import MethodResult, higher_is_better
from pllm.eval.tables import Table, bench_table
from pllm.pipeline import is_unparseable
from pllm.stats import Interval, draws, fast_bootstrap
from pllm.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from pllm.eval.runner import Cell


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
    methods: dict[str, list[float]] = {}
    intervals: dict[str, list[list[float]]] = {}
    for res in results:
        preds = [r.prediction for r in res.records]
        golds = [r.target for r in res.records]
        methods[res.method] = [metric.compute([preds[i] for i in ix], [golds[i] for i in ix], spec.labels)
                                      for _, _, _, ix in groups]
        ivs = [fast_bootstrap(spec.primary_metric, [preds[i] for i in ix], [golds[i] for i in ix], spec.labels,
                              n_resamples=n_resamples, seed=seed) for _, _, _, ix in groups]
        intervals[res.method] = [[iv.low, iv.high] for iv in ivs]
    return {"metric": spec.primary_metric,
            "bins": [{"low": lo, "high": hi, "closed": last, "n": int(len(ix))} for lo, hi, last, ix in groups],
            "methods": methods, "intervals": intervals}


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
    idx = draws(len(verdicts), n_resamples, seed)  # (R, n): the same draws as the metrics' intervals
    out: dict[str, Any] = {"n": s.n}
    for name, x in outcome.items():
        lo, hi = np.quantile(x[idx].mean(axis=1), [alpha / 2, 1 - alpha / 2])
        out[name] = Interval(float(x.mean()), float(lo), float(hi))
    out.update(unparseable=s.unparseable, first_position_rate=s.as_dict()["first_position_rate"],
               seconds_per_pair=float(np.mean([v.seconds for v in verdicts])) if verdicts else 0.0)
    return out


def bench_task_report(spec: TaskSpec, done: Sequence[tuple[Cell, MethodResult]], questions: Sequence[Any], *,
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
        "metrics": list(spec.metrics), "higher_is_better": {m: higher_is_better(m) for m in spec.metrics},
        "n_questions": len(questions), "profile_size": {"min": min(sizes), "median": sorted(sizes)[len(sizes) // 2],
                                                         "max": max(sizes)} if sizes else {},
        "rows": rows, "incomplete": list(incomplete), "skipped": list(skipped),
        "by_profile_size": _by_profile_size(spec, [r for _, r in done], sizes, profile_bins, n_resamples=n_resamples,
                                            seed=seed) if done else {},
        "n_resamples": n_resamples, **({"judge": judge} if judge is not None else {}), **meta,
    }


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
        body = [[r["cell"], j["against"], str(j["n"]), _fmt_iv(j["win_rate"]), _fmt_iv(j["tie_rate"]),
                 _fmt_iv(j["loss_rate"]), _fmt_iv(j["score"]), str(j["unparseable"]), f"{j['first_position_rate']:.3f}"]
                for r in rows for j in [r["judge"]]]
        lines.append(Table(head, body).markdown().rstrip("\n"))
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
