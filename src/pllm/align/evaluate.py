"""Evaluation of aligned models.

Preference accuracy: DPO's implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)); a held-out
pair counts as correct when r(chosen) > r(rejected). The reference is the same model with adapters off.
Style share: how often a user's generated answer is judged (by `StyleJudge`) to be in the user's
preferred style. Both come with bootstrap confidence intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pllm.align.store import PreferencePair
from pllm.models.base import Generator, Prompt
from pllm.stats import Interval, proportion_interval


@dataclass
class RewardResult:
    chosen: np.ndarray  # (N,) implicit reward of each chosen answer
    rejected: np.ndarray  # (N,)

    @property
    def margins(self) -> np.ndarray:
        return self.chosen - self.rejected

    @property
    def accuracy(self) -> Interval:
        return proportion_interval(self.margins > 0)


def pair_logprobs(gen: Generator, pairs: Sequence[PreferencePair], *, batch_size: int = 8) -> np.ndarray:
    """(N, 2) log-likelihood of each pair's chosen and rejected answer under `gen` (as given: truncate first).
    The reference's are computed once and shared by every policy compared on the same pairs."""
    if not pairs:
        return np.zeros((0, 2))
    prompts = [Prompt(text=p.prompt) for p in pairs]
    cands = [[" " + p.chosen, " " + p.rejected] if not _chat(gen) else [p.chosen, p.rejected] for p in pairs]
    return np.asarray(gen.score(prompts, cands, batch_size=batch_size))


def implicit_rewards(policy: Generator, reference: Generator | np.ndarray, pairs: Sequence[PreferencePair], *,
                     beta: float = 0.1, batch_size: int = 8) -> RewardResult:
    """beta * (log pi - log pi_ref) of each pair's chosen and rejected answer (as given: truncate first).
    `reference` is the reference model, or its `pair_logprobs` on the same pairs."""
    lp = pair_logprobs(policy, pairs, batch_size=batch_size)
    lr = reference if isinstance(reference, np.ndarray) else pair_logprobs(reference, pairs, batch_size=batch_size)
    if lr.shape != lp.shape:
        raise ValueError(f"reference log-probabilities have shape {lr.shape}, the pairs need {lp.shape}")
    r = beta * (lp - lr)
    return RewardResult(chosen=r[:, 0], rejected=r[:, 1])


def _chat(gen: Generator) -> bool:
    base = getattr(getattr(gen, "pool", None), "base", gen)
    return bool(getattr(getattr(base, "tokenizer", None), "chat_template", None))


def style_share(predicted: Sequence[str], target: str) -> Interval:
    """Share of generations judged to be in `target` style, with a bootstrap interval."""
    return proportion_interval([p == target for p in predicted])


def generate_answers(gen: Generator, prompts: Sequence[str], *, max_new_tokens: int = 48,
                     batch_size: int = 8) -> list[str]:
    """Greedy answers to plain chat prompts."""
    outs = gen.generate([Prompt(text=p) for p in prompts], max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [o.text for o in outs]
