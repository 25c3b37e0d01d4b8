"""Paired difference of two logged bench cells on the same questions, with a 95% bootstrap interval: one
learned cell under two training recipes (two report folders of a recipe sweep), or any two cells scored apart.

    python benchmarks/pair_cells.py A/bench/cells/TASK/CELL.jsonl B/bench/cells/TASK/CELL.jsonl --metric accuracy

Prints A's and B's scores and A - B as one JSON object (also written to --out).
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


def _read(path: Path) -> dict[str, dict[str, Any]]:
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


def pair(a_path: Path, b_path: Path, metric: str, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    get_metric(metric)  # an unknown metric fails before anything is read
    a, b = _read(a_path), _read(b_path)
    if set(a) != set(b):
        raise InputError(f"the logs hold different questions: {len(set(a) - set(b))} only in A, "
                         f"{len(set(b) - set(a))} only in B", source=f"{a_path} vs {b_path}")
    ids = sorted(a)
    if any(a[i]["target"] != b[i]["target"] for i in ids):
        raise InputError("the logs give the same question different targets", source=f"{a_path} vs {b_path}")
    golds = [a[i]["target"] for i in ids]
    pa, pb = [a[i]["prediction"] for i in ids], [b[i]["prediction"] for i in ids]
    out = {"metric": metric, "questions": len(ids), "a": str(a_path), "b": str(b_path)}
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
    args = p.parse_args(argv)
    try:
        result = pair(args.a, args.b, args.metric)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
