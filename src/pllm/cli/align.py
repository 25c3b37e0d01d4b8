"""`pllm align ...`: per-user preferences, DPO adapters, preference soups, RiC, style judge, evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from pllm.cli.common import DbOption, console, err_console, open_db, progress_bar
from pllm.errors import InputError

if TYPE_CHECKING:
    from pllm.models.base import Generator

app = typer.Typer(no_args_is_help=True, help="Personalized alignment: preferences, DPO, soups, RiC, evaluation.")

ModelOption = typer.Option(None, "--model", help="hf model id or folder (default: the embedded SmolLM2-135M).")
ThreadsOption = typer.Option(1, "--threads", help="torch threads (1 is fastest on a crowded machine; 0: torch's "
                                                   "default).")


def _load(model: str | None, threads: int):  # noqa: ANN202 - HFGenerator, imported lazily
    import torch

    from pllm.models import load_generator

    if threads > 0:
        torch.set_num_threads(threads)
    return load_generator("hf", model)


def _pstore(store):  # noqa: ANN001, ANN202
    from pllm.align.store import PreferenceStore

    return PreferenceStore(store)


@app.command("import-dsp")
def import_dsp(
    path: Path = typer.Argument(..., help="DSP domain_specific_preference.test.json."),
    domain: list[str] = typer.Option(None, "--domain", help="Domains to make users for (default: all four)."),
    rejected_per_query: int = typer.Option(1, "--rejected-per-query", help="Other styles each domain answer is "
                                                                          "preferred over, per query (1-4)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of queries held out (by query)."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    db: str | None = DbOption,
) -> None:
    """Import DSP as one simulated user per domain (`dsp-<domain>`): pairs and a one-hot vector."""
    from pllm.align.importers import DSP_DOMAINS
    from pllm.align.importers import import_dsp as run

    with open_db(db) as store:
        summary = run(_pstore(store), path, domains=list(domain) if domain else DSP_DOMAINS,
                      rejected_per_query=rejected_per_query, test_fraction=test_fraction, seed=seed)
    for user, counts in summary.users.items():
        console.print(f"{user}: {counts['train']} train pairs, {counts['test']} test pairs")


@app.command("import-hh")
def import_hh(
    helpful: Path = typer.Option(..., "--helpful", help="helpful.test.json ({text: [a, b], score: [sa, sb]})."),
    harmless: Path = typer.Option(..., "--harmless", help="harmless.test.json."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many pairs per dimension."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of dialogues held out."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    db: str | None = DbOption,
) -> None:
    """Import the HH helpful/harmless pairs as users `hh-helpful` and `hh-harmless`."""
    from pllm.align.importers import import_hh as run

    with open_db(db) as store:
        summary = run(_pstore(store), {"helpful": helpful, "harmless": harmless}, limit=limit,
                      test_fraction=test_fraction, seed=seed)
    for user, counts in summary.users.items():
        console.print(f"{user}: {counts['train']} train pairs, {counts['test']} test pairs")
    console.print(f"skipped {summary.skipped} rows (ties, differing contexts or empty answers)")


@app.command("set-vector")
def set_vector(user_id: str = typer.Argument(..., help="User id."),
               weights: list[str] = typer.Argument(..., help="NAME=WEIGHT pairs, e.g. academy=0.7 business=0.3."),
               db: str | None = DbOption) -> None:
    """Store a user's preference vector over named dimensions."""
    from pllm.align.store import parse_vector

    with open_db(db) as store:
        vec = _pstore(store).set_vector(parse_vector(weights), user_id=user_id)
    console.print(f"{user_id}: {json.dumps(vec)}")


@app.command("assign")
def assign(user_id: str = typer.Argument(..., help="User id."),
           uses: list[str] = typer.Argument(..., help="METHOD=NAME: the adapter (dpo, ric) or soup (soup) of a "
                                            "registered adapter method that serves this user."),
           db: str | None = DbOption) -> None:
    """Choose which aligned model serves a user (the server asks the methods in order: dpo, soup, ric)."""
    from pllm.adapt.methods import get_method

    pairs = []
    for i, item in enumerate(uses):
        method, sep, name = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"expected METHOD=NAME, got {item!r}", index=i, field="uses")
        find = get_method(method.strip()).find
        if find is None:
            raise InputError(f"{method.strip()} adapters are not assigned to users", index=i, field="uses")
        find(name.strip())
        pairs.append((method.strip(), name.strip()))
    with open_db(db) as store:
        for method, name in pairs:
            assigned = _pstore(store).assign(method, name, user_id=user_id)
    console.print(f"{user_id}: {_assigned(assigned)}")


def _assigned(assignment: dict[str, str]) -> str:
    return " ".join(f"{m}={n}" for m, n in assignment.items()) or "no adapters assigned"


