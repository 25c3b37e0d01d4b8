"""Training task, group and user adapters with peft on an `HFGenerator`'s model.

The loop is a plain AdamW loop over (prompt, target) pairs: prompts are left-padded exactly as
`HFGenerator.score` pads them, the loss is the target tokens' cross-entropy only (the tokens label
scoring reads), and only the last few positions' logits are computed (the targets sit at the end of a
left-padded batch), which skips most of the large vocabulary projection. The adapter is injected into
the generator's model for training and removed (`unload`) afterwards, so the base weights the next
user trains on are the same weights.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pllm.adapt.config import AdaptConfig
from pllm.adapt.data import TrainingPair, pairs_hash, select_items, training_pairs
from pllm.adapt.methods import get_method
from pllm.adapt.store import AdapterRecord, AdapterStore, adapter_name, slug
from pllm.errors import ArtifactError, InputError
from pllm.io import sha1_text
from pllm.models.hf import HFGenerator
from pllm.prompting.profile import ItemCrowd
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem

log = logging.getLogger(__name__)
TRAIN_NAME = "default"  # peft saves the "default" adapter at the folder root; loaders rename it
TRAINING_TEXTS = "training_texts.jsonl"
CHECKPOINT_EVERY = 25  # steps between resumable checkpoints of a long training run


@dataclass
class TrainResult:
    losses: list[float]
    seconds: float
    n_pairs: int
    steps: int


def base_key(generator: HFGenerator, task_record: AdapterRecord | None = None) -> str:
    """Identity of the weights adapters are trained on: model id + architecture (+ merged task adapter)."""
    model = generator.model.get_base_model() if hasattr(generator.model, "get_base_model") else generator.model
    n_params = sum(p.numel() for p in model.parameters())
    parts = [generator.model_id, model.config.to_json_string(use_diff=False), str(n_params)]
    if task_record is not None:
        parts.append(task_record.data_hash)
    return sha1_text(*parts)[:20]


def merge_task_adapter(generator: HFGenerator, record: AdapterRecord) -> None:
    """Fold the shared task adapter into the generator's base weights (OPPU's merged task PEFT)."""
    from peft import PeftModel

    if hasattr(generator.model, "peft_config"):
        raise ArtifactError("merge the task adapter before any other adapter is loaded")
    if get_method(record.method).prompt_learning:
        raise ArtifactError(f"a {record.method} task adapter (soft tokens) cannot be merged into the base weights; "
                            "train the task adapter with a weight method (lora, ia3)")
    peft_model = PeftModel.from_pretrained(generator.model, str(record.path), adapter_name=TRAIN_NAME)
    generator.model = peft_model.merge_and_unload()
    generator.model.eval()


def _encode(generator: HFGenerator, pairs: Sequence[TrainingPair]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target, and how many trailing tokens are the target (the loss positions).

    The boundary is found as `HFGenerator.score` finds it, so training and scoring see the same tokens."""
    out = []
    for i, pair in enumerate(pairs):
        _, parts = generator.split_continuations(pair.prompt, [pair.target])
        k, full = parts[0]
        if len(full) - k < 1:
            raise InputError("training target encodes to no tokens", index=i, field="target")
        out.append((full, len(full) - k))
    return out


