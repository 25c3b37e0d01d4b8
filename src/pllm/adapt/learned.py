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

`ft+soft+<method>` puts PPlug's soft tokens on top (`train_learned_soft`): one user encoder, trained against the
frozen merged model on train-split items the task adapter did not train on, so it learns what the adapter has
not already fitted.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pllm.adapt.config import AdaptConfig, check_recipe_overrides
from pllm.adapt.data import item_question, sort_items, user_items
from pllm.adapt.store import AdapterRecord, AdapterStore, slug
from pllm.adapt.train import TRAINING_TEXTS, merge_task_adapter, train_adapter
from pllm.errors import ArtifactError, InputError
from pllm.io import sha1_text
from pllm.models.base import Generator
from pllm.pipeline import MethodConfig
from pllm.prompting.styles import default_style
from pllm.tasks.spec import TaskSpec
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.models.hf import HFGenerator
    from pllm.retrieval.embedders import EmbeddingCache
    from pllm.soft.model import SoftPromptGenerator
    from pllm.soft.train import SoftTrainConfig

# The task-level recipe measured in docs/results/learned: LoRA on the top 12 layers (of SmolLM2's 30: the
# backward pass stops there, about half the cost of a full step on 2 cores), one epoch.
FT_DEFAULTS: dict[str, Any] = {"method": "lora", "r": 16, "alpha": 32, "top_layers": 12, "epochs": 1, "lr": 2e-3,
                               "max_items": 100, "min_items": 1}
FT_PAIRS = 1200
SOFT_PAIRS = 800  # texts the soft stage's encoder trains on (a forward and backward through all 30 layers each)


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


def recipe_variant(config: AdaptConfig | SoftTrainConfig, default: AdaptConfig | SoftTrainConfig) -> str:
    """'' for the default recipe, else `-v<hash>` of the recipe: a sweep's adapters (and soft encoders) get their
    own names."""
    if config == default:
        return ""
    return f"-v{sha1_text(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str))[:6]}"


def ft_owner(method: MethodConfig, model_id: str, train: Sequence[Question] = (), variant: str = "") -> str:
    """One task adapter per retrieval setting, base model and train split (`ft-bm25@4-<model>-s<hash>`; `variant`
    names a recipe or sample size other than the default), so learning on a second model or another split of the
    task (the main job's user split beside a bench's time split) never overwrites the first's; the rest of the
    rendering (style, prompt budget) is in the recipe, whose change retrains it. Readout and calibration do not,
    nor a second stage (`ft+user+`, `ft+soft+`): it sits on top of this same task adapter. The split is named by
    its users' profile item ids, which a forgotten user's store rows do not change (the file keeps them), so a
    stale adapter is found and rebuilt under its name."""
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
    crowd = method.crowd_from(spec, train)
    # A sample size other than the default names its own adapter too, so a 2,400-text grid never overwrites the
    # 800-text adapter of the same recipe (both stay cached).
    size = f"-n{max_pairs}" if max_pairs != FT_PAIRS else ""
    owner = ft_owner(method, generator.model_id, train, recipe_variant(config, default) + size)
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


def adapter_items(record: AdapterRecord) -> set[str]:
    """Ids (`user/item`) of the items a task adapter's training texts were rendered from."""
    texts = Path(record.path) / TRAINING_TEXTS if record.path is not None else None
    if texts is None or not texts.is_file():
        return set()
    return {json.loads(line)["item"] for line in texts.read_text(encoding="utf-8").splitlines() if line}


def soft_questions(spec: TaskSpec, train: Sequence[Question], record: AdapterRecord, n: int, *, seed: int = 0
                   ) -> list[Question]:
    """`n` training questions for the soft stage: train-split profile items, each with the user's strictly earlier
    items as its history (which the encoder reads), sampled with `seed`. Items the task adapter's own texts do not
    hold come first, so the encoder learns what the adapter has not already fitted; a train split too small for
    that fills up with the adapter's. Like the adapter's texts they read profiles only, never a question's target,
    and only the task adapter's members' (a user forgotten since is left out even if the train file holds them)."""
    used = adapter_items(record)
    members = set(record.members)
    histories = {u: sort_items(v) for u, v in sorted(user_items(train).items()) if not members or u in members}
    pools: tuple[list[tuple[str, int]], list[tuple[str, int]]] = ([], [])
    for user, items in histories.items():
        for i, item in enumerate(items):
            if spec.output_of(item) is not None:
                pools[f"{user}/{item.id}" in used].append((user, i))
    if not pools[0] and not pools[1]:
        raise InputError(f"the soft stage of {spec.name!r} found no train-split item with an output to learn from",
                         field="train")
    rng, picked = random.Random(seed), list[tuple[str, int]]()
    for pool in pools:
        picked += rng.sample(pool, min(n - len(picked), len(pool)))
    return [item_question(spec, histories[u][i], histories[u][:i], u) for u, i in sorted(picked)]


