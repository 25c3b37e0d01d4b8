"""Learned personalization at task level (`ft+<method>`): one shared LoRA trained on the train split's
users with the exact rendering inference uses, retrieved demonstrations included (RAG-aware training:
the model learns to read the user's items), then merged into a copy of the base model for every user.
This is OPPU's first stage and LaMP's fine-tuned-with-retrieval setting.

What keeps test answers out: training texts are built from the train split's questions' *profiles*
only (`user_items` never reads a question's target); with a user split those are other users, with a
time split they are each user's items before their train question, earlier than any dev or test target.
The texts are saved beside the adapter (`training_texts.jsonl`), and a test plants a marker in test
targets and checks it is not there.

Artifacts are cached by content: the adapter is retrained only when the sampled training texts, the
recipe or the base model change (`train_adapter`'s data hash), so a rerun or a resumed bench reuses it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pllm.adapt.config import AdaptConfig, check_recipe_overrides
from pllm.adapt.data import user_items
from pllm.adapt.store import AdapterRecord, AdapterStore
from pllm.adapt.train import merge_task_adapter, train_adapter
from pllm.errors import ArtifactError, InputError
from pllm.io import sha1_text
from pllm.models.base import Generator
from pllm.pipeline import MethodConfig
from pllm.prompting.profile import ItemCrowd
from pllm.prompting.styles import default_style
from pllm.retrieval.base import retriever_reads_train
from pllm.tasks.spec import TaskSpec
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.models.hf import HFGenerator

# The task-level recipe measured in docs/results/learned: LoRA on the top 12 layers (of SmolLM2's 30: the
# backward pass stops there, about half the cost of a full step on 2 cores), one epoch.
FT_DEFAULTS: dict[str, Any] = {"method": "lora", "r": 16, "alpha": 32, "top_layers": 12, "epochs": 1, "lr": 2e-3,
                               "max_items": 100, "min_items": 1}
FT_PAIRS = 1200


def ft_config(spec: TaskSpec, learned: MethodConfig, /, **overrides: Any) -> AdaptConfig:
    """The training recipe of a learned method: its retrieval and style inside every training prompt
    (`overrides` may name the adapter `method`, e.g. 'full')."""
    values = {**FT_DEFAULTS, **overrides, "retriever": learned.retriever if learned.k else "none", "k": learned.k,
              "stats": learned.stats, "crowd": learned.crowd,
              "style": learned.style or default_style(spec), "max_prompt_tokens": learned.max_prompt_tokens}
    return AdaptConfig(**values)


def fit_layers(generator: Generator, config: AdaptConfig) -> AdaptConfig:
    """The recipe on this model: a model with fewer layers than `top_layers` trains every layer."""
    layers = getattr(getattr(generator, "model", None), "config", None)
    n = getattr(layers, "num_hidden_layers", None)
    return dataclasses.replace(config, top_layers=n) if config.top_layers and n and config.top_layers > n else config


def ft_recipe(spec: TaskSpec, method: MethodConfig, overrides: Mapping[str, Any] | None = None) -> AdaptConfig:
    """The recipe of a learned method with a grid's `ft_recipe` overrides (a layer or module sweep) applied;
    keys outside `AdaptConfig`, or those the method decides (retrieval, prompt), are refused."""
    check_recipe_overrides(overrides or {})
    return ft_config(spec, method, **dict(overrides or {}))


def recipe_variant(config: AdaptConfig, default: AdaptConfig) -> str:
    """'' for the default recipe, else `-v<hash>` of the recipe: a sweep's adapters get their own names."""
    if config == default:
        return ""
    return f"-v{sha1_text(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str))[:6]}"


def ft_owner(method: MethodConfig, model_id: str, train: Sequence[Question] = (), variant: str = "") -> str:
    """One task adapter per retrieval setting, base model and train split (`ft-bm25@4-<model>-s<hash>`), so
    learning on a second model or another split of the task (the main job's user split beside a bench's time
    split) never overwrites the first's; the rest of the rendering (style, prompt budget) is in the recipe,
    whose change retrains it. Readout and calibration do not, nor a private second stage (`ft+user+`): it sits on
    top of this same task adapter. The split is named by its users' profile item ids, which a forgotten user's
    store rows do not change (the file keeps them), so a stale adapter is found and rebuilt under its name."""
    plain = dataclasses.replace(method.task_adapter_method(), ft=False)
    owner = f"ft-{plain.label}-{model_id}{variant}"
    if not train:
        return owner
    ids = sorted({(q.user_id, p.id) for q in train for p in q.profile})
    return f"{owner}-s{sha1_text(json.dumps(ids))[:8]}"


def train_learned(generator: Generator, spec: TaskSpec, method: MethodConfig, train: Sequence[Question], *,
                  store: AdapterStore, config: AdaptConfig | None = None, max_pairs: int = FT_PAIRS,
                  source: dict[str, Any] | None = None, force: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> tuple[AdapterRecord, bool]:
    """Train (or find up to date) the task adapter of `ft+<method>` on the train split's users."""
    if not hasattr(generator, "tokenizer") or not hasattr(generator, "model"):
        raise InputError(f"learned methods train a local transformers model; backend {generator.name!r} has none",
                         field="backend")
    if not train:
        raise InputError(f"learned method {method.label!r} needs a train split (train_questions.json) to learn "
                         f"from; task {spec.name!r} has none here", field="train")
    default = fit_layers(generator, ft_config(spec, method))
    config = fit_layers(generator, config) if config is not None else default
    items = user_items(train)  # profiles only: a question's target is never read
    # Collaborative context and retrieval read the train split's other users (targets included): never a test
    # target.
    crowd = ItemCrowd(spec).fit(train) if config.crowd or retriever_reads_train(config.retriever) else None
    owner = ft_owner(method, generator.model_id, train, recipe_variant(config, default))
    existing = store.get(spec.name, "task", owner, verify=False)
    if existing is not None and existing.stale:
        # A member was forgotten: their id left `members`, but the train file may still hold their items.
        # The rebuild keeps to the remaining members (new users in the file wait for a fresh folder).
        members = set(existing.members)
        items = {u: v for u, v in items.items() if u in members}
    return train_adapter(generator, spec, kind="task", owner=owner, items_by_user=items,  # type: ignore[arg-type]
                         config=config, store=store, source=source or {}, max_pairs=max_pairs,
                         force=force, step_callback=progress, crowd=crowd)


def learned_model_id(model_id: str, record: AdapterRecord) -> str:
    """The identity of the merged copy: the base model and the task adapter folded into it. Adapters trained
    on the copy (OPPU's private second stage) record it as their base model, so loading one onto the bare base
    model, or onto a copy merged with another task adapter, is refused by name."""
    return f"{model_id}+ft-{record.data_hash[:12]}"


def learned_generator(generator: Generator, spec: TaskSpec, record: AdapterRecord) -> HFGenerator:
    """A copy of `generator` with the task adapter merged, named `learned_model_id`; the original stays the bare
    model."""
    if record.task != spec.name:
        raise ArtifactError(f"adapter {record.path} was trained for task {record.task!r}, not {spec.name!r}")
    if record.base_model != generator.model_id:
        raise ArtifactError(f"adapter {record.path} was trained on {record.base_model!r}, not "
                            f"{generator.model_id!r}; train it for this model")
    from pllm.models.hf import HFGenerator

    if not isinstance(generator, HFGenerator):
        raise InputError(f"learned methods run a local transformers model; backend {generator.name!r} has none",
                         field="backend")
    clone = generator.private_copy(learned_model_id(generator.model_id, record))
    merge_task_adapter(clone, record)
    return clone
