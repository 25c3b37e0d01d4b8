"""Per-user / per-group DPO: trl's `DPOTrainer` on a LoRA adapter over the base model, the reference
being the same model with the adapter disabled (trl's behaviour when given a `peft_config`).

Training runs on a private copy of the base model (peft injects layers into the modules it wraps), so
the caller's generator is never changed. Answers and prompts are cut to a token budget first: DSP
answers run to hundreds of tokens and CPU training cost grows with sequence length.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pllm.adapt.store import AdapterRecord, AdapterStore, named_record
from pllm.align.config import DPOSettings, TrainSettings
from pllm.align.store import PreferencePair
from pllm.errors import InputError
from pllm.io import to_jsonable
from pllm.models.hf import HFGenerator

log = logging.getLogger(__name__)

def truncate_pairs(pairs: Sequence[PreferencePair], base: HFGenerator, settings: TrainSettings
                   ) -> list[PreferencePair]:
    """Pairs cut to the token budgets (in the base model's tokenizer); pairs that become equal are dropped,
    since they carry no preference."""
    out = []
    for p in pairs:
        prompt = base.truncate_to_tokens(p.prompt, settings.max_prompt_tokens)
        chosen = base.truncate_to_tokens(p.chosen, settings.max_answer_tokens)
        rejected = base.truncate_to_tokens(p.rejected, settings.max_answer_tokens)
        if chosen.strip() and rejected.strip() and chosen != rejected:
            out.append(PreferencePair(id=p.id, prompt=prompt, chosen=chosen, rejected=rejected,
                                      query_id=p.query_id, split=p.split, meta=p.meta))
    return out


def _conversational(base: HFGenerator) -> bool:
    return bool(getattr(base.tokenizer, "chat_template", None))


def dpo_rows(pairs: Sequence[PreferencePair], base: HFGenerator) -> list[dict[str, Any]]:
    """trl rows: conversational (the chat template the generator renders with) when the model has one."""
    if _conversational(base):
        return [{"prompt": [{"role": "user", "content": p.prompt}],
                 "chosen": [{"role": "assistant", "content": p.chosen}],
                 "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    return [{"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected} for p in pairs]


def trainer_args(cls: Any, settings: TrainSettings, output_dir: str, base: HFGenerator, **extra: Any) -> Any:
    """trl config for CPU-friendly LoRA training: fp32, no checkpoints, no reporters, no grad checkpointing;
    trl trains on the device `base` sits on (CPU, or its GPU)."""
    return cls(output_dir=output_dir, use_cpu=base.device.type == "cpu", bf16=False, fp16=False,
               gradient_checkpointing=False, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
               seed=settings.seed, per_device_train_batch_size=settings.batch_size, num_train_epochs=settings.epochs,
               max_steps=settings.max_steps, learning_rate=settings.learning_rate, dataloader_num_workers=0,
               **extra)


def build_dpo_trainer(base: HFGenerator, pairs: Sequence[PreferencePair], settings: DPOSettings,
                      output_dir: str, callbacks: list[Any] | None = None) -> Any:
    """A ready `DPOTrainer` over a private copy of `base` (exposed so tests can inspect it before training)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = dpo_rows(truncate_pairs(pairs, base, settings), base)
    if not rows:
        raise InputError("no usable preference pairs to train on (none given, or all empty after truncation)")
    max_length = settings.max_prompt_tokens + settings.max_answer_tokens + 32  # + chat-template tokens
    args = trainer_args(DPOConfig, settings, output_dir, base, beta=settings.beta, max_length=max_length)
    model = copy.deepcopy(base.model)
    model.train()
    return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=base.tokenizer, peft_config=settings.lora.peft_config(),
                      callbacks=callbacks)


@dataclass
class TrainResult:
    record: AdapterRecord
    seconds: float
    n_rows: int
    log: list[dict[str, Any]]


def _threads(n: int) -> Callable[[], None]:
    import torch

    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    return lambda: torch.set_num_threads(old)


def save_trained(trainer: Any, store: AdapterStore, record: AdapterRecord, settings: TrainSettings) -> AdapterRecord:
    """Write the trained adapter with its training settings in its record, atomically, as a named owner."""
    record.config = to_jsonable(settings)
    return store.write(record, lambda tmp: trainer.model.save_pretrained(str(tmp)))


def train_dpo(base: HFGenerator, pairs: Sequence[PreferencePair], *, name: str, users: Sequence[str],
              settings: DPOSettings | None = None, store: AdapterStore | None = None,
              callbacks: list[Any] | None = None) -> TrainResult:
    """Train one DPO adapter on `pairs` (one user's, or a group's pooled) and store it as `name`."""
    settings = settings or DPOSettings()
    store = store or AdapterStore()
    restore = _threads(settings.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="pllm-dpo-") as out:
            trainer = build_dpo_trainer(base, pairs, settings, out, callbacks=callbacks)
            n_rows = len(trainer.train_dataset)
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
            logs = [dict(x) for x in trainer.state.log_history]
            last = next((x for x in reversed(logs) if "rewards/margins" in x), {})
            metrics = {"train_seconds": seconds, "train_pairs": n_rows, "steps": trainer.state.global_step,
                       "final_rewards_margin": last.get("rewards/margins"),
                       "final_rewards_accuracy": last.get("rewards/accuracies"), "final_loss": last.get("loss")}
            record = save_trained(trainer, store, named_record(name, "dpo", base.model_id, users=users,
                                                               metrics=metrics), settings)
    finally:
        restore()
    return TrainResult(record=record, seconds=seconds, n_rows=n_rows, log=logs)
