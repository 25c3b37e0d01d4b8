"""Paired difference of two logged bench cells on the same questions, with a 95% bootstrap interval: one
learned cell under two training recipes (two report folders of a recipe sweep), or any two cells scored apart.

    python benchmarks/pair_cells.py A/bench/cells/TASK/CELL.jsonl B/bench/cells/TASK/CELL.jsonl --metric accuracy

Each side is read as logged, or (`--readouts A,B` with `--task`) re-read from its logged label scores with the
readout a report chose on dev (e.g. `median,expected`; `-` keeps a side as logged). Prints A's and B's scores
and A - B as one JSON object (also written to --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from pllm.errors import InputError
from pllm.io import atomic_write_json
from pllm.metrics import get_metric
from pllm.stats import fast_bootstrap
from pllm.tasks.readouts import read_out
from pllm.tasks.spec import TaskSpec, get_task


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """A cell log's records by question id (the first record of an id wins, as the runner reads them)."""
    if not path.is_file():
        raise InputError("cell log not found", source=str(path))
    rows = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
            rows.setdefault(str(rec["id"]), rec)
        except (json.JSONDecodeError, KeyError) as exc:
            raise InputError(f"line {n} is not a cell log record ({exc})", source=str(path)) from None
    return rows


def _predictions(rows: dict[str, dict[str, Any]], ids: list[str], readout: str | None, spec: TaskSpec | None,
                 source: Path) -> list[Any]:
    if readout is None:
        return [rows[i]["prediction"] for i in ids]
    if spec is None:
        raise InputError("a readout needs the task's label set: pass the task", field="task")
    out = []
    for i in ids:
        if not rows[i].get("label_scores"):
            raise InputError(f"question {i!r} has no logged label scores to read out", source=str(source))
        out.append(read_out(spec, rows[i]["label_scores"], readout, rows[i].get("label_prior")))
    return out


def pair(a_path: Path, b_path: Path, metric: str, *, n_resamples: int = 1000, seed: int = 0,
         readouts: tuple[str | None, str | None] = (None, None), task: str | None = None) -> dict[str, Any]:
    """A - B on the same questions; `readouts` re-reads a side from its label scores (None: as logged)."""
    get_metric(metric)  # an unknown metric fails before anything is read
    spec = get_task(task) if task else None
    a, b = read_log(a_path), read_log(b_path)
    if set(a) != set(b):
        raise InputError(f"the logs hold different questions: {len(set(a) - set(b))} only in A, "
                         f"{len(set(b) - set(a))} only in B", source=f"{a_path} vs {b_path}")
    ids = sorted(a)
    if any(a[i]["target"] != b[i]["target"] for i in ids):
        raise InputError("the logs give the same question different targets", source=f"{a_path} vs {b_path}")
    golds = [a[i]["target"] for i in ids]
    pa, pb = (_predictions(rows, ids, r, spec, path) for rows, r, path in ((a, readouts[0], a_path),
                                                                            (b, readouts[1], b_path)))
    out: dict[str, Any] = {"metric": metric, "questions": len(ids), "a": str(a_path), "b": str(b_path)}
    if any(readouts):
        out["readouts"] = list(readouts)
    for key, preds, ref in (("a_score", pa, None), ("b_score", pb, None), ("a_minus_b", pa, pb)):
        out[key] = dataclasses.asdict(fast_bootstrap(metric, preds, golds, n_resamples=n_resamples, seed=seed,
                                                     ref_preds=ref))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="First cell log (.jsonl).")
    p.add_argument("b", type=Path, help="Second cell log (.jsonl), the same questions.")
    p.add_argument("--metric", required=True, help="A metric that needs no label set (accuracy, mae, rouge-1, ...).")
    p.add_argument("--out", type=Path, default=None, help="Also write the result here (JSON).")
    p.add_argument("--readouts", default=None, help="A,B: re-read each side from its label scores with this readout "
                                                     "(argmax, expected, median; '-' keeps a side as logged).")
    p.add_argument("--task", default=None, help="The task whose label set the readouts use (e.g. movielens-rating).")
    args = p.parse_args(argv)
    try:
        readouts: tuple[str | None, str | None] = (None, None)
        if args.readouts:
            parts = [None if r.strip() in ("", "-") else r.strip() for r in args.readouts.split(",")]
            if len(parts) != 2:
                raise InputError("--readouts takes two names, A,B", field="readouts")
            readouts = (parts[0], parts[1])
        result = pair(args.a, args.b, args.metric, readouts=readouts, task=args.task)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
