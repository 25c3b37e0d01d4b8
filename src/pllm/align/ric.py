"""Reward-conditioned prompting (Rewards-in-Context, Yang et al. 2024): fine-tune once with the target
preference scores written into the prompt, then at inference write the user's vector there. One shared
adapter serves every user; no per-user weights at all.

Training rows come from the preference store: for every user with a preference vector, each of their
training pairs gives (user's vector, prompt) -> chosen answer. The conditioning tag is rendered from
the vector (never parsed back): `<academy=1.00 business=0.00 ...>` on its own line before the prompt.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pllm.adapt.pool import AdapterPool, PoolGenerator
from pllm.adapt.store import AdapterRecord, AdapterStore, named_record
from pllm.align.config import RiCSettings
from pllm.align.dpo import TrainResult, _threads, save_trained, trainer_args
from pllm.align.store import PreferencePair, PreferenceStore, check_vector
from pllm.errors import InputError
from pllm.models.base import Prompt
from pllm.models.hf import HFGenerator


@dataclass
class RiCExample:
    vector: dict[str, float]
    prompt: str
    answer: str


def condition_tag(vector: dict[str, float], dimensions: Sequence[str], precision: int = 2) -> str:
    """`<a=1.00 b=0.00>` over `dimensions` in order (missing ones are 0), weights normalized to sum 1."""
    vec = check_vector(vector)
    unknown = sorted(set(vec) - set(dimensions))
    if unknown:
        raise InputError(f"the RiC model has no dimension(s) {unknown}; it has {list(dimensions)}")
    total = sum(vec.get(d, 0.0) for d in dimensions)
    return "<" + " ".join(f"{d}={vec.get(d, 0.0) / total:.{precision}f}" for d in dimensions) + ">"


def conditioned(text: str, vector: dict[str, float], dimensions: Sequence[str], precision: int = 2) -> str:
    return f"{condition_tag(vector, dimensions, precision)}\n{text}"


def ric_examples(pstore: PreferenceStore, users: Sequence[str], *, split: str = "train",
                 limit_per_user: int | None = None) -> tuple[list[RiCExample], list[str]]:
    """(examples, dimensions): each user's chosen answers, conditioned on that user's vector."""
    examples: list[RiCExample] = []
    dims: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for user in users:
        vec = pstore.get_vector(user_id=user)
        if vec is None:
            raise InputError(f"user {user!r} has no preference vector; set one first (pllm align set-vector)")
        for d in vec:
            if d not in dims:
                dims.append(d)
        pairs: list[PreferencePair] = pstore.get_pairs(user_id=user, split=split)
        n = 0
        for p in pairs:
            key = (repr(sorted(vec.items())), p.prompt, p.chosen)
            if key in seen:
                continue
            seen.add(key)
            examples.append(RiCExample(vector=vec, prompt=p.prompt, answer=p.chosen))
            n += 1
            if limit_per_user is not None and n >= limit_per_user:
                break
    if not examples:
        raise InputError(f"no training pairs for users {list(users)}")
    return examples, dims


def _sft_rows(examples: Sequence[RiCExample], dims: Sequence[str], base: HFGenerator,
              settings: RiCSettings) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    chat = bool(getattr(base.tokenizer, "chat_template", None))
    for ex in examples:
        prompt = conditioned(base.truncate_to_tokens(ex.prompt, settings.max_prompt_tokens), ex.vector, dims,
                             settings.precision)
        answer = base.truncate_to_tokens(ex.answer, settings.max_answer_tokens)
        if chat:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "completion": [{"role": "assistant", "content": answer}]})
        else:
            rows.append({"prompt": prompt, "completion": " " + answer})
    return rows


def train_ric(base: HFGenerator, examples: Sequence[RiCExample], dimensions: Sequence[str], *, name: str,
              users: Sequence[str], settings: RiCSettings | None = None,
              store: AdapterStore | None = None) -> TrainResult:
    """LoRA SFT (trl `SFTTrainer`, loss on the answer only) on vector-conditioned prompts."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    settings = settings or RiCSettings()
    store = store or AdapterStore()
    rows = _sft_rows(examples, dimensions, base, settings)
    restore = _threads(settings.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="pllm-ric-") as out:
            max_length = settings.max_prompt_tokens + settings.max_answer_tokens + 64
            args = trainer_args(SFTConfig, settings, out, base, max_length=max_length, completion_only_loss=True,
                                packing=False)
            model = copy.deepcopy(base.model)
            model.train()
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=base.tokenizer, peft_config=settings.lora.peft_config())
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
            logs = [dict(x) for x in trainer.state.log_history]
            last = next((x for x in reversed(logs) if "loss" in x), {})
            metrics = {"train_seconds": seconds, "train_rows": len(rows), "steps": trainer.state.global_step,
                       "final_loss": last.get("loss")}
            record = save_trained(trainer, store, named_record(name, "ric", base.model_id, users=users,
                                                               dimensions=dimensions, metrics=metrics), settings)
    finally:
        restore()
    return TrainResult(record=record, seconds=seconds, n_rows=len(rows), log=logs)


class RiCGenerator(PoolGenerator):
    """The shared RiC adapter with one user's vector written into every prompt."""

    name = "hf+ric"

    def __init__(self, pool: AdapterPool, record: AdapterRecord, vector: dict[str, float],
                 precision: int = 2) -> None:
        if record.method != "ric" or not record.dimensions:
            raise InputError(f"adapter {record.name!r} is not a RiC adapter (method {record.method!r})")
        super().__init__(pool, pool.load(record))
        self.dimensions = list(record.dimensions)
        self.vector = dict(vector)
        self.precision = precision
        condition_tag(self.vector, self.dimensions, precision)  # validate now, not at the first request

    def rewrite(self, prompt: Prompt) -> Prompt:
        """The tag before the text, and before the last user turn of a conversation (`Prompt.messages`, what
        chat templates render), where training put it."""
        messages = [dict(m) for m in prompt.messages or []]
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if users:
            last = messages[users[-1]]
            last["content"] = conditioned(last["content"], self.vector, self.dimensions, self.precision)
        return Prompt(text=conditioned(prompt.text, self.vector, self.dimensions, self.precision), chat=prompt.chat,
                      system=prompt.system, question=prompt.question, messages=messages or None)
