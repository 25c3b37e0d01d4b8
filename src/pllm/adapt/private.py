"""OPPU's second stage for learned methods (`ft+user+<method>`): on top of the merged task model of
`ft+<method>` (`pllm.adapt.learned`), one small private LoRA per scored user, trained on that user's own
earlier items rendered with the very prompt the method asks at inference (same retriever over the user's
earlier items, same statistics and crowd lines), then each question is scored through its user's adapter.

What keeps answers out: a user's training texts come from the items that precede *every* one of their scored
questions (`private_history`: the items all their profiles share), so no question's target, and no item
later than one of their questions, is ever trained on. Each text's own history is the user's strictly
earlier items, as for the task adapter (`training_pairs`).

Artifacts: the private adapters are ordinary per-user adapter records (kind "user", owner = the user id) of
the one `AdapterStore`, filed under the task adapter's own task key (`private_task`: `<task>+<task adapter
owner>`), so they never replace the per-user adapters of `pllm adapt train` on the bare model, and `pllm users
forget` deletes them as it deletes those. Their base model is the merged copy's identity (`<model>+ft-<task
adapter hash>`, `learned_model_id`), so loading one onto the bare model, or onto a copy merged with another task
adapter, is an `ArtifactError` naming the adapter folder. They are cached by content (the user's training
texts, the recipe and that base identity: `fit_adapter`'s data hash), so a rerun reuses them; a user's history
that grew retrains their adapter in place. Serving goes through the one routing engine, `AdapterGenerator` (its
`AdapterPool`) over the merged copy, with the users this job trained pinned (`users=`).

Users with fewer than `min_items` items get no private adapter and run on the task model alone; they are
counted (`PrivateResult.fallback`) and reported with the cell.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pllm.adapt.config import AdaptConfig
from pllm.adapt.data import TrainingPair, select_items, sort_items, training_pairs
from pllm.adapt.generator import AdapterGenerator
from pllm.adapt.learned import fit_layers, ft_config, learned_model_id
from pllm.adapt.store import AdapterRecord, AdapterStore, slug
from pllm.adapt.train import fit_adapter
from pllm.errors import ArtifactError, InputError
from pllm.io import save_config
from pllm.models.base import Generator
from pllm.models.hf import HFGenerator
from pllm.pipeline import MethodConfig
from pllm.prompting.profile import ItemCrowd
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem, Question

RECIPE_FILE = "private_recipe.json"  # beside the private adapters of one task adapter


@dataclass
class PrivateRecipe:
    """How each user's private adapter is trained: small (a user has tens of items, and there is one adapter
    per user), on the same top layers as the task adapter, a couple of passes over the user's latest items."""

    r: int = field(default=8, metadata={"help": "LoRA rank of each private adapter (the task adapter's is 16)."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    top_layers: int | None = field(default=12, metadata={
        "help": "LoRA on the top N layers: the task adapter's layers (None: all)."})
    epochs: int = field(default=2, metadata={"help": "Passes over the user's training texts."})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate (the task adapter's)."})
    batch_size: int = field(default=4, metadata={"help": "Texts per optimizer step."})
    max_texts: int = field(default=16, metadata={
        "help": "At most this many texts per user: their latest items, each rendered with all earlier items as "
                "its history (the cost of a user's adapter is about proportional to it)."})
    min_items: int = field(default=10, metadata={
        "help": "Users with fewer items get no private adapter: they run on the task model alone (counted)."})
    seed: int = field(default=0, metadata={"help": "Seed for adapter init and text order."})

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "epochs", "batch_size", "max_texts", "min_items"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}", field="lr")

    def adapt_config(self, spec: TaskSpec, method: MethodConfig) -> AdaptConfig:
        """The training recipe: this one's sizes with the method's rendering (retrieval, stats, crowd, style)."""
        return ft_config(spec, method, r=self.r, alpha=self.alpha, top_layers=self.top_layers, epochs=self.epochs,
                         lr=self.lr, batch_size=self.batch_size, max_items=self.max_texts, min_items=self.min_items,
                         seed=self.seed)


@dataclass
class PrivateResult:
    """The private adapters of one job: who has one, who fell back to the task model, and what it cost."""

    task: str  # the store's task key they are filed under (`private_task`)
    recipe: PrivateRecipe
    records: dict[str, AdapterRecord]  # user -> their private adapter
    fallback: list[str]  # users below min_items: the task model alone
    trained: list[str]  # users whose adapter was trained by this job (the others were found up to date)

    def summary(self) -> dict[str, Any]:
        """What a report records about the second stage."""
        seconds = [r.train_seconds for u, r in self.records.items() if u in self.trained]
        cached = [r.train_seconds for u, r in self.records.items() if u not in self.trained]
        every = seconds + cached
        return {"private_task": self.task, "private_recipe": asdict(self.recipe),
                "private_users": len(self.records), "private_fallback_users": len(self.fallback),
                "private_trained_now": len(self.trained), "private_reused": len(self.records) - len(self.trained),
                "private_texts_mean": round(statistics.mean([r.n_pairs for r in self.records.values()]), 2)
                if self.records else 0.0,
                "private_train_seconds_total": round(sum(every), 1),
                "private_train_seconds_mean": round(statistics.mean(every), 2) if every else 0.0,
                "private_train_seconds_median": round(statistics.median(every), 2) if every else 0.0}


def private_task(spec: TaskSpec, task_record: AdapterRecord) -> str:
    """The store's task key of the private adapters trained on top of one task adapter."""
    return f"{spec.name}+{task_record.owner}"


def private_history(questions: Sequence[Question]) -> dict[str, list[ProfileItem]]:
    """Each user's items that precede every one of their questions (the items all their profiles share), oldest
    first. With one question per user that is their profile; with several, an item only a later question's
    profile holds (possibly an earlier question's answer) is left out. Targets are never read."""
    shared: dict[str, dict[str, ProfileItem]] = {}
    for q in questions:
        items = {i.id: i for i in q.profile}
        if q.user_id not in shared:
            shared[q.user_id] = items
        else:
            shared[q.user_id] = {k: v for k, v in shared[q.user_id].items() if k in items}
    return {u: sort_items(items.values()) for u, items in shared.items()}


def private_texts(generator: Generator, spec: TaskSpec, config: AdaptConfig, user_id: str,
                  items: Sequence[ProfileItem], *, crowd: ItemCrowd | None = None) -> list[TrainingPair]:
    """One user's training texts: their latest `max_texts` items, each rendered by the pipeline with the user's
    strictly earlier items as its history (and the train split's crowd for the item, this user left out)."""
    return training_pairs(spec, generator, items, config, user_id=user_id, crowd=crowd)


def train_private(generator: Generator, spec: TaskSpec, method: MethodConfig, questions: Sequence[Question], *,
                  task_record: AdapterRecord, store: AdapterStore, recipe: PrivateRecipe | None = None,
                  crowd: ItemCrowd | None = None, force: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> PrivateResult:
    """Train (or find up to date) the private adapter of every user of `questions` on `generator`, the merged
    copy of `task_record` (`learned_generator`); `crowd`: the train split's, as at inference."""
    if not isinstance(generator, HFGenerator):
        raise InputError(f"private adapters train a local transformers model; backend {generator.name!r} has none",
                         field="backend")
    if generator.model_id != learned_model_id(task_record.base_model, task_record):
        raise ArtifactError(f"private adapters are trained on the model merged with task adapter {task_record.path} "
                            f"(learned_generator), not on {generator.model_id!r}")
    recipe = recipe or PrivateRecipe()
    config = fit_layers(generator, recipe.adapt_config(spec, method))
    task = private_task(spec, task_record)
    histories = private_history(questions)
    records: dict[str, AdapterRecord] = {}
    fallback, trained = [], []
    users = sorted(histories)
    source = {"task_adapter": str(task_record.path), "task_adapter_data_hash": task_record.data_hash}
    for n, user in enumerate(users):
        items = histories[user]
        if len(items) < config.min_items:
            fallback.append(user)
        else:
            pairs = private_texts(generator, spec, config, user, items, crowd=crowd)
            # The base identity is the copy's model id, which names the merged task adapter (base_key hashes it).
            record, now = fit_adapter(generator, spec, pairs, kind="user", owner=user, config=config, store=store,
                                      n_items=len(select_items(items, config)), members=[], source=source,
                                      force=force, store_task=task)
            records[user] = record
            if now:
                trained.append(user)
        if progress:
            progress(n + 1, len(users))
    result = PrivateResult(task=task, recipe=recipe, records=records, fallback=fallback, trained=trained)
    save_config(recipe, store.root / slug(task), RECIPE_FILE)
    return result


def private_generator(generator: Generator, result: PrivateResult, *, store: AdapterStore) -> AdapterGenerator:
    """The merged copy routing each question to its user's private adapter (users without one: the task model),
    through the one routing engine. The copy's model is wrapped in place: do not share it with other cells."""
    if not isinstance(generator, HFGenerator):
        raise InputError(f"private adapters need a local 'hf' generator, got {type(generator).__name__}",
                         field="backend")
    return AdapterGenerator(generator, result.task, store=store, mode="user", merge_task=False,
                            cold_start_items=0, users=result.records)
