"""Learned personalization against the strongest non-LLM baselines (docs/results/learned/).

Runs a bench grid that scores one task's test, dev and train splits (benchmarks/grids/learned.yaml:
untrained bm25@4, the learned `ft+bm25@4` and every baseline), then, without touching the test split:
- picks each LLM cell's readout (argmax / expected / median) on dev, from the label scores it logged (a cell
  with no dev twin, such as `ft+user+...` scored on test only, keeps the readout its name fixes);
- fits hybrids (LLM label distribution + collaborative features) and their collaborative-only twins on
  the train split, and picks the estimator on dev;
- names the strongest baseline by its dev score.
The report then gives test scores with 95% bootstrap intervals and paired differences against that
baseline, LLM-alone and hybrid rows apart; an `ft+user+...` cell (private adapters on top of the task adapter)
or `ft+soft+...` cell (a soft-token user encoder on top of it) is also paired against its first stage, and its
private adapters (read back from the adapter store) or soft encoder (texts, training seconds, losses, recipe)
are reported.

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

from pllm.adapt.private import RECIPE_FILE, private_task
from pllm.adapt.store import AdapterRecord, AdapterStore, slug
from pllm.eval.bench import BenchRunner, machine_info
from pllm.eval.grid import load_bench_config
from pllm.eval.hybrid import ESTIMATORS, HybridConfig, HybridRater
from pllm.eval.report import MethodResult, summarize
from pllm.eval.tables import method_table
from pllm.io import atomic_write_json, atomic_write_text
from pllm.metrics import get_metric
from pllm.pipeline import MethodConfig, PredictionRecord
from pllm.stats import fast_bootstrap
from pllm.tasks.readouts import read_out, readouts_for
from pllm.tasks.spec import TaskSpec


def _progress(label: str, done: int, total: int) -> None:
    if done == total or done % 40 == 0:
        print(f"[learned] {label}: {done}/{total}", file=sys.stderr, flush=True)


def _score(spec: TaskSpec, records: list[PredictionRecord]) -> float:
    return get_metric(spec.primary_metric).compute([r.prediction for r in records], [r.target for r in records],
                                                   spec.labels)


def _best(spec: TaskSpec, scores: dict[str, float]) -> str:
    return (max if get_metric(spec.primary_metric).higher_is_better else min)(scores, key=scores.get)


def _with_readout(spec: TaskSpec, records: list[PredictionRecord], readout: str) -> list[PredictionRecord]:
    """`readout` or `readout+cal` (calibrated: only for cells that logged a content-free prior)."""
    name, cal = readout.removesuffix("+cal"), readout.endswith("+cal")
    out = []
    for r in records:
        pred = read_out(spec, r.label_scores, name, r.label_prior if cal else None) if r.label_scores \
            else r.prediction
        out.append(dataclasses.replace(r, prediction=pred, raw=pred or ""))
    return out


def _key(cell: Any) -> str:
    """Cells are matched across splits by their method (labels differ by the extra-cell style suffix)."""
    if cell.kind == "baseline":
        return cell.method
    mc = MethodConfig(**{k: v for k, v in cell.config.items() if k != "model"})
    return f"{mc.label}|{mc.style}"


def _table(spec: TaskSpec, rows: list[Any], reference: str) -> str:
    return method_table(spec, rows).markdown().replace("vs none", f"vs {reference}") if rows else "(none)\n"


def _paired(spec: TaskSpec, rows: list[MethodResult], choices: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(a, b, paired difference of the primary metric a - b) for the comparisons the targets are about."""
    by = {r.method: r for r in rows}
    m = spec.primary_metric

    def diff(a: str, b: str) -> tuple[str, str, Any]:
        golds = [r.target for r in by[a].records]
        return a, b, fast_bootstrap(m, [r.prediction for r in by[a].records], golds, spec.labels,
                                    ref_preds=[r.prediction for r in by[b].records])

    out = []
    llm_dev = {name: c["dev"][c["readout"]] for name, c in choices.items() if "readout" in c}
    if llm_dev:
        best = _best(spec, llm_dev)
        shown = next(r.method for r in rows if r.kind == "llm" and r.method.split("/")[0].removesuffix("+cal") == best)
        out += [diff(shown, r.method) for r in rows if r.kind == "baseline"]
    for r in rows:  # a second stage (private adapters, soft tokens): against its first stage and the baselines
        if r.kind == "llm" and _second_stage(r.config):
            first = _first_stage(r, rows)
            out += ([diff(r.method, first)] if first else []) + [diff(r.method, b.method) for b in rows
                                                                  if b.kind == "baseline"]
    untrained = [r.method for r in rows if r.kind == "llm" and not r.config.get("ft")]
    for r in rows:  # what training adds: each learned cell against the untrained ones of the same run
        if r.kind == "llm" and r.config.get("ft"):
            out += [diff(r.method, u) for u in untrained]
    control = next((r.method for r in rows if r.kind == "llm" and r.config.get("ft") and not _second_stage(r.config)
                    and _plain(r.config) == "ft"), None)
    for r in rows:  # what reading the user's items adds to training: `ft+<method>` against `ft` (no prompt context)
        if control and r.kind == "llm" and r.config.get("ft") and not _second_stage(r.config) and r.method != control:
            out.append(diff(r.method, control))
    for r in rows:
        if r.kind == "hybrid":
            twins = [t.method for t in rows if t.method.startswith("cf-")]  # same estimator first
            twin = next((t for t in twins if t == f"cf-{r.config['hybrid']['estimator']}"), twins[0] if twins else None)
            if twin:
                out.append(diff(r.method, twin))
    # once each: a second stage that is also the best cell by dev meets the baselines in two loops above
    return list({(a, b): (a, b, iv) for a, b, iv in out}.values())


