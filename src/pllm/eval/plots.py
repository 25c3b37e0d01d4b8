"""PNG plots of a bench report (matplotlib, headless): the primary metric by method with 95% intervals,
against k, and against profile size. Plots are drawn from the report JSON alone, so they can be redrawn
without rerunning anything."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def _pyplot():  # noqa: ANN202 - matplotlib's module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _iv(row: dict[str, Any], metric: str) -> tuple[float, float, float]:
    iv = row["metrics"][metric]
    return iv["value"], iv["low"], iv["high"]


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Write the finished figure to `path` (folders created) and free it: reports draw many plots."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_by_method(task: dict[str, Any], path: Path) -> Path:
    """Horizontal bars: the primary metric of every cell with its 95% bootstrap interval."""
    plt = _pyplot()
    metric = task["primary_metric"]
    rows = task["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    vals = [_iv(r, metric) for r in rows]
    colors = ["tab:blue" if r["kind"] == "llm" else "tab:gray" for r in rows]
    ax.barh(ys, [v for v, _, _ in vals], color=colors, alpha=0.8,
            xerr=[[v - lo for v, lo, _ in vals], [hi - v for v, _, hi in vals]], capsize=3)
    ax.set_yticks(ys, [r["cell"] + (" (baseline)" if r["kind"] == "baseline" else "") for r in rows], fontsize=8)
    arrow = "higher is better" if task["higher_is_better"][metric] else "lower is better"
    ax.set_xlabel(f"{metric} ({arrow}); bars: 95% bootstrap CI")
    ax.set_title(f"{task['task']}: {metric} by method (n={task['n_questions']})", fontsize=10)
    ref = next((r for r in rows if r["kind"] == "llm" and r["method"] == "none"), None)
    if ref is not None:
        ax.axvline(_iv(ref, metric)[0], color="tab:red", linestyle="--", linewidth=1, label="none")
        ax.legend(fontsize=8, loc="lower right")
    return _save(plt, fig, path)


def plot_vs_k(task: dict[str, Any], path: Path) -> Path | None:
    """One line per retrieval method (and style/model) across k, with 95% intervals; `none` as k=0."""
    rows = [r for r in task["rows"] if r["kind"] == "llm"]
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["method"] == "none":
            continue
        key = r["method"] + (f" [{r['style']}]" if r.get("style") else "") + \
            (f" <{r['model']}>" if r.get("model") and len({x.get('model') for x in rows}) > 1 else "")
        series.setdefault(key, []).append(r)
    if not any(len({r["k"] for r in s}) > 1 for s in series.values()):
        return None  # a single k: nothing to draw a line through
    plt = _pyplot()
    metric = task["primary_metric"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["k"])
        if len(rs) < 2:
            continue
        ref = next((x for x in rows if x["method"] == "none" and x.get("style") == rs[0].get("style")
                    and x.get("model") == rs[0].get("model")), None)
        pts = ([ref] if ref is not None else []) + rs
        ks = [0 if p["method"] == "none" else p["k"] for p in pts]
        vals = [_iv(p, metric) for p in pts]
        ax.errorbar(ks, [v for v, _, _ in vals], yerr=[[v - lo for v, lo, _ in vals], [hi - v for v, _, hi in vals]],
                    marker="o", capsize=3, label=key)
    ax.set_xlabel("k (items retrieved; 0 = no personalization)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task['task']}: {metric} against k (95% CI)", fontsize=10)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def profile_size_series(task: dict[str, Any], *, max_lines: int = 8) -> list[dict[str, Any]]:
    """The lines of the profile-size plot: `none`, the three best LLM cells and the baselines, each with
    its per-bin values and, when the report has them, 95% intervals (`low`, `high`; else None)."""
    by = task.get("by_profile_size") or {}
    metric = task["primary_metric"]
    higher = task["higher_is_better"][metric]
    rows = task["rows"]
    llm = sorted([r for r in rows if r["kind"] == "llm" and r["method"] != "none"],
                 key=lambda r: _iv(r, metric)[0], reverse=higher)
    keep = [r["cell"] for r in rows if r["kind"] == "llm" and r["method"] == "none"][:1]
    keep += [r["cell"] for r in llm[:3]] + [r["cell"] for r in rows if r["kind"] == "baseline"]
    out = []
    for cell in keep[:max_lines]:
        values = by.get("methods", {}).get(cell)
        if values is None:
            continue
        ivs = (by.get("intervals") or {}).get(cell)
        out.append({"cell": cell, "values": values, "baseline": any(r["cell"] == cell and r["kind"] == "baseline"
                                                                    for r in rows),
                    "low": [lo for lo, _ in ivs] if ivs else None, "high": [hi for _, hi in ivs] if ivs else None})
    return out


def plot_vs_profile_size(task: dict[str, Any], path: Path, *, max_lines: int = 8) -> Path | None:
    """The primary metric per profile-size bin for `none`, the best cells and the baselines, with 95%
    intervals (lines nudged sideways so the bars do not hide each other)."""
    by = task.get("by_profile_size") or {}
    bins = by.get("bins") or []
    if not bins:
        return None
    metric = task["primary_metric"]
    series = profile_size_series(task, max_lines=max_lines)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.4))
    width = 0.3 / max(len(series), 1)
    for j, s in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(bins))]
        yerr = None
        if s["low"] is not None:
            yerr = [[max(v - lo, 0) for v, lo in zip(s["values"], s["low"], strict=True)],
                    [max(hi - v, 0) for v, hi in zip(s["values"], s["high"], strict=True)]]
        ax.errorbar(xs, s["values"], yerr=yerr, fmt="--o" if s["baseline"] else "-o", capsize=2, markersize=4,
                    linewidth=1.2, elinewidth=0.8, label=s["cell"])
    ax.set_xticks(range(len(bins)), [f"[{b['low']}, {b['high']}{']' if b['closed'] else ')'}\nn={b['n']}"
                                     for b in bins], fontsize=8)
    ax.set_xlabel("profile size (items in the user's history), quantile bins")
    ax.set_ylabel(f"{metric} ({'higher' if task['higher_is_better'][metric] else 'lower'} is better)")
    has_ci = any(s["low"] is not None for s in series)
    ax.set_title(f"{task['task']}: {metric} against profile size" + (" (95% CI)" if has_ci else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)  # below: no
    return _save(plt, fig, path)  # line or interval hidden under it


def plot_report(report: dict[str, Any], folder: str | Path) -> dict[str, dict[str, str]]:
    """Every plot for every task of a bench report; returns task -> {plot kind: path}."""
    folder = Path(folder)
    out: dict[str, dict[str, str]] = {}
    for name, task in report.get("tasks", {}).items():
        if not task.get("rows"):
            continue
        slug = _slug(name)
        made = {"by method": plot_by_method(task, folder / f"{slug}_by_method.png"),
                "against k": plot_vs_k(task, folder / f"{slug}_vs_k.png"),
                "against profile size": plot_vs_profile_size(task, folder / f"{slug}_vs_profile_size.png")}
        out[name] = {k: str(v) for k, v in made.items() if v is not None}
    return out
