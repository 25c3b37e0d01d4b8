"""How often the judge agrees with known truth: for a `persona-chat-reply` question, the user's real
next utterance (A) against another user's reply from another conversation (B), shown with the same
dialogue context and the same profile. A judge that reads the profile should prefer A."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pllm.errors import InputError
from pllm.judge.judge import Judge, JudgeConfig, Verdict, Vote, summarize_verdicts
from pllm.models.base import Generator, device_label
from pllm.stats import Interval
from pllm.types import Question

TASK = "persona-chat-reply"


def known_truth_pairs(questions: list[Question], n_pairs: int, seed: int = 0) -> list[tuple[Question, str, str]]:
    """(question, real reply, another user's reply) for up to `n_pairs` questions, seeded."""
    usable = [q for q in questions if q.target]
    if len(usable) < 2:
        raise InputError("need at least two questions with targets to make known-truth pairs")
    rng = random.Random(seed)
    picked = rng.sample(usable, min(n_pairs, len(usable)))
    pairs = []
    for q in picked:
        other = rng.choice(usable)
        while other.user_id == q.user_id:
            other = rng.choice(usable)
        pairs.append((q, str(q.target), str(other.target)))
    return pairs


def persona_questions(source: str | Path | None, seed: int = 0) -> list[Question]:
    """Test questions of the `persona-chat-reply` builder (user split) over the shared data."""
    from pllm.data import BUILDERS, BuildConfig

    if source is None:
        here = Path(__file__).resolve()
        for base in [Path.cwd(), *here.parents]:
            for c in (base.parent / "shared" / "data" / "synthetic-persona-chat",
                      base / "shared" / "data" / "synthetic-persona-chat"):
                if c.is_dir():
                    source = c
                    break
            if source is not None:
                break
    if source is None:
        raise InputError("synthetic-persona-chat not found: pass --persona-data")
    builder = BUILDERS.get(TASK)()
    return builder.questions(BuildConfig(source=str(source), out="-", split="user", seed=seed))["test"]


def known_truth_agreement(generator: Generator, *, source: str | Path | None = None, n_pairs: int = 200,
                          seed: int = 0, config: JudgeConfig | None = None, checkpoint: str | Path | None = None,
                          progress: Callable[[str, int, int], None] | None = None,
                          score_missing: bool = True) -> dict[str, Any]:
    """Agreement rate (real reply wins both orders) with a bootstrap interval, tie and loss rates."""
    from pllm.tasks.spec import get_task

    spec = get_task(TASK)
    config = config or JudgeConfig(retriever="bm25", k=4, input_field="context")
    judge = Judge(generator, config, spec=spec)
    pairs = known_truth_pairs(persona_questions(source, seed), n_pairs, seed)
    ckpt = Path(checkpoint) if checkpoint else None
    done: dict[str, dict[str, Any]] = {}
    if ckpt and ckpt.is_file():
        for line in ckpt.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                done[rec["id"]] = rec
            except (json.JSONDecodeError, KeyError):
                continue
    verdicts: list[Verdict] = []
    device = device_label(generator)
    devices: Counter[str] = Counter()
    fh = ckpt.open("a", encoding="utf-8") if ckpt else None
    try:
        for i, (q, real, other) in enumerate(pairs):
            if q.id in done:
                rec = done[q.id]
                verdicts.append(Verdict(rec["winner"], [Vote(**v) for v in rec["votes"]], rec["unparseable"],
                                        rec["seconds"]))
                devices.update([rec["device"]] if rec.get("device") else [])
            elif score_missing:
                v = judge.compare(q, real, other)
                verdicts.append(v)
                devices.update([device] if device else [])
                if fh:
                    fh.write(json.dumps({"id": q.id, "winner": v.winner, "unparseable": v.unparseable,
                                         "seconds": v.seconds, "votes": [vars(x) for x in v.votes],
                                         **({"device": device} if device else {})}) + "\n")
                    fh.flush()
            if progress:
                progress("judge", i + 1, len(pairs))
    finally:
        if fh:
            fh.close()
    if not verdicts:
        return {"task": TASK, "n": 0}
    summary = summarize_verdicts(verdicts)
    wins = np.array([v.winner == "A" for v in verdicts], dtype=float)
    rng = np.random.default_rng(seed)
    samples = [wins[rng.integers(0, len(wins), len(wins))].mean() for _ in range(1000)]
    lo, hi = np.quantile(samples, [0.025, 0.975])
    agreement = Interval(float(wins.mean()), float(lo), float(hi))
    # With likelihood margins, summing both orders' log-odds for the real reply cancels a constant
    # position bias: the share of pairs where that sum favours the real reply.
    margins = [sum(v.margin for v in verdict.votes if v.margin is not None) for verdict in verdicts
               if all(v.margin is not None for v in verdict.votes)]
    debiased = float(np.mean([m > 0 for m in margins])) if margins else None
    return {"task": TASK, "n": summary.n, "judge_model": generator.model_id, "readout": judge.mode,
            "config": judge.describe(), "agreement": {"value": agreement.value, "low": agreement.low,
                                                      "high": agreement.high, "fmt": agreement.fmt()},
            **{k: v for k, v in summary.as_dict().items() if k != "n"},
            "debiased_margin_agreement": debiased, "debiased_pairs": len(margins),
            "seconds_per_pair": float(np.mean([v.seconds for v in verdicts])), "devices": dict(devices.most_common())}