def _plain(config: dict[str, Any]) -> str:
    mc = MethodConfig(**{k: v for k, v in config.items() if k != "model"})
    return mc.task_adapter_method().label


def _second_stage(config: dict[str, Any]) -> bool:
    """Whether a learned cell adds a second stage (`ft+user+`, `ft+soft+`) to its task adapter."""
    return bool(config.get("ft_user") or config.get("ft_soft"))


def _first_stage(row: MethodResult, rows: list[MethodResult]) -> str | None:
    """The `ft+<method>` row an `ft+user+<method>` or `ft+soft+<method>` row adds its second stage to."""
    return next((r.method for r in rows if r.kind == "llm" and r.config.get("ft") and not _second_stage(r.config)
                 and _plain(r.config) == _plain(row.config)), None)


def _soft_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """The soft encoder an `ft+soft+...` cell was scored with (its cell file names it), read back from its folder."""
    folder = Path(meta["soft_encoder"])
    log = json.loads((folder / "train_log.json").read_text(encoding="utf-8"))
    if log.get("digest") != meta.get("soft_digest"):
        return {"path": str(folder), "note": "retrained since this cell was scored"}
    return {"path": str(folder), "texts": log["n_examples"], "texts_unseen_by_adapter": log["unseen_by_adapter"],
            "users": log["n_users"],
            "train_seconds": round(sum(log["epoch_seconds"]), 1), "torch_threads": log["torch_threads"],
            "loss_first_10": log["step_losses"][:10], "loss_last_10": log["step_losses"][-10:],
            "recipe": log["train_config"]}


