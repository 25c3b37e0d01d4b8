"""Results tables as text cells, rendered as padded markdown (report.md, and the console when it is not a
terminal) or drawn by the CLI as a rich table on a terminal, so every output shares one set of columns:
the method comparison (`pllm eval`, `pllm run`), a bench task's cells, and a comparison of two bench
reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pllm.metrics import METRICS
from pllm.stats import Interval
from pllm.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from pllm.eval.report import MethodRow


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
    arrows = {m: ("↑" if METRICS.get(m).higher_is_better else "↓") for m in spec.metrics}
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


def compare_table(rows: Sequence[dict[str, Any]]) -> Table:
    """`compare_reports`' rows as a table (what changed from report A to B)."""
    body = [[r["task"], r["cell"], "", "", "", "", r["change"]] if "metric" not in r else
            [r["task"], r["cell"], r["metric"], f"{r['a']:.4f}", f"{r['b']:.4f}", f"{r['delta']:+.4f}",
             r["change"] + (" (outside A's 95% CI)" if r["outside_a_ci"] else "")] for r in rows]
    return Table(["task", "cell", "metric", "A", "B", "Δ", "change"], body)


def devices_text(devices: dict[str, int] | None, default: str = "—") -> str:
    """Where questions were computed: one device name, or each with its count when mixed."""
    devices = devices or {}
    if len(devices) <= 1:
        return next(iter(devices), default)
    return ", ".join(f"{d} ({n})" for d, n in devices.items())