SOFT_METHOD_DECIDED = ("retriever", "k", "style", "max_prompt_tokens")  # the rendering: the method's own


def soft_recipe(method: MethodConfig, overrides: Mapping[str, Any] | None = None) -> SoftTrainConfig:
    """The soft stage's recipe: `SoftTrainConfig` defaults with the method's embedder and prompt budget, and a
    grid's `soft_recipe` overrides (e.g. `{n_tokens: 8, epochs: 3}`); keys outside `SoftTrainConfig`, or those
    the method decides (its rendering), are refused by name."""
    from pllm.soft.train import SoftTrainConfig

    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(SoftTrainConfig)}
    bad = sorted(set(overrides) - (known - set(SOFT_METHOD_DECIDED)))
    if bad:
        raise InputError(f"soft_recipe cannot set {', '.join(bad)}: give SoftTrainConfig fields other than "
                         f"{', '.join(SOFT_METHOD_DECIDED)} (the method sets those)", field="soft_recipe")
    return SoftTrainConfig(**{"embedder": method.embedder, "max_prompt_tokens": method.max_prompt_tokens,
                              **overrides})


def train_learned_soft(learned: HFGenerator, spec: TaskSpec, method: MethodConfig, train: Sequence[Question], *,
                       record: AdapterRecord, store: AdapterStore, config: SoftTrainConfig | None = None,
                       max_pairs: int = SOFT_PAIRS, cache: EmbeddingCache | None = None,
                       progress: Callable[[str, int, int], None] | None = None
                       ) -> tuple[SoftPromptGenerator, dict[str, Any]]:
    """The soft stage of `ft+soft+<method>`: a user encoder trained (or found up to date) against `learned`, the
    merged copy of `record`, with the method's own rendering, wrapped around it. Cached beside the adapters under
    the task adapter's owner, by the content of what it learns from (the task adapter's data hash, the sampled
    texts, the recipe), so a task adapter rebuilt after a forgotten member retrains it under the same name."""
    from pllm.soft.model import load_soft_generator
    from pllm.soft.train import train_soft_encoder

    if not method.ft_soft:
        raise InputError(f"method {method.label!r} has no soft stage (ft+soft+...)", field="ft_soft")
    config = config or soft_recipe(method)
    questions = soft_questions(spec, train, record, max_pairs, seed=config.seed)
    rendering = dataclasses.replace(method.task_adapter_method(), ft=False)
    digest = sha1_text(record.data_hash, learned.model_id, rendering.label,
                       json.dumps(dataclasses.asdict(config), sort_keys=True, default=str),
                       *[f"{q.id}\x1e{q.target}" for q in questions])
    # A recipe or sample size other than the default is its own encoder, beside the default one (as for adapters).
    variant = recipe_variant(config, soft_recipe(method)) + (f"-n{max_pairs}" if max_pairs != SOFT_PAIRS else "")
    folder = store.root / slug(spec.name) / "soft" / slug(f"{record.owner}+soft{variant}")
    log_file = folder / "train_log.json"
    log = json.loads(log_file.read_text(encoding="utf-8")) if log_file.is_file() else {}
    trained = log.get("digest") != digest
    if trained:  # (the train split's crowd is fitted only for training: a cached encoder needs none)
        step = (lambda label, s, t: progress(f"soft stage {method.label}: {label}", s, t)) if progress else None
        crowd = method.crowd_from(spec, train)
        used = adapter_items(record)
        train_soft_encoder(spec, learned, questions, config, folder, store=cache, progress=step, method=rendering,
                           crowd=crowd, extra={"digest": digest, "task_adapter": str(record.path),
                                               "task_adapter_data_hash": record.data_hash,
                                               "unseen_by_adapter": sum(q.id not in used for q in questions)})
        log = json.loads(log_file.read_text(encoding="utf-8"))
    generator = load_soft_generator(folder, learned, store=cache)
    return generator, {"soft_encoder": str(folder), "soft_digest": digest, "soft_examples": log["n_examples"],
                       "soft_unseen_by_adapter": log["unseen_by_adapter"],
                       "soft_train_seconds": round(sum(log["epoch_seconds"]), 1), "soft_trained_now": trained,
                       "soft_epoch_losses": log["epoch_losses"], "soft_recipe": log["train_config"]}