def _private_summary(task_record: AdapterRecord, spec: TaskSpec, users: set[str], n_questions: dict[str, int]
                     ) -> dict[str, Any]:
    """The private adapters of the scored users on top of one task adapter, read back from the store."""
    store = AdapterStore(None)
    task = private_task(spec, task_record)
    records = [r for r in store.records(task, "user") if r.owner in users and not r.stale]
    seconds = sorted(r.train_seconds for r in records)
    recipe_file = store.root / slug(task) / RECIPE_FILE
    with_adapter = {r.owner for r in records}
    return {"private_task": task, "scored_users": len(users), "with_adapter": len(records),
            "fallback_users": len(users - with_adapter),
            "fallback_questions": sum(n for u, n in n_questions.items() if u not in with_adapter),
            "texts_mean": round(sum(r.n_pairs for r in records) / len(records), 2) if records else 0.0,
            "train_seconds": {"total": round(sum(seconds), 1),
                              "mean": round(sum(seconds) / len(seconds), 2) if seconds else 0.0,
                              "median": seconds[len(seconds) // 2] if seconds else 0.0,
                              "min": seconds[0] if seconds else 0.0, "max": seconds[-1] if seconds else 0.0},
            "recipe": json.loads(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else None}


def analyse(runner: BenchRunner, test_name: str) -> tuple[dict[str, Any], list[str]]:
    """Choices on dev and train, then the test table, for one task scored on its three splits."""
    tasks = {t.name: t for t in runner.load_tasks()}
    names = (test_name, f"{test_name}-dev", f"{test_name}-train")  # no -train: no hybrid to fit
    test, dev, train = ({_key(c): res for c, res in runner.task_results(tasks[n])[0]} if n in tasks else {}
                        for n in names)
    spec = tasks[test_name].spec
    test_qs, dev_qs = tasks[test_name].questions, tasks[names[1]].questions
    train_qs = {q.id: q for q in tasks[names[2]].questions} if names[2] in tasks else {}
    rows: list[MethodResult] = []
    base_dev = {k: _score(spec, r.records) for k, r in dev.items() if r.kind == "baseline"}
    strongest = _best(spec, base_dev)
    choices: dict[str, Any] = {"strongest_baseline": {"chosen": strongest, "dev": base_dev}}
    for k, res in test.items():  # LLM cells: the readout (and calibration, if logged) chosen on dev
        if res.kind != "llm":
            continue
        name = res.method.split(" [")[0].removesuffix("+cal")
        if k not in dev:  # no dev twin (a private cell, scored on test only): the readout its name fixes
            ro = res.config.get("readout", "argmax")
            choices[name] = {"readout_fixed": ro, "why": "no dev cell: the readout is the one the method names"}
            rows.append(dataclasses.replace(res, method=name, records=_with_readout(spec, res.records, ro)))
            continue
        options = readouts_for(spec)
        if res.records and res.records[0].label_prior is not None:
            options = options + [f"{o}+cal" for o in options]
        if k in dev:
            dev_scores = {ro: _score(spec, _with_readout(spec, dev[k].records, ro)) for ro in options}
            ro = _best(spec, dev_scores)
            choices[name] = {"readout": ro, "dev": dev_scores}
        else:
            ro = "argmax"
        shown = name + ("+cal" if ro.endswith("+cal") else "") + (f"/{ro.removesuffix('+cal')}"
                                                                   if not ro.startswith("argmax") else "")
        rows.append(dataclasses.replace(res, method=shown, records=_with_readout(spec, res.records, ro)))
    if spec.numeric_labels and spec.item_output is not None:  # hybrids, and their collaborative-only twin
        sources = [k for k in test if k in dev and k in train and test[k].kind == "llm"]
        for use_llm, srcs in ((False, sources[:1]), (True, sources)):
            for k in srcs:
                fit_qs = [train_qs[r.id] for r in train[k].records]
                dev_scores, fitted = {}, {}
                for est in ESTIMATORS.names():
                    fitted[est] = HybridRater(spec, HybridConfig(est, use_llm=use_llm)).fit(fit_qs, train[k].records)
                    dev_scores[est] = _score(spec, fitted[est].predict(dev_qs, dev[k].records))
                est = _best(spec, dev_scores)
                cfg = HybridConfig(est, use_llm=use_llm)
                label = cfg.label + (f"({test[k].method.split(' [')[0]})" if use_llm else "")
                choices[label] = {"estimator": est, "dev": dev_scores, "fit_rows": len(fit_qs)}
                rows.append(MethodResult(method=label, records=fitted[est].predict(test_qs, test[k].records),
                                         kind="hybrid" if use_llm else "baseline",
                                         config={"hybrid": dataclasses.asdict(cfg),
                                                 "llm_cell": test[k].method if use_llm else None}))
    rows += [r for r in test.values() if r.kind == "baseline"]
    summary = summarize(spec, rows, reference=strongest)
    adapters = {}
    # The adapters these cells ran on: each learned cell's log records its adapter's data hash.
    hashes, private_cells, soft = set(), {}, {}
    for cell, _ in runner.task_results(tasks[test_name])[0]:
        meta = runner.cell_path(cell).with_suffix(".json")
        if cell.kind == "llm" and meta.is_file():
            logged = json.loads(meta.read_text(encoding="utf-8"))
            hashes.add(logged.get("adapter"))
            if cell.config.get("ft_user"):
                private_cells[cell.label] = logged.get("adapter")
            if cell.config.get("ft_soft"):
                soft[cell.label] = _soft_summary(logged)
    n_questions: dict[str, int] = {}
    for q in test_qs:
        n_questions[q.user_id] = n_questions.get(q.user_id, 0) + 1
    private = {}
    for record in AdapterStore(None).records(spec.name, "task"):
        for label, digest in private_cells.items():
            if record.data_hash == digest:
                private[label] = _private_summary(record, spec, set(n_questions), n_questions)
        if record.data_hash in hashes:
            adapters[record.owner] = {
                "path": str(record.path), "base_model": record.base_model, "pairs": record.n_pairs,
                "train_users": len(record.members), "train_seconds": record.train_seconds,
                "loss_first_10": record.losses[:10], "loss_last_10": record.losses[-10:],
                "data_hash": record.data_hash, "recipe": record.config}
    by_kind = {kind: [r for r in summary if r.kind == kind] for kind in ("llm", "hybrid", "baseline")}
    paired = _paired(spec, rows, choices)
    md = [f"## {spec.name}", "",
          f"{len(test_qs)} test questions; readouts, calibration, hybrid estimators and the strongest baseline "
          f"chosen on the dev split ({len(dev_qs)} questions); hybrids fitted on the train split "
          f"({len(train_qs)}). Δ is the paired difference against the strongest baseline on dev, **{strongest}** "
          "(negative MAE / positive accuracy: better than it).", "",
          "### LLM alone", "", _table(spec, by_kind["llm"], strongest),
          "### Hybrid (LLM + collaborative features: not an LLM-alone result)", "",
          _table(spec, by_kind["hybrid"], strongest),
          "### Baselines (no LLM; `cf-*` is the hybrids' collaborative-only twin)", "",
          _table(spec, by_kind["baseline"], strongest),
          "### Paired differences that decide the targets", "",
          "The best LLM-alone method (by its dev score) against every baseline, and each hybrid against its "
          "collaborative-only twin (what the LLM adds to the same features). Negative MAE / positive accuracy: "
          "the first is better.", "", "| comparison | Δ [95% CI] |", "|---|---|",
          *[f"| {a} − {b} | {iv.fmt()} |" for a, b, iv in paired], "",
          "### Choices made on dev", "", "```json", json.dumps(choices, indent=1), "```", "",
          "### Task adapters", "", "```json", json.dumps(adapters, indent=1, default=str), "```", "",
          *(["### Private adapters (`ft+user+...`: one per scored user, on top of the task adapter)", "",
             "```json", json.dumps(private, indent=1), "```", ""] if private else []),
          *(["### Soft-token encoders (`ft+soft+...`: one per task adapter, trained against the merged model)", "",
             "```json", json.dumps(soft, indent=1, default=str), "```", ""] if soft else [])]
    report = {"task": spec.name, "n_test": len(test_qs), "reference": strongest, "choices": choices,
              "paired": [{"a": a, "b": b, "difference": dataclasses.asdict(iv)} for a, b, iv in paired],
              "adapters": adapters, "private_adapters": private, "soft_encoders": soft,
              "rows": [dataclasses.asdict(r) for r in summary]}
    return report, md


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="benchmarks/grids/learned.yaml",
                   help="Grid whose tasks come in threes: NAME (test), NAME-dev, NAME-train (the last only where "
                   "hybrids are fitted).")
    p.add_argument("--out", default="docs/results/learned", help="Report folder (bench cells under bench/).")
    p.add_argument("--assemble", action="store_true", help="Score nothing: report from the cells logged.")
    p.add_argument("--machine-note", default="", help="How the machine was shared while the cells ran (timings "
                   "mean little on a busy machine; quality numbers do not depend on it).")
    args = p.parse_args(argv)
    out = Path(args.out)
    runner = BenchRunner(load_bench_config(args.config), out / "bench", progress=_progress)
    t0 = time.perf_counter()
    runner.run(only_report=args.assemble)
    names = [t.name for t in runner.load_tasks()]
    tests = [n for n in names if f"{n}-dev" in names]
    reports, md = {}, ["# Learned personalization against the strongest non-LLM baselines", "",
                       f"Grid `{args.config}`; bench cells in `bench/`. Machine: {machine_info()}.",
                       *([f"Sharing: {args.machine_note}"] if args.machine_note else []), ""]
    for name in tests:
        reports[name], lines = analyse(runner, name)
        md += lines
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    report = {"kind": "pllm-learned", "created": now, "machine": machine_info(),
              "config": args.config, "machine_note": args.machine_note, "seconds": round(time.perf_counter() - t0, 1),
              "tasks": reports}
    previous = out / "report.json"
    if args.assemble and previous.is_file():  # re-assembled: the scoring run's date and duration stay the report's
        before = json.loads(previous.read_text(encoding="utf-8"))
        report.update({k: before[k] for k in ("created", "seconds") if k in before}, assembled=now)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join(md))
    print("\n".join(md))
    return report


if __name__ == "__main__":
    main()
