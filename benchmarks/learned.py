"""Learned personalization against the strongest non-LLM baselines (docs/results/learned/).

Runs a bench grid that scores one task's test, dev and train splits (benchmarks/grids/learned.yaml:
untrained bm25@4, the learned `ft+bm25@4` and every baseline), then, without touching the test split:
- picks each LLM cell's readout (argmax / expected / median) on dev, from the label scores it logged;
- fits hybrids (LLM label distribution + collaborative features) and their collaborative-only twins on
  the train split, and picks the estimator on dev;
- names the strongest baseline by its dev score.
The report then gives test scores with 95% bootstrap intervals and paired differences against that
baseline, LLM-alone and hybrid rows apart.

    python benchmarks/learned.py --config benchmarks/grids/learned.yaml --out docs/results/learned
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from pllm.adapt.learned import ft_owner
from pllm.adapt.store import AdapterStore
from pllm.eval.bench import BenchRunner, load_bench_config, machine_info
from pllm.eval.hybrid import ESTIMATORS, HybridConfig, HybridRater
from pllm.eval.report import MethodResult, markdown_table, summarize
from pllm.eval.stats import bootstrap_metric
from pllm.io import atomic_write_json, atomic_write_text
from pllm.pipeline import MethodConfig, PredictionRecord
from pllm.tasks.readouts import read_out, readouts_for
from pllm.tasks.spec import TaskSpec


def _progress(label: str, done: int, total: int) -> None:
    if done == total or done % 40 == 0:
        print(f"[learned] {label}: {done}/{total}", file=sys.stderr, flush=True)


def _score(spec: TaskSpec, records: list[PredictionRecord]) -> float:
    m = spec.primary_metric
    return bootstrap_metric(m, [r.prediction for r in records], [r.target for r in records], spec.labels,
                            n_resamples=1).value


def _higher(spec: TaskSpec) -> bool:
    from pllm.eval.metrics import METRICS

    return METRICS.get(spec.primary_metric).higher_is_better


def _best(spec: TaskSpec, scores: dict[str, float]) -> str:
    return (max if _higher(spec) else min)(scores, key=scores.get)


def _with_readout(spec: TaskSpec, records: list[PredictionRecord], readout: str) -> list[PredictionRecord]:
    out = []
    for r in records:
        pred = read_out(spec, r.label_scores, readout, r.label_prior) if r.label_scores else r.prediction
        out.append(dataclasses.replace(r, prediction=pred, raw=pred or ""))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="benchmarks/grids/learned.yaml", help="Grid with test, dev, train tasks.")
    p.add_argument("--out", default="docs/results/learned", help="Report folder (bench cells under bench/).")
    p.add_argument("--test", default="movielens-rating", help="Grid task name of the test split.")
    p.add_argument("--dev", default="movielens-rating-dev", help="Grid task name of the dev split.")
    p.add_argument("--train", default="movielens-rating-train", help="Grid task name of the train split.")
    p.add_argument("--assemble", action="store_true", help="Score nothing: report from the cells logged.")
    args = p.parse_args(argv)
    out = Path(args.out)
    runner = BenchRunner(load_bench_config(args.config), out / "bench", progress=_progress)
    t0 = time.perf_counter()
    runner.run(only_report=args.assemble)
    tasks = {t.name: t for t in runner.load_tasks()}
    results = {name: dict((c.label, (c, res)) for c, res in runner.task_results(t)[0]) for name, t in tasks.items()}
    spec = tasks[args.test].spec
    # Cells are matched across splits by their method (labels differ by the extra-cell style suffix).
    def key(cell: Any) -> str:
        return cell.method if cell.kind == "baseline" else f"{cell.config.get('ft')}|{cell.config['retriever']}" \
            f"@{cell.config['k']}"

    by_key = {name: {key(c): res for c, res in cells.values()} for name, cells in results.items()}
    test, dev, train = by_key[args.test], by_key[args.dev], by_key[args.train]
    rows: list[MethodResult] = []
    choices: dict[str, Any] = {}
    # Baselines: all of them on test; the strongest chosen on dev.
    base_dev = {k: _score(spec, r.records) for k, r in dev.items() if r.kind == "baseline"}
    strongest = _best(spec, base_dev)
    choices["strongest_baseline"] = {"chosen": strongest, "dev": base_dev}
    # LLM cells: the readout chosen on dev (cells scored only on test keep argmax).
    for k, res in test.items():
        if res.kind != "llm":
            continue
        name = res.method.split(" [")[0]
        if k in dev:
            dev_scores = {ro: _score(spec, _with_readout(spec, dev[k].records, ro)) for ro in readouts_for(spec)}
            ro = _best(spec, dev_scores)
            choices[name] = {"readout": ro, "dev": dev_scores}
        else:
            ro = "argmax"
        rows.append(dataclasses.replace(res, method=f"{name}/{ro}" if ro != "argmax" else name,
                                        records=_with_readout(spec, res.records, ro)))
    # Hybrids on each LLM cell scored on all three splits, and the collaborative-only twin.
    train_qs = {q.id: q for q in tasks[args.train].questions}
    dev_qs, test_qs = tasks[args.dev].questions, tasks[args.test].questions
    hybrid_sources = [k for k in test if k in dev and k in train and test[k].kind == "llm"]
    for use_llm, sources in ((False, hybrid_sources[:1]), (True, hybrid_sources)):
        for k in sources:
            fit_qs = [train_qs[r.id] for r in train[k].records]
            dev_scores, fitted = {}, {}
            for est in ESTIMATORS.names():
                cfg = HybridConfig(est, use_llm=use_llm)
                fitted[est] = HybridRater(spec, cfg).fit(fit_qs, train[k].records)
                dev_scores[est] = _score(spec, fitted[est].predict(dev_qs, dev[k].records))
            est = _best(spec, dev_scores)
            label = HybridConfig(est, use_llm=use_llm).label + (f"({test[k].method.split(' [')[0]})" if use_llm else "")
            choices[label] = {"estimator": est, "dev": dev_scores, "fit_rows": len(fit_qs)}
            rows.append(MethodResult(method=label, records=fitted[est].predict(test_qs, test[k].records),
                                     kind="hybrid" if use_llm else "baseline",
                                     config={"hybrid": dataclasses.asdict(HybridConfig(est, use_llm=use_llm)),
                                             "llm_cell": test[k].method if use_llm else None}))
    rows += [r for r in test.values() if r.kind == "baseline"]
    summary = summarize(spec, rows, reference=strongest)
    llm_rows = [r for r in summary if r.kind == "llm"]
    hyb_rows = [r for r in summary if r.kind == "hybrid"]
    base_rows = [r for r in summary if r.kind == "baseline"]
    adapter: dict[str, Any] = {}
    for cell, _ in results[args.test].values():
        if cell.kind == "llm" and cell.config.get("ft"):
            mc = MethodConfig(**{k: v for k, v in cell.config.items() if k != "model"})
            record = AdapterStore(None).get(spec.name, "task", ft_owner(mc))
            if record is not None:
                adapter = {"path": str(record.path), "base_model": record.base_model, "pairs": record.n_pairs,
                           "train_users": len(record.members), "train_seconds": record.train_seconds,
                           "loss_first_10": record.losses[:10], "loss_last_10": record.losses[-10:],
                           "data_hash": record.data_hash, "recipe": record.config}
    report = {"kind": "pllm-learned", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
              "config": args.config, "task": spec.name, "n_test": len(test_qs), "reference": strongest,
              "choices": choices, "adapter": adapter, "seconds": round(time.perf_counter() - t0, 1),
              "rows": [dataclasses.asdict(r) | {"records": None} for r in summary]}
    md = [f"# Learned personalization: {spec.name}", "",
          f"{len(test_qs)} test questions; readouts, hybrid estimators and the strongest baseline chosen on the "
          f"dev split ({len(dev_qs)} questions); hybrids fitted on the train split ({len(train_qs)}). "
          f"Paired differences are against the strongest baseline on dev, **{strongest}**.", "",
          "## LLM alone", "", markdown_table(spec, llm_rows).replace("vs none", f"vs {strongest}"),
          "## Hybrid (LLM + collaborative features; not an LLM-alone result)", "",
          markdown_table(spec, hyb_rows).replace("vs none", f"vs {strongest}"),
          "## Baselines (no LLM; `cf-*` is the hybrid's collaborative-only twin)", "",
          markdown_table(spec, base_rows).replace("vs none", f"vs {strongest}"),
          "## Choices made on dev", "", "```json", json.dumps(choices, indent=1), "```", "",
          "## Task adapter", "", "```json", json.dumps(adapter, indent=1, default=str), "```", ""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join(md))
    print("\n".join(md))
    return report


if __name__ == "__main__":
    main()