def _batch(generator: HFGenerator, rows: Sequence[tuple[list[int], int]]
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    ids, mask = generator.left_pad([r[0] for r in rows])  # (B, T), (B, T)
    keep = max(n for _, n in rows) + 1
    labels = torch.full((len(rows), keep - 1), -100, dtype=torch.long, device=ids.device)  # (B, keep-1)
    for b, (full, n) in enumerate(rows):
        labels[b, keep - 1 - n:] = torch.tensor(full[-n:], dtype=torch.long)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos, labels, keep


def train_pairs(generator: HFGenerator, pairs: Sequence[TrainingPair], config: AdaptConfig, *,
                save: Callable[[Any, TrainResult], None], step_callback: Callable[[int, int], None] | None = None,
                checkpoint: Path | None = None, checkpoint_every: int | None = None) -> TrainResult:
    """Inject a fresh adapter into `generator.model`, train it on `pairs`, call `save(peft_model, result)`,
    and remove it again, leaving the base weights untouched.

    With `checkpoint` (a file named by the run's data hash), the adapter weights, optimizer state and losses
    are written there every `checkpoint_every` steps (default CHECKPOINT_EVERY), and a killed run started
    again continues from the last one: the batch schedule is fixed by the seed up front, so the resumed run
    takes the batches the uninterrupted one would have. The file is removed once the adapter is saved."""
    from peft import get_peft_model

    if not pairs:
        raise InputError("no training pairs")
    if hasattr(generator.model, "peft_config"):
        raise ArtifactError("the generator already holds peft adapters; train on a plain base model")
    rows = _encode(generator, pairs)
    base = generator.model
    method = config.adapter_method
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        peft_model = get_peft_model(copy.deepcopy(base) if method.full_weights else base,
                                    config.peft_config(getattr(base.config, "num_hidden_layers", None)),
                                    adapter_name=TRAIN_NAME)
    if method.full_weights:  # only the modules' trained copies learn; the placeholder LoRA stays zero
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(False)
    prompt_learning = method.prompt_learning
    named = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(list(named.values()), lr=config.effective_lr, weight_decay=0.0)
    schedule = _schedule(len(rows), config)
    every = checkpoint_every or CHECKPOINT_EVERY
    losses: list[float] = []
    step = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(state["params"][n])
        opt.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])
        log.info("resuming %s at step %d of %d", checkpoint.name, step, len(schedule))
    extra, _ = generator.forward_params()
    t0 = time.perf_counter()
    peft_model.train()
    try:
        while step < len(schedule):
            batch = [rows[i] for i in schedule[step]]
            ids, mask, pos, labels, keep = _batch(generator, batch)
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
            if not prompt_learning:  # peft ignores position ids under prompt tuning (inference too)
                kwargs["position_ids"] = pos
            if "logits_to_keep" in extra:
                kwargs["logits_to_keep"] = keep
            logits = peft_model(**kwargs).logits[:, -keep:-1, :].float()  # (B, keep-1, V)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                     ignore_index=-100)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()), 5))
            step += 1
            if checkpoint is not None and step % every == 0 and step < len(schedule):
                _write_checkpoint(checkpoint, named, opt, step, losses)
            if step_callback:
                step_callback(step, len(schedule))
        peft_model.eval()
        result = TrainResult(losses=losses, seconds=time.perf_counter() - t0, n_pairs=len(pairs), steps=len(losses))
        save(peft_model, result)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    finally:
        peft_model.eval()
        if prompt_learning or method.full_weights:  # (full: the trained copy is dropped with peft_model)
            generator.model = base
        else:
            generator.model = peft_model.unload()  # the LoRA/IA3 layers out, the original modules back
        generator.model.eval()
    return result


def _schedule(n_rows: int, config: AdaptConfig) -> list[list[int]]:
    """Every step's row indexes, fixed by the seed: shuffled once per epoch, cut at `max_steps`."""
    order = list(range(n_rows))
    rng = random.Random(config.seed)
    steps_per_epoch = (n_rows + config.batch_size - 1) // config.batch_size
    total = config.max_steps or steps_per_epoch * config.epochs
    out: list[list[int]] = []
    while len(out) < total:
        rng.shuffle(order)
        out += [order[s:s + config.batch_size] for s in range(0, n_rows, config.batch_size)]
    return out[:total]


def _write_checkpoint(path: Path, named: dict[str, torch.Tensor], opt: torch.optim.Optimizer, step: int,
                      losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"params": {n: p.detach().clone() for n, p in named.items()}, "optimizer": opt.state_dict(),
                "step": step, "losses": losses}, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint whole


def write_training_texts(path: Any, pairs: Sequence[TrainingPair]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps({"item": p.item_id, "prompt": p.prompt.text, "chat": p.prompt.chat,
                                 "target": p.target}, ensure_ascii=False) + "\n")


def data_hash(pairs: Sequence[TrainingPair], config: AdaptConfig, extra: str = "") -> str:
    """What decides whether an existing adapter is up to date: the exact training texts, the recipe."""
    return sha1_text(pairs_hash(pairs), json.dumps(config.hash_fields(), sort_keys=True), extra)


def _sample_items(items_by_user: dict[str, Sequence[ProfileItem]], config: AdaptConfig,
                  max_pairs: int | None) -> tuple[dict[str, set[str]], int]:
    """(user -> ids of the items that become training pairs, how many items were eligible): each user's
    latest `max_items`, sampled (seeded) to `max_pairs` over all users before any prompt is rendered."""
    candidates = [(user, item.id) for user, items in sorted(items_by_user.items())
                  for item in select_items(items, config)]
    n_eligible = len(candidates)
    if max_pairs is not None and len(candidates) > max_pairs:
        candidates = random.Random(config.seed).sample(candidates, max_pairs)
    out: dict[str, set[str]] = {}
    for user, item_id in candidates:
        out.setdefault(user, set()).add(item_id)
    return out, n_eligible


