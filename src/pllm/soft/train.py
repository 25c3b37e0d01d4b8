"""Training the soft-prompt user encoder: the generator stays frozen, only the encoder learns, with the
task's next-token loss on each training question's target, read after prompts rendered exactly as at
inference (same PromptBuilder and style, optionally with retrieved items for soft + retrieval)."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pllm.errors import InputError
from pllm.models.hf import HFGenerator
from pllm.pipeline import MethodConfig, Personalizer
from pllm.prompting.profile import ItemCrowd
from pllm.retrieval.embedders import EMBEDDERS, Embedder, EmbeddingCache, load_embedder
from pllm.soft.model import (
    POOLINGS,
    SoftConfig,
    SoftPromptGenerator,
    UserEncoder,
    generator_hidden_size,
    save_soft_encoder,
)
from pllm.tasks.spec import TaskSpec
from pllm.types import Question

Progress = Callable[[str, int, int], None]


@dataclass
class SoftTrainConfig:
    """How one encoder is trained; saved (with the encoder's SoftConfig) beside the weights."""

    n_tokens: int = field(default=4, metadata={"help": "User soft tokens."})
    pooling: str = field(default="attention", metadata={"help": "attention|mean pooling over history items."})
    instruction: bool = field(default=True, metadata={"help": "Add a learned task-level instruction vector."})
    embedder: str = field(default="minilm", metadata={"help": "Item/query embedder (EMBEDDERS)."})
    epochs: int = field(default=1, metadata={"help": "Passes over the training questions."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (encoder parameters only)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=8, metadata={"help": "Questions per optimizer step."})
    max_users: int | None = field(default=None, metadata={
        "help": "Train on at most this many training users (sampled with the seed)."})
    seed: int = field(default=0, metadata={"help": "Seed for user sampling, shuffling and initialization."})
    retriever: str = field(default="none", metadata={
        "help": "Retrieval in the training prompts (none: soft alone; bm25: train for soft + bm25)."})
    k: int = field(default=4, metadata={"help": "Items retrieved when a retriever is used."})
    style: str | None = field(default=None, metadata={"help": "Prompt style (default per task, as at inference)."})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "Prompt budget in generator tokens."})
    max_items: int = field(default=256, metadata={"help": "Most recent profile items the encoder reads."})
    attn_dim: int = field(default=128, metadata={"help": "Attention projection size."})
    mlp_hidden: int = field(default=512, metadata={"help": "Projector MLP hidden width."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    init_text: str | None = field(default=None, metadata={
        "help": "Soft vectors start as this text's token embeddings, the user signal is learned on top "
                "(default: the task's demonstration header or description)."})

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}", field="pooling")
        for name in ("n_tokens", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if self.max_users is not None and self.max_users < 1:
            raise InputError("max_users must be >= 1", field="max_users")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}", field="lr")
        EMBEDDERS.get(self.embedder)
        # The training prompts' method: an unknown retriever or style, or k=0 with a retriever, fails here.
        self.rendering()

    def rendering(self) -> MethodConfig:
        """The method whose prompts the encoder is trained under (and should be used with)."""
        return MethodConfig(retriever=self.retriever, k=self.k, style=self.style,
                            max_prompt_tokens=self.max_prompt_tokens)


@dataclass
class SoftTrainResult:
    path: Path
    n_users: int
    n_examples: int
    epoch_losses: list[float]
    epoch_seconds: list[float]
    step_losses: list[float] = field(default_factory=list)


@dataclass
class _Example:
    question: Question
    ids: list[int]  # prompt + target tokens
    n_target: int  # the last n_target ids are the target


def select_users(questions: Sequence[Question], max_users: int | None, seed: int) -> list[Question]:
    """All questions of up to `max_users` users sampled with `seed` (every user when None), in input order."""
    if any(q.target is None for q in questions):
        raise InputError("training questions need targets (pass the outputs file)")
    users = sorted({q.user_id for q in questions})
    if max_users is not None and max_users < len(users):
        users = random.Random(seed).sample(users, max_users)
    keep = set(users)
    return [q for q in questions if q.user_id in keep]


def build_examples(spec: TaskSpec, base: HFGenerator, questions: Sequence[Question], method: MethodConfig, *,
                   store: Any = None, crowd: ItemCrowd | None = None) -> list[_Example]:
    """Prompt + target token ids, rendered by the pipeline's own Personalizer under `method` (its retrieval,
    statistics and crowd lines, style and budget), as at inference."""
    pers = Personalizer(spec, base, method, store=store, crowd=crowd)
    out = []
    for q, built in zip(questions, pers.build_prompts(questions), strict=True):
        cont = built.continuation_prefix + str(q.target)
        _, [(k, full)] = base.split_continuations(built.prompt, [cont])
        if len(full) - k < 1:
            raise InputError(f"target {q.target!r} has no tokens", source=q.id, field="target")
        out.append(_Example(question=q, ids=full, n_target=len(full) - k))
    return out


def example_loss(gen: SoftPromptGenerator, batch: Sequence[_Example]) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens of a batch (prompt tokens carry no loss)."""
    soft = gen.soft_tokens([e.question for e in batch])  # (B, S, H), grad flows to the encoder
    keep = max(e.n_target for e in batch) + 1
    logits = gen.forward_logits(soft, [e.ids for e in batch], keep).float()  # (B, keep, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    terms = []
    for r, e in enumerate(batch):
        n = len(e.ids)
        for t in range(n - e.n_target, n):  # token ids[t] is predicted at kept index keep-1-(n-t)
            terms.append(logprobs[r, keep - 1 - (n - t), e.ids[t]])
    return -torch.stack(terms).mean()


def new_encoder(base: HFGenerator, config: SoftTrainConfig, spec: TaskSpec, embedder: Embedder) -> UserEncoder:
    """A fresh encoder whose soft vectors start as real token embeddings (of `init_text`), so the frozen
    LLM first reads them as a few ordinary words instead of noise; the user-dependent part starts small."""
    table = base.model.get_input_embeddings().weight.detach()  # (V, H)
    soft = SoftConfig(generator_model_id=base.model_id, generator_hidden_size=generator_hidden_size(base),
                      task=spec.name, embedder=config.embedder, embed_dim=embedder.dim, n_tokens=config.n_tokens,
                      pooling=config.pooling, instruction=config.instruction, attn_dim=config.attn_dim,
                      mlp_hidden=config.mlp_hidden, max_items=config.max_items,
                      init_std=float(table.float().std()))
    text = config.init_text or spec.demo_header or spec.description or spec.name
    ids = list(base.tokenizer(text, add_special_tokens=False)["input_ids"]) or [base.tokenizer.pad_token_id]
    ids = [ids[i % len(ids)] for i in range(soft.n_soft)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = UserEncoder(soft)
    start = table[ids].to(torch.float32)  # (n_soft, H)
    with torch.no_grad():
        if encoder.instruction is not None:
            encoder.instruction.copy_(start[:1])
            start = start[1:]
        last = encoder.mlp[2]
        assert isinstance(last, torch.nn.Linear)
        last.bias.copy_(start.reshape(-1))
        last.weight.mul_(0.1)
    return encoder


def train_soft_encoder(spec: TaskSpec, base: HFGenerator, questions: Sequence[Question], config: SoftTrainConfig,
                       out: str | Path, *, store: EmbeddingCache | None = None, embedder: Embedder | None = None,
                       progress: Progress | None = None, extra: dict[str, Any] | None = None,
                       method: MethodConfig | None = None, crowd: ItemCrowd | None = None) -> SoftTrainResult:
    """Train a user encoder on `questions` (training users only) and save it to `out`.

    Only encoder parameters are optimized (AdamW); the generator's parameters have requires_grad off
    during training and are never handed to the optimizer, so they cannot change. `extra` is added to the
    saved training log (what the caller built the questions from). `method` renders the training prompts
    instead of `config.rendering()` (a learned method's stats and crowd lines; `crowd`: its train split's).
    """
    if not isinstance(base, HFGenerator):
        raise InputError(f"soft prompting trains against a local transformers generator ('hf'), got {base.name!r}")
    chosen = select_users(questions, config.max_users, config.seed)
    if not chosen:
        raise InputError("no training questions")
    embedder = embedder if embedder is not None else load_embedder(config.embedder)
    encoder = new_encoder(base, config, spec, embedder)
    gen = SoftPromptGenerator(base, encoder, spec, embedder=embedder, cache=store)
    rendering = method if method is not None else config.rendering()
    examples = build_examples(spec, base, chosen, rendering, store=store, crowd=crowd)
    if progress:  # embed every history once up front (persisted in the store), so epochs time the model only
        for i, e in enumerate(examples):
            gen._item_matrix(e.question)
            if i % 16 == 0 or i == len(examples) - 1:
                progress("embed histories", i + 1, len(examples))
    else:
        for e in examples:
            gen._item_matrix(e.question)
    params = [p for p in encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    frozen = [(p, p.requires_grad) for p in base.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    base.model.eval()  # no dropout in the frozen model
    rng = random.Random(config.seed)
    epoch_losses, epoch_seconds, step_losses = [], [], []
    n_steps = (len(examples) + config.batch_size - 1) // config.batch_size
    try:
        encoder.train()
        for epoch in range(config.epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            t0, total, seen = time.perf_counter(), 0.0, 0
            for step in range(n_steps):
                batch = [examples[i] for i in order[step * config.batch_size:(step + 1) * config.batch_size]]
                loss = example_loss(gen, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                value = loss.item()
                step_losses.append(value)
                total += value * len(batch)
                seen += len(batch)
                if progress:
                    progress(f"epoch {epoch + 1}/{config.epochs}", step + 1, n_steps)
            epoch_seconds.append(time.perf_counter() - t0)
            epoch_losses.append(total / max(seen, 1))
    finally:
        encoder.eval()
        for p, flag in frozen:
            p.requires_grad_(flag)
    n_users = len({q.user_id for q in chosen})
    log = {"train_config": dataclasses.asdict(config), "rendering": dataclasses.asdict(rendering), "n_users": n_users,
           "n_examples": len(examples), "epoch_losses": epoch_losses, "epoch_seconds": epoch_seconds,
           "step_losses": step_losses, "torch_threads": torch.get_num_threads(), **(extra or {})}
    path = save_soft_encoder(encoder, spec, out, extra=log)
    return SoftTrainResult(path=path, n_users=n_users, n_examples=len(examples), epoch_losses=epoch_losses,
                           epoch_seconds=epoch_seconds, step_losses=step_losses)
