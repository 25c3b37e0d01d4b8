"""An equal-weight ensemble of logged learned cells: the mean of their label distributions, written as a cell log.

    python benchmarks/ensemble_cells.py A.jsonl B.jsonl ... --task movielens-rating --out E.jsonl

Each member's logged label log-likelihoods become a distribution (softmax); E's label scores are the log of their
mean, so every readout (`median`, `expected`, `argmax`) reads E as it reads one cell, and `pair_cells.py
--readouts median,-` pairs it with any other cell on the same questions. No weight is fitted: nothing here sees a
target. Members must hold the same questions with the same targets and label scores for every question.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pair_cells import read_log

from pllm.errors import InputError
from pllm.io import atomic_write_text
from pllm.tasks.readouts import probabilities
from pllm.tasks.spec import get_task


def ensemble(paths: list[Path], task: str) -> list[dict[str, Any]]:
    if len(paths) < 2:
        raise InputError("an ensemble needs at least two cell logs", field="members")
    labels = list(get_task(task).labels or [])
    if not labels:
        raise InputError(f"task {task!r} has no label set to average over", field="task")
    logs = [read_log(p) for p in paths]
    ids = sorted(logs[0])
    rows = []
    for path, log in zip(paths, logs, strict=True):
        if sorted(log) != ids:
            raise InputError(f"holds other questions than {paths[0]}", source=str(path))
    for i in ids:
        if len({log[i]["target"] for log in logs}) != 1:
            raise InputError(f"the members give question {i!r} different targets", source=str(paths))
        dists = []
        for path, log in zip(paths, logs, strict=True):
            scores = log[i].get("label_scores")
            if not scores or set(scores) != set(labels):
                raise InputError(f"question {i!r} has no label scores for {labels}", source=str(path))
            dists.append(probabilities(np.array([scores[lab] for lab in labels])))
        mean = np.mean(dists, axis=0)
        rows.append({"id": i, "user_id": logs[0][i].get("user_id"), "target": logs[0][i]["target"],
                     "prediction": labels[int(np.argmax(mean))],
                     "label_scores": {lab: float(np.log(p)) for lab, p in zip(labels, mean, strict=True)}})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", type=Path, nargs="+", help="Cell logs (.jsonl) with label scores, the same questions.")
    p.add_argument("--task", required=True, help="The task whose label set the scores cover (e.g. movielens-rating).")
    p.add_argument("--out", type=Path, required=True, help="The ensemble's cell log to write (.jsonl).")
    args = p.parse_args(argv)
    try:
        rows = ensemble(args.members, args.task)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"members": [str(m) for m in args.members], "questions": len(rows), "out": str(args.out)}))
    return rows


if __name__ == "__main__":
    main()