def train_adapter(generator: HFGenerator, spec: TaskSpec, *, kind: str, owner: str,
                  items_by_user: dict[str, Sequence[ProfileItem]], config: AdaptConfig, store: AdapterStore,
                  task_record: AdapterRecord | None = None, source: dict[str, Any] | None = None,
                  centroid: list[float] | None = None, embedder: str | None = None, max_pairs: int | None = None,
                  force: bool = False, step_callback: Callable[[int, int], None] | None = None,
                  crowd: ItemCrowd | None = None, store_task: str | None = None) -> tuple[AdapterRecord, bool]:
    """Train (or skip, if up to date) one adapter; returns (record, trained?). `crowd`: other users' outputs
    per item, for a recipe with collaborative context; `store_task`: the store's task key (default the
    spec's name; learned methods' private adapters are filed under their task adapter's, `pllm.adapt.private`).

    A user adapter gets `{user: items}`; a group or task adapter every member's items (pairs are
    rendered per member, so retrieved demonstrations never cross users)."""
    chosen, n_items = _sample_items(items_by_user, config, max_pairs)
    pairs: list[TrainingPair] = []
    for user, items in sorted(items_by_user.items()):
        if chosen.get(user):
            pairs.extend(training_pairs(spec, generator, items, config, user_id=user, only=chosen[user],
                                        crowd=crowd))
    return fit_adapter(generator, spec, pairs, kind=kind, owner=owner, config=config, store=store, n_items=n_items,
                       members=sorted(items_by_user) if kind != "user" else [], task_record=task_record,
                       source=source, centroid=centroid, embedder=embedder, force=force, step_callback=step_callback,
                       store_task=store_task)


def fit_adapter(generator: HFGenerator, spec: TaskSpec, pairs: Sequence[TrainingPair], *, kind: str, owner: str,
                config: AdaptConfig, store: AdapterStore, n_items: int, members: list[str],
                task_record: AdapterRecord | None = None, source: dict[str, Any] | None = None,
                centroid: list[float] | None = None, embedder: str | None = None, force: bool = False,
                step_callback: Callable[[int, int], None] | None = None,
                store_task: str | None = None) -> tuple[AdapterRecord, bool]:
    """Train (or find up to date) one adapter on rendered pairs, cached by their content, the recipe and the
    base weights, and resumable from a checkpoint; returns (record, trained?). It is filed under `store_task`
    (default: the spec's name)."""
    if not pairs:
        raise InputError(f"{kind} adapter {owner!r}: no training items")
    task = store_task or spec.name
    key = base_key(generator, task_record)
    digest = data_hash(pairs, config, key)
    if not force:
        try:
            existing = store.get(task, kind, owner)
        except ArtifactError as exc:  # a broken folder is retrained, not trusted
            log.warning("retraining: %s", exc)
            existing = None
        if existing is not None and not existing.stale and existing.data_hash == digest and existing.base_key == key:
            return existing, False
    name = adapter_name(kind, owner)
    records: list[AdapterRecord] = []

    def save(peft_model: Any, result: TrainResult) -> None:
        # Written while the adapter is still injected: peft saves it from the live model.
        record = AdapterRecord(
            kind=kind, task=task, owner=owner, name=name, method=config.method, base_model=generator.model_id,
            base_key=key, config=asdict(config), data_hash=digest, n_items=n_items, n_pairs=len(pairs),
            train_seconds=round(result.seconds, 3), losses=result.losses, members=members, centroid=centroid,
            embedder=embedder, source=source or {})
        def files(tmp: Any) -> None:
            # (full fine-tuning: its placeholder LoRA on the output head must not save the head's weights)
            peft_model.save_pretrained(str(tmp), selected_adapters=[TRAIN_NAME],
                                       **({"save_embedding_layers": False} if config.adapter_method.full_weights
                                          else {}))
            if kind != "user":  # shared adapters keep the texts they learned from, to audit what they saw
                write_training_texts(tmp / TRAINING_TEXTS, pairs)

        records.append(store.write(record, files))

    # A run killed mid-training resumes from its checkpoint, named by what it trains on (data, recipe, base).
    checkpoint = store.root / ".checkpoints" / f"{slug(task)}-{kind}-{slug(owner)}-{digest[:16]}.pt"
    train_pairs(generator, pairs, config, save=save, step_callback=step_callback, checkpoint=checkpoint)
    return records[0], True
