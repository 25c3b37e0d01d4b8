"""The committed alignment report on the embedded model (SmolLM2-135M-Instruct), DSP domains.

For each DSP domain: the share of generated answers (to held-out queries) that the style judge puts in
that domain, for the base model, the RiC model conditioned on the domain's one-hot vector, the soup at
that vector, and the domain's DPO adapter; preference accuracy on held-out pairs; and a Pareto plot of
two domains as the soup weight moves from 0 to 1. Everything is measured in the run that writes it.

Work files (store, adapters, judge) go to `work_dir` (default `pllm_home()/align/report-work`), so an
interrupted run resumes: stored adapters with the same config are reused.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pllm.adapt.pool import shared_pool
from pllm.adapt.store import AdapterStore
from pllm.align.config import DPOSettings, LoraSettings, RiCSettings
from pllm.align.dpo import train_dpo, truncate_pairs
from pllm.align.evaluate import generate_answers, implicit_rewards, pair_logprobs, style_share
from pllm.align.importers import DSP_DOMAINS, import_dsp, read_dsp
from pllm.align.judge import StyleJudge, dsp_answers, first_words, fit_dsp_judge
from pllm.align.ric import RiCGenerator, ric_examples, train_ric
from pllm.align.soup import Soup, SoupSpec, SoupStore
from pllm.align.store import PreferenceStore
from pllm.errors import InputError
from pllm.io import atomic_write_json, atomic_write_text, sha1_text
from pllm.paths import pllm_home
from pllm.stats import mean_interval
from pllm.users.store import SQLiteUserStore


@dataclass
class ReportConfig:
    dsp: Path = field(metadata={"help": "DSP domain_specific_preference.test.json."})
    domains: list[str] = field(default_factory=lambda: list(DSP_DOMAINS), metadata={"help": "Domains (users)."})
    # Sizes at which DPO, soups and RiC can separate from the base model (issue: 200+ pairs, 60+ queries).
    train_pairs_per_domain: int = field(default=200, metadata={"help": "DPO pairs per domain (first train pairs)."})
    ric_rows_per_domain: int = field(default=100, metadata={"help": "RiC SFT rows per domain."})
    test_prompts: int = field(default=64, metadata={"help": "Held-out queries answered by every model."})
    test_pairs_per_domain: int = field(default=100, metadata={"help": "Held-out pairs for preference accuracy."})
    max_new_tokens: int = field(default=32, metadata={"help": "Greedy tokens per generated answer."})
    judge_max_words: int = field(default=24, metadata={"help": "Judge fitted/applied on the first N words."})
    judge_kind: str = field(default="auto", metadata={
        "help": "Style classifier (pllm.align.judge.STYLE_CLASSIFIERS), or 'auto': chosen by cross-validation "
                "over train queries."})
    pareto_pair: list[str] = field(default_factory=lambda: ["academy", "entertainment"],
                                   metadata={"help": "Two domains for the soup Pareto plot."})
    pareto_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                        metadata={"help": "Weight of the first Pareto domain."})
    dpo: DPOSettings = field(default_factory=lambda: DPOSettings(
        epochs=2, batch_size=4, learning_rate=1e-3, beta=0.1, max_prompt_tokens=32, max_answer_tokens=48,
        lora=LoraSettings(r=8, alpha=16)), metadata={"help": "DPO settings (per domain)."})
    ric: RiCSettings = field(default_factory=lambda: RiCSettings(
        epochs=2, batch_size=4, learning_rate=1e-3, max_prompt_tokens=32, max_answer_tokens=48,
        lora=LoraSettings(r=8, alpha=16)), metadata={"help": "RiC settings."})
    judge_full_answers: bool = field(default=False, metadata={"help": "Also report the judge's accuracy on "
                                                                     "full-length held-out answers (slow on CPU)."})
    test_fraction: float = field(default=0.2, metadata={"help": "Held-out share of queries."})
    seed: int = field(default=0, metadata={"help": "Split seed."})
    threads: int = field(default=1, metadata={"help": "torch threads."})
    model: str | None = field(default=None, metadata={"help": "hf model (default: embedded SmolLM2-135M)."})
    work_dir: Path | None = field(default=None, metadata={"help": "Work folder (default under PLLM_HOME)."})
    machine_note: str = field(default="", metadata={
        "help": "How the machine was shared while the report ran (and which parts ran in earlier, resumed "
                "processes): timings mean little without it."})

    def __post_init__(self) -> None:
        self.dsp = Path(self.dsp)
        if isinstance(self.dpo, dict):
            self.dpo = DPOSettings(**self.dpo)
        if isinstance(self.ric, dict):
            self.ric = RiCSettings(**self.ric)
        if len(self.pareto_pair) != 2 or not set(self.pareto_pair) <= set(self.domains):
            raise InputError(f"pareto_pair must be two of {self.domains}", field="pareto_pair")
        for name in ("train_pairs_per_domain", "ric_rows_per_domain", "test_prompts", "test_pairs_per_domain",
                     "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1", field=name)

    @classmethod
    def quick(cls, dsp: Path) -> ReportConfig:
        """Smoke-run sizes: minutes, numbers meaningless."""
        small: dict[str, Any] = dict(epochs=1, batch_size=2, learning_rate=1e-3, max_prompt_tokens=32,
                                     max_answer_tokens=32)
        return cls(dsp=dsp, train_pairs_per_domain=4, ric_rows_per_domain=4, test_prompts=2,
                   test_pairs_per_domain=4, max_new_tokens=8, pareto_weights=[0.0, 0.5, 1.0],
                   dpo=DPOSettings(**small), ric=RiCSettings(**small))


def _fmt(iv: dict[str, float]) -> str:
    return f"{iv['value']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def run_report(cfg: ReportConfig, out: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    from pllm.models import load_generator
    from pllm.models.base import device_label
    from pllm.models.hf import HFGenerator

    started = time.perf_counter()
    out = Path(out)
    work = Path(cfg.work_dir) if cfg.work_dir else pllm_home() / "align" / "report-work"
    work.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    queries = read_dsp(cfg.dsp)
    result: dict[str, Any] = {"config": json.loads(json.dumps(asdict(cfg), default=str)),
                              "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
                              "timings": {}}

    # 1. preferences in a private store
    store = SQLiteUserStore(work / "store.sqlite3")
    ps = PreferenceStore(store)
    import_dsp(ps, cfg.dsp, domains=cfg.domains, test_fraction=cfg.test_fraction, seed=cfg.seed)
    users = {d: f"dsp-{d}" for d in cfg.domains}

    # 2. style judge, checked on held-out real answers (cut to the judged length, and full)
    judge_key = sha1_text(cfg.judge_kind, str(cfg.judge_max_words), str(cfg.test_fraction), str(cfg.seed), cfg.dsp.name,
                          str(cfg.judge_full_answers))[:12]
    judge_dir = work / f"judge-{judge_key}"
    if (judge_dir / "heldout.json").is_file():
        judge = StyleJudge.load(judge_dir)
        result["judge"] = json.loads((judge_dir / "heldout.json").read_text())
        log("reusing style judge")
    else:
        log("fitting style judge")
        judge, acc = fit_dsp_judge(queries, kind=cfg.judge_kind, max_words=cfg.judge_max_words,
                                   test_fraction=cfg.test_fraction,
                                   seed=cfg.seed)
        result["judge"] = {"labels": judge.labels, "max_words": cfg.judge_max_words, "kind": judge.kind,
                           "description": judge.classifier.description, "cross_validated": judge.selection,
                           "heldout_accuracy_truncated": acc.__dict__, "heldout_accuracy_full_answers": None}
        if cfg.judge_full_answers:
            full_texts, full_labels = dsp_answers(queries, "test", test_fraction=cfg.test_fraction, seed=cfg.seed)
            full = judge.with_max_words(None)
            result["judge"]["heldout_accuracy_full_answers"] = full.accuracy(full_texts, full_labels).__dict__
        judge.save(judge_dir)
        atomic_write_json(judge_dir / "heldout.json", result["judge"])

    # 3. models: base, one DPO adapter per domain, one RiC adapter, the soup over the DPO adapters
    base = load_generator("hf", cfg.model)
    assert isinstance(base, HFGenerator)
    result["machine"]["device"] = device_label(base)
    adapters = AdapterStore(work / "adapters")
    pool = shared_pool(base)
    train_info: dict[str, Any] = {}
    for d in cfg.domains:
        name = f"report-dpo-{d}"
        pairs = ps.get_pairs(user_id=users[d], split="train", limit=cfg.train_pairs_per_domain)
        if _reusable(adapters, name, cfg.dpo, base.model_id):
            rec = adapters.get_named(name)
            log(f"reusing {name}")
        else:
            log(f"DPO {d}: {len(pairs)} pairs")
            rec = train_dpo(base, pairs, name=name, users=[users[d]], settings=cfg.dpo, store=adapters).record
        train_info[name] = rec.metrics
        pool.load(rec)
    ric_name = "report-ric"
    if _reusable(adapters, ric_name, cfg.ric, base.model_id):
        ric_rec = adapters.get_named(ric_name)
        log("reusing RiC adapter")
    else:
        examples, dims = ric_examples(ps, [users[d] for d in cfg.domains], limit_per_user=cfg.ric_rows_per_domain)
        log(f"RiC: {len(examples)} rows")
        ric_rec = train_ric(base, examples, dims, name=ric_name, users=list(users.values()), settings=cfg.ric,
                            store=adapters).record
    train_info[ric_name] = ric_rec.metrics
    result["training"] = train_info
    dpo_secs = [train_info[f"report-dpo-{d}"]["train_seconds"] / train_info[f"report-dpo-{d}"]["train_pairs"]
                for d in cfg.domains]
    result["timings"]["dpo_seconds_per_100_pairs_per_epoch"] = 100 * sum(dpo_secs) / len(dpo_secs) / cfg.dpo.epochs
    spec = SoupSpec(name="report-dsp", dimensions={d: f"report-dpo-{d}" for d in cfg.domains})
    SoupStore(work / "soups").save(spec)
    soup = Soup(pool, spec, adapters)

    # 4. held-out prompts (same queries for every model) and generation
    test_queries = [q for q in queries if _is_test(q.id, cfg)][: cfg.test_prompts]
    prompts = [base.truncate_to_tokens(q.query, cfg.dpo.max_prompt_tokens) for q in test_queries]
    gens: dict[str, list[str]] = {}
    gen_file = work / "generations.json"
    saved = json.loads(gen_file.read_text()) if gen_file.is_file() else {}
    gen_key = sha1_text(base.model_id, str(cfg.max_new_tokens), json.dumps(prompts),
                        json.dumps(asdict(cfg.dpo), default=str), json.dumps(asdict(cfg.ric), default=str),
                        str(cfg.train_pairs_per_domain), str(cfg.ric_rows_per_domain))

    def gen(key: str, g: Any) -> list[str]:
        if key not in gens:
            stored = saved.get(f"{gen_key}|{key}")
            if stored is not None:
                gens[key] = stored
            else:
                t0 = time.perf_counter()
                gens[key] = generate_answers(g, prompts, max_new_tokens=cfg.max_new_tokens)
                saved[f"{gen_key}|{key}"] = gens[key]
                atomic_write_json(gen_file, saved)  # resume point
                log(f"generated {key} ({time.perf_counter() - t0:.0f} s)")
        return gens[key]

    base_texts = gen("base", pool.generator(None))
    base_preds = judge.predict(base_texts)  # judged once, compared with every domain
    style: dict[str, Any] = {}
    for d in cfg.domains:
        onehot = {x: float(x == d) for x in cfg.domains}
        rows = {"ric": gen(f"ric-{d}", RiCGenerator(pool, ric_rec, onehot, cfg.ric.precision)),
                "soup": gen(f"soup-{d}", soup.generator(onehot)),
                "dpo": gen(f"dpo-{d}", pool.generator(f"report-dpo-{d}"))}
        judged = {"base": base_preds, **{m: judge.predict(t) for m, t in rows.items()}}
        hits = {m: [p == d for p in ps] for m, ps in judged.items()}
        style[d] = {m: {**style_share(ps, d).__dict__, "n": len(ps)} for m, ps in judged.items()}
        # Paired over the same prompts: each method's in-domain share minus the base model's.
        style[d]["vs_base"] = {m: mean_interval(np.subtract(h, hits["base"], dtype=float)).__dict__
                               for m, h in hits.items() if m != "base"}
        style[d]["soup_equals_dpo_outputs"] = rows["soup"] == rows["dpo"]
    result["style_share"] = style

    # 5. preference accuracy on held-out pairs (implicit reward, reference = adapters off)
    pref: dict[str, Any] = {}
    ref = pool.generator(None)
    for d in cfg.domains:
        onehot = {x: float(x == d) for x in cfg.domains}
        pairs = truncate_pairs(ps.get_pairs(user_id=users[d], split="test", limit=cfg.test_pairs_per_domain),
                               base, cfg.dpo)
        pols = {"dpo": pool.generator(f"report-dpo-{d}"), "soup": soup.generator(onehot),
                "ric": RiCGenerator(pool, ric_rec, onehot, cfg.ric.precision)}
        pref[d] = {}
        ref_logps = pair_logprobs(ref, pairs)  # scored once, shared by the three policies
        for m, pol in pols.items():  # RiC's policy reads the conditioned prompt, its reference the plain one
            r = implicit_rewards(pol, ref_logps, pairs, beta=cfg.dpo.beta)
            pref[d][m] = {"accuracy": r.accuracy.__dict__, "mean_margin": mean_interval(r.margins).__dict__,
                          "n": len(pairs)}
        log(f"preference accuracy {d}: " + ", ".join(f"{m}={v['accuracy']['value']:.2f}" for m, v in pref[d].items()))
    result["preference_accuracy"] = pref

    # 6. soup Pareto front between two domains, and the time to build a soup for a new vector
    a, b = cfg.pareto_pair
    front = []
    build_times = []
    for w in cfg.pareto_weights:
        vec = {a: w, b: 1.0 - w}
        t0 = time.perf_counter()
        name = soup.adapter_for(vec)
        if 0 < w < 1:
            build_times.append(time.perf_counter() - t0)
        key = f"soup-{b}" if w == 0 else f"soup-{a}" if w == 1 else f"pareto-{w}"  # one-hot ends: already made
        texts = gen(key, pool.generator(name))
        sims = judge.scores(texts)  # (N, L)
        ia, ib = judge.labels.index(a), judge.labels.index(b)
        preds = [judge.labels[i] for i in sims.argmax(axis=1)]  # judge.predict, from the scores already here
        front.append({"weight_" + a: w, f"mean_score_{a}": float(sims[:, ia].mean()),
                      f"mean_score_{b}": float(sims[:, ib].mean()),
                      f"share_{a}": style_share(preds, a).__dict__, f"share_{b}": style_share(preds, b).__dict__})
    result["pareto"] = {"pair": [a, b], "points": front}
    result["timings"]["soup_build_seconds_new_vector"] = (sum(build_times) / len(build_times)) if build_times else None
    result["examples"] = {k: [first_words(t, 30) for t in v[:2]] for k, v in gens.items() if not k.startswith("pareto")}
    result["total_seconds"] = time.perf_counter() - started
    store.close()

    out.mkdir(parents=True, exist_ok=True)
    plot_pareto(result, out / "pareto.png")
    atomic_write_json(out / "report.json", result)
    atomic_write_text(out / "report.md", render_markdown(result, cfg))
    return result


def _is_test(query_id: str, cfg: ReportConfig) -> bool:
    from pllm.align.store import query_split

    return query_split(query_id, test_fraction=cfg.test_fraction, seed=cfg.seed) == "test"


def _reusable(adapters: AdapterStore, name: str, settings: Any, model_id: str) -> bool:
    if not adapters.has_named(name):
        return False
    try:
        rec = adapters.get_named(name)
    except Exception:  # noqa: BLE001 - anything unreadable is simply retrained
        return False
    return rec.base_model == model_id and rec.config == json.loads(json.dumps(asdict(settings), default=str))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both), ordered
    along the front (x ascending): the line to draw, whatever order the weights came in."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def plot_pareto(result: dict[str, Any], path: Path) -> Path:
    """The soup's points for each weight of the two Pareto domains, the front joined by a line and the
    dominated points left unjoined, from report.json alone (so it can be redrawn without a model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = result["pareto"]["pair"]
    front = result["pareto"]["points"]
    pts = [(p[f"mean_score_{a}"], p[f"mean_score_{b}"]) for p in front]
    on = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.plot([pts[i][0] for i in on], [pts[i][1] for i in on], "o-", color="tab:blue", label="Pareto front")
    off = [i for i in range(len(pts)) if i not in on]
    if off:
        ax.plot([pts[i][0] for i in off], [pts[i][1] for i in off], "o", mfc="none", color="tab:gray",
                label="dominated")
    for p, (x, y) in zip(front, pts, strict=True):
        ax.annotate(f"w={p['weight_' + a]:.2f}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.margins(0.12)
    ax.set_xlabel(f"mean judge score for {a} (higher: more {a})")
    ax.set_ylabel(f"mean judge score for {b}", fontsize=9)
    model = (result.get("config") or {}).get("model") or "SmolLM2-135M"
    judge = result["judge"].get("kind", "centroid")
    ax.set_title(f"Soup of DPO adapters: {a} weight w, {b} weight 1-w\n({model}; judge: {judge})", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rerender(folder: str | Path, *, machine_note: str | None = None) -> dict[str, Any]:
    """Redraw pareto.png and rewrite report.md from a folder's report.json: no model is run. `machine_note`
    replaces the recorded note on how the machine was shared (report.json keeps it)."""
    folder = Path(folder)
    result = json.loads((folder / "report.json").read_text())
    if machine_note is not None:
        result["config"]["machine_note"] = machine_note
        atomic_write_json(folder / "report.json", result)
    plot_pareto(result, folder / "pareto.png")
    atomic_write_text(folder / "report.md", render_markdown(result, ReportConfig(**result["config"])))
    return result


def _where(machine: dict[str, Any]) -> str:
    """The device the model ran on and the torch CPU threads (timings mean little without both)."""
    device = machine.get("device") or "cpu"
    threads = f"{machine['cpu_threads']} torch CPU thread(s)"
    return f"{threads} of a CPU machine (may be shared)" if device == "cpu" else f"one {device} GPU, {threads}"


# The alignment targets the report is read against: held-out preference accuracy, and the share of answers
# judged in the user's domain (paired against the base model).
PREFERENCE_TARGET = 0.75
STYLE_TARGET_DOMAINS = 3


def target_lines(r: dict[str, Any]) -> list[str]:
    """One line per target, met or missed and by how much, from report.json alone."""
    pref, style = r["preference_accuracy"], r["style_share"]
    lines = []
    for m, label in (("dpo", "DPO adapter"), ("soup", "soup (one-hot)"), ("ric", "RiC (one-hot)")):
        acc = {d: row[m]["accuracy"] for d, row in pref.items()}
        met = [d for d, a in acc.items() if a["value"] >= PREFERENCE_TARGET and a["low"] > 0.5]
        lines.append(f"- {label}, held-out preference accuracy >= {PREFERENCE_TARGET} with the interval's low end "
                     f"above 0.5 in every domain: **{'met' if len(met) == len(acc) else 'missed'}** "
                     f"({len(met)} of {len(acc)} domains; lowest {min(a['value'] for a in acc.values()):.2f}).")
    if all("vs_base" in row for row in style.values()):
        for m, label in (("dpo", "DPO adapter"), ("soup", "soup (one-hot)"), ("ric", "RiC (one-hot)")):
            above = [d for d, row in style.items() if row["vs_base"][m]["low"] > 0]
            lines.append(f"- {label}, judged in the user's domain more often than the base model (paired interval "
                         f"above 0) in at least {STYLE_TARGET_DOMAINS} of {len(style)} domains: "
                         f"**{'met' if len(above) >= STYLE_TARGET_DOMAINS else 'missed'}** ({len(above)}"
                         f"{': ' + ', '.join(above) if above else ''}).")
    return lines


def render_markdown(r: dict[str, Any], cfg: ReportConfig) -> str:
    j = r["judge"]
    lines = [
        "# Alignment report: DSP domains on the embedded model",
        "",
        "Generated by `python benchmarks/align_report.py --dsp ../shared/data/dsp/domain_specific_preference.test.json`"
        f" in {r['total_seconds'] / 60:.1f} min on {_where(r['machine'])}. All numbers are as measured in that run; "
        "intervals are 95% percentile bootstrap.",
        *(["", f"Sharing: {cfg.machine_note}"] if cfg.machine_note else []),
        "",
        "## Sizes",
        "",
        f"- model: {cfg.model or 'SmolLM2-135M-Instruct (embedded)'}; greedy answers of {cfg.max_new_tokens} "
        "new tokens",
        f"- split by query, test fraction {cfg.test_fraction}, seed {cfg.seed}; "
        f"{cfg.test_prompts} held-out queries answered by every model",
        f"- DPO (trl, LoRA r={cfg.dpo.lora.r} alpha={cfg.dpo.lora.alpha} on {','.join(cfg.dpo.lora.target_modules)}): "
        f"{cfg.train_pairs_per_domain} train pairs per domain (domain answer over one other style), "
        f"{cfg.dpo.epochs:g} epochs, batch {cfg.dpo.batch_size}, lr {cfg.dpo.learning_rate:g}, beta {cfg.dpo.beta:g}, "
        f"prompts <= {cfg.dpo.max_prompt_tokens} and answers <= {cfg.dpo.max_answer_tokens} tokens",
        f"- RiC: one LoRA SFT adapter on {cfg.ric_rows_per_domain} rows per domain (the chosen answer, prompt "
        f"prefixed with the user's one-hot vector), {cfg.ric.epochs:g} epochs, lr {cfg.ric.learning_rate:g}",
        "- soup: the four DPO adapters combined by the vector (peft `add_weighted_adapter`, `cat`); a one-hot "
        "vector is that domain's adapter itself, so the soup and DPO rows must agree exactly",
        f"- held-out preference pairs: {cfg.test_pairs_per_domain} per domain, same truncation as training",
        "",
        "## Style judge",
        "",
        f"{j.get('description', 'Nearest centroid over all-MiniLM-L6-v2 embeddings')} (`{j.get('kind', 'centroid')}`"
        + (", chosen by 5-fold cross-validation over train queries: "
           + ", ".join(f"{k} {v:.3f}" for k, v in j["cross_validated"].items()) if j.get("cross_validated") else "")
        + f"), classes {', '.join(j['labels'])}, fitted on train-query "
        f"answers cut to their first {j['max_words']} words. Held-out accuracy: "
        f"**{j['heldout_accuracy_truncated']['accuracy']:.3f}** on {j['heldout_accuracy_truncated']['n']} answers cut "
        "the same way"
        + (f"; {j['heldout_accuracy_full_answers']['accuracy']:.3f} on the full answers"
           if j["heldout_accuracy_full_answers"] else "") + ". Per style (cut): "
        + ", ".join(f"{k} {v:.2f}" for k, v in j["heldout_accuracy_truncated"]["per_label"].items()) + ".",
        "",
        "## Share of generated answers judged in the user's domain",
        "",
        "| domain | base | RiC (one-hot) | soup (one-hot) | DPO adapter | soup == DPO outputs |",
        "|---|---|---|---|---|---|",
    ]
    for d, row in r["style_share"].items():
        lines.append(f"| {d} | {_fmt(row['base'])} | {_fmt(row['ric'])} | {_fmt(row['soup'])} | {_fmt(row['dpo'])} | "
                     f"{row['soup_equals_dpo_outputs']} |")
    if all("vs_base" in row for row in r["style_share"].values()):
        lines += ["", "Paired difference against the base model (same prompts; positive: judged in the user's "
                  "domain more often than the base model):", "", "| domain | RiC − base | soup − base | DPO − base |",
                  "|---|---|---|---|"]
        lines += [f"| {d} | " + " | ".join(f"{row['vs_base'][m]['value']:+.2f} [{row['vs_base'][m]['low']:+.2f}, "
                                           f"{row['vs_base'][m]['high']:+.2f}]" for m in ("ric", "soup", "dpo")) + " |"
                  for d, row in r["style_share"].items()]
    lines += ["", "## Held-out preference accuracy (implicit reward ranks chosen above rejected)", "",
              "Reward = beta * (log pi - log pi_ref), reference = the base model (adapters off); the base model "
              "itself has reward 0 for every answer, so it has no accuracy here.", "",
              "| domain | pairs | DPO adapter | soup (one-hot) | RiC (one-hot) |", "|---|---|---|---|---|"]
    for d, row in r["preference_accuracy"].items():
        lines.append(f"| {d} | {row['dpo']['n']} | {_fmt(row['dpo']['accuracy'])} | {_fmt(row['soup']['accuracy'])} | "
                     f"{_fmt(row['ric']['accuracy'])} |")
    a, b = r["pareto"]["pair"]
    pts = [(p[f"mean_score_{a}"], p[f"mean_score_{b}"]) for p in r["pareto"]["points"]]
    on = ", ".join(f"w={r['pareto']['points'][i]['weight_' + a]:.2f}" for i in pareto_front(pts))
    lines += ["", f"## Soup Pareto front: {a} vs {b}", "", "![pareto](pareto.png)", "",
              f"The line joins the Pareto front (weights no other weight beats on both mean scores): {on}.", "",
              f"| weight of {a} | mean score {a} | mean score {b} | share judged {a} | share judged {b} |",
              "|---|---|---|---|---|"]
    for p in r["pareto"]["points"]:
        lines.append(f"| {p['weight_' + a]:.2f} | {p[f'mean_score_{a}']:.3f} | {p[f'mean_score_{b}']:.3f} | "
                     f"{_fmt(p[f'share_{a}'])} | {_fmt(p[f'share_{b}'])} |")
    lines += ["", "## Against the targets (issue 19)", "", *target_lines(r)]
    t = r["timings"]
    lines += ["", f"## Timings (this run: {_where(r['machine'])})", "",
              f"- DPO training: {t['dpo_seconds_per_100_pairs_per_epoch']:.1f} s per 100 pairs per epoch",
              f"- building a soup for a new vector: {t['soup_build_seconds_new_vector']:.3f} s"
              if t["soup_build_seconds_new_vector"] is not None else "- soup build: not measured",
              "- training, per adapter: " + ", ".join(f"{name} {info['train_seconds']:.0f} s"
                                                     for name, info in r.get("training", {}).items()),
              "", "Training metrics per adapter are in `report.json` (`training`).", ""]
    return "\n".join(lines)