@app.command("show")
def show(user_id: str = typer.Argument(..., help="User id."), db: str | None = DbOption) -> None:
    """A user's pair counts, preference vector and assigned aligned models."""
    with open_db(db) as store:
        ps = _pstore(store)
        counts, vec, a = ps.count_pairs(user_id=user_id), ps.get_vector(user_id=user_id), ps.get_assignment(
            user_id=user_id)
    if not any(counts.values()) and vec is None and not a:
        from pllm.errors import NotFoundError

        raise NotFoundError(f"user {user_id!r} has no preferences in the store")
    console.print(f"{user_id}: {counts['train']} train / {counts['test']} test pairs; vector {json.dumps(vec)}; "
                  f"{_assigned(a)}")


@app.command("adapters")
def adapters_() -> None:
    """List stored alignment adapters and soups."""
    from pllm.adapt.store import AdapterStore
    from pllm.align.soup import SoupStore

    table = Table("name", "kind", "base model", "users", "metrics")
    for r in AdapterStore().named():
        table.add_row(r.owner, r.method, r.base_model, ",".join(r.members),
                      json.dumps({k: v for k, v in r.metrics.items() if v is not None})[:80])
    console.print(table)
    for s in SoupStore().list():
        console.print(f"soup {s.name}: {json.dumps(s.dimensions)}")


def _train_options(epochs: float, max_steps: int, batch_size: int, lr: float, max_prompt_tokens: int,
                   max_answer_tokens: int, rank: int, seed: int, threads: int) -> dict:
    from pllm.align.config import LoraSettings

    return dict(epochs=epochs, max_steps=max_steps, batch_size=batch_size, learning_rate=lr,
                max_prompt_tokens=max_prompt_tokens, max_answer_tokens=max_answer_tokens, seed=seed,
                threads=threads, lora=LoraSettings(r=rank, alpha=2.0 * rank))


@app.command("dpo")
def dpo(
    user: list[str] = typer.Option(..., "--user", help="User(s) whose train pairs are pooled (repeat for a group)."),
    name: str = typer.Option(..., "--name", help="Adapter name."),
    max_pairs: int | None = typer.Option(None, "--max-pairs", help="At most this many pairs per user."),
    epochs: float = typer.Option(2.0, "--epochs", help="Passes over the pairs."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many steps (-1: epochs)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Pairs per step."),
    lr: float = typer.Option(5e-4, "--lr", help="Learning rate."),
    beta: float = typer.Option(0.1, "--beta", help="DPO beta."),
    max_prompt_tokens: int = typer.Option(96, "--max-prompt-tokens", help="Prompt token budget."),
    max_answer_tokens: int = typer.Option(96, "--max-answer-tokens", help="Answer token budget."),
    rank: int = typer.Option(8, "--rank", help="LoRA rank (alpha = 2 * rank)."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    do_assign: bool = typer.Option(True, "--assign/--no-assign", help="Serve these users with the adapter."),
    model: str | None = ModelOption,
    threads: int = ThreadsOption,
    db: str | None = DbOption,
) -> None:
    """Train a DPO LoRA adapter (trl) on the train pairs of one user, or pooled over a group."""
    from transformers import TrainerCallback

    from pllm.align.config import DPOSettings
    from pllm.align.dpo import train_dpo

    settings = DPOSettings(beta=beta, **_train_options(epochs, max_steps, batch_size, lr, max_prompt_tokens,
                                                       max_answer_tokens, rank, seed, threads))
    with open_db(db) as store:
        ps = _pstore(store)
        pairs = [p for u in user for p in ps.get_pairs(user_id=u, split="train", limit=max_pairs)]
        if not pairs:
            raise InputError(f"no train pairs for {list(user)}; import some first (pllm align import-dsp)")
        base = _load(model, threads)
        with progress_bar(unit="steps") as progress:
            task = progress.add_task(f"DPO {name}", total=None)

            class _Bar(TrainerCallback):
                def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201, ANN003
                    progress.update(task, completed=state.global_step, total=state.max_steps)

            result = train_dpo(base, pairs, name=name, users=list(user), settings=settings, callbacks=[_Bar()])
        if do_assign:
            for u in user:
                ps.assign("dpo", name, user_id=u)
    console.print(f"adapter {name}: {result.n_rows} pairs, {result.seconds:.1f} s, "
                  f"metrics {json.dumps(result.record.metrics)}")


@app.command("ric")
def ric(
    user: list[str] = typer.Option(..., "--user", help="Users (with preference vectors) whose pairs train it."),
    name: str = typer.Option(..., "--name", help="Adapter name."),
    limit_per_user: int | None = typer.Option(None, "--limit-per-user", help="At most this many rows per user."),
    epochs: float = typer.Option(2.0, "--epochs", help="Passes over the rows."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many steps (-1: epochs)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Rows per step."),
    lr: float = typer.Option(5e-4, "--lr", help="Learning rate."),
    max_prompt_tokens: int = typer.Option(96, "--max-prompt-tokens", help="Prompt token budget."),
    max_answer_tokens: int = typer.Option(96, "--max-answer-tokens", help="Answer token budget."),
    rank: int = typer.Option(8, "--rank", help="LoRA rank (alpha = 2 * rank)."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    do_assign: bool = typer.Option(True, "--assign/--no-assign", help="Serve these users with it."),
    model: str | None = ModelOption,
    threads: int = ThreadsOption,
    db: str | None = DbOption,
) -> None:
    """Train one reward-conditioned (RiC) adapter: the user's vector written into the prompt."""
    from pllm.align.config import RiCSettings
    from pllm.align.ric import ric_examples, train_ric

    settings = RiCSettings(**_train_options(epochs, max_steps, batch_size, lr, max_prompt_tokens, max_answer_tokens,
                                            rank, seed, threads))
    with open_db(db) as store:
        ps = _pstore(store)
        examples, dims = ric_examples(ps, list(user), limit_per_user=limit_per_user)
        base = _load(model, threads)
        with progress_bar() as progress:
            progress.add_task(f"RiC {name} ({len(examples)} rows)", total=None)
            result = train_ric(base, examples, dims, name=name, users=list(user), settings=settings)
        if do_assign:
            for u in user:
                ps.assign("ric", name, user_id=u)
    console.print(f"RiC adapter {name} over {dims}: {result.n_rows} rows, {result.seconds:.1f} s")


@app.command("soup")
def soup(
    name: str = typer.Argument(..., help="Soup name."),
    dim: list[str] = typer.Option(None, "--dim", help="DIMENSION=ADAPTER (repeatable); omit to reuse a stored soup."),
    vector: list[str] = typer.Option(None, "--vector", help="NAME=WEIGHT: build the soup for this vector and time it."),
    prompt: str | None = typer.Option(None, "--prompt", help="Generate an answer with the soup for --vector."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Tokens to generate for --prompt."),
    model: str | None = ModelOption,
    threads: int = ThreadsOption,
) -> None:
    """Define a preference soup (one adapter per dimension); optionally build it for a vector and generate."""
    from pllm.adapt.pool import shared_pool
    from pllm.adapt.store import AdapterStore
    from pllm.align.serving import soup_for
    from pllm.align.soup import SoupSpec, SoupStore
    from pllm.align.store import parse_vector
    from pllm.models.base import Prompt

    soups, adapters = SoupStore(), AdapterStore()
    if dim:
        dims = {}
        for i, item in enumerate(dim):
            d, sep, a = item.partition("=")
            if not sep:
                raise InputError(f"expected DIMENSION=ADAPTER, got {item!r}", index=i, field="--dim")
            adapters.get_named(a.strip())
            dims[d.strip()] = a.strip()
        spec = SoupSpec(name=name, dimensions=dims)
        soups.save(spec)
        console.print(f"soup {name}: {json.dumps(dims)}")
    else:
        spec = soups.get(name)
    if not vector:
        return
    vec = parse_vector(vector)
    base = _load(model, threads)
    s = soup_for(shared_pool(base), spec, adapters)
    started = time.perf_counter()
    adapter = s.adapter_for(vec)
    console.print(f"built {adapter} for {json.dumps(vec)} in {time.perf_counter() - started:.3f} s")
    if prompt:
        out = s.pool.generator(adapter).generate([Prompt(text=prompt)], max_new_tokens=max_new_tokens)[0]
        console.print(out.text)


@app.command("judge")
def judge(
    dsp: Path = typer.Argument(..., help="DSP domain_specific_preference.test.json."),
    out: Path = typer.Option(..., "--out", help="Folder to save the fitted judge in."),
    max_words: int | None = typer.Option(None, "--max-words", help="Fit and judge on the first N words only."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Held-out share of queries."),
    seed: int = typer.Option(0, "--seed", help="Split seed (use the importer's)."),
    embedder: str = typer.Option("minilm", "--embedder", help="Embedder name (centroid and embed-lr judges)."),
    kind: str = typer.Option("auto", "--kind", help="Style classifier: centroid, embed-lr, tfidf-lr, or auto "
                             "(chosen by cross-validation over train queries)."),
) -> None:
    """Fit the style judge on train-query answers; print held-out accuracy."""
    from pllm.align.importers import read_dsp
    from pllm.align.judge import STYLE_CLASSIFIERS, fit_dsp_judge

    if kind != "auto":
        STYLE_CLASSIFIERS.get(kind)  # an unknown kind fails before any answer is read
    with progress_bar() as progress:
        progress.add_task("fitting the judge", total=None)
        j, acc = fit_dsp_judge(read_dsp(dsp), kind=kind, embedder=embedder, max_words=max_words,
                               test_fraction=test_fraction, seed=seed)
    j.save(out)
    chosen = (" (cross-validated: " + ", ".join(f"{k}={v:.3f}" for k, v in j.selection.items()) + ")"
              if j.selection else "")
    console.print(f"{j.kind} judge saved to {out}{chosen}; held-out accuracy {acc.accuracy:.3f} on {acc.n} answers; "
                  "per style " + ", ".join(f"{k}={v:.3f}" for k, v in acc.per_label.items()))


@app.command("eval")
def eval_(
    user_id: str = typer.Argument(..., help="User whose held-out pairs are scored."),
    adapter: str | None = typer.Option(None, "--adapter", help="DPO adapter (default: the one serving the user)."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many held-out pairs."),
    beta: float = typer.Option(0.1, "--beta", help="Implicit-reward beta."),
    judge_dir: Path | None = typer.Option(None, "--judge", help="Style judge folder: also judge generations."),
    target: str | None = typer.Option(None, "--target", help="Style the user prefers (default: the vector's top)."),
    n_generate: int = typer.Option(10, "--n-generate", help="Held-out prompts to generate for the judge."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Tokens per generated answer."),
    max_tokens: int = typer.Option(96, "--max-tokens", help="Prompt/answer token budget for scoring."),
    model: str | None = ModelOption,
    threads: int = ThreadsOption,
    db: str | None = DbOption,
) -> None:
    """Held-out preference accuracy (implicit reward ranks chosen above rejected), optionally style share."""
    from pllm.adapt.pool import shared_pool
    from pllm.adapt.store import AdapterStore
    from pllm.align.config import TrainSettings
    from pllm.align.dpo import truncate_pairs
    from pllm.align.evaluate import generate_answers, implicit_rewards, style_share
    from pllm.align.judge import StyleJudge
    from pllm.align.serving import generator_for_user

    with open_db(db) as store:
        ps = _pstore(store)
        pairs = ps.get_pairs(user_id=user_id, split="test", limit=limit)
        if not pairs:
            raise InputError(f"user {user_id!r} has no held-out (test) pairs")
        vec = ps.get_vector(user_id=user_id)
        # The adapter, the judge and its target are checked before the model loads.
        record = AdapterStore().get_named(adapter) if adapter else None
        j = StyleJudge.load(judge_dir) if judge_dir is not None else None
        goal = target or (max(vec, key=vec.get) if vec else None)
        if j is not None and goal is None:
            raise InputError("give --target: the user has no preference vector")
        base = _load(model, threads)
        pool = shared_pool(base)
        policy: Generator
        if record is not None:
            policy = pool.generator(pool.load(record))
        else:
            policy = generator_for_user(store, base, user_id=user_id)
            if policy is base:
                raise InputError(f"user {user_id!r} has no aligned model (adapter, soup or RiC); give --adapter")
    budget = TrainSettings(max_prompt_tokens=max_tokens, max_answer_tokens=max_tokens)
    pairs = truncate_pairs(pairs, base, budget)
    with progress_bar() as progress:
        progress.add_task(f"scoring {len(pairs)} pairs", total=None)
        rewards = implicit_rewards(policy, pool.generator(None), pairs, beta=beta)
    acc = rewards.accuracy
    result = {"user": user_id, "policy": policy.model_id, "pairs": len(pairs), "preference_accuracy": acc.__dict__,
              "mean_margin": float(rewards.margins.mean())}
    if j is not None and goal is not None:
        prompts = list(dict.fromkeys(p.prompt for p in pairs))[:n_generate]
        texts = generate_answers(policy, prompts, max_new_tokens=max_new_tokens)
        result["style_share"] = {"target": goal, "n": len(texts), **style_share(j.predict(texts), goal).__dict__}
    console.print_json(json.dumps(result))


@app.command("report")
def report(
    dsp: Path = typer.Option(..., "--dsp", help="DSP domain_specific_preference.test.json."),
    out: Path = typer.Option(Path("docs/results/alignment"), "--out", help="Folder for report.md/json/png."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (smoke run, not for the committed report)."),
    threads: int = ThreadsOption,
) -> None:
    """Run the committed alignment report on the embedded model (see docs/alignment.md for sizes)."""
    from pllm.align.report import ReportConfig, run_report

    cfg = ReportConfig.quick(dsp) if quick else ReportConfig(dsp=dsp)
    cfg.threads = threads
    result = run_report(cfg, out, log=lambda msg: err_console.print(msg))
    console.print(f"wrote {out}/report.md ({result['total_seconds']:.0f} s)")
