"""Per-user artifacts written the way `pllm adapt`, `pllm align` and `pllm soft` write them (their public store
functions), with random weights instead of training: fast, and distinct from the base model."""

from __future__ import annotations

from pathlib import Path

import torch

from pllm.adapt.store import AdapterRecord, AdapterStore, adapter_name, named_record
from pllm.adapt.train import base_key
from pllm.models.hf import HFGenerator
from pllm.soft.model import SoftConfig, UserEncoder, save_soft_encoder
from pllm.tasks.spec import get_task
from pllm_testkit import random_lora

TASK = "persona-chat-reply"


def save_adapt_adapter(base: HFGenerator, adapters: AdapterStore, owner: str, seed: int, *, kind: str = "user",
                       members: tuple[str, ...] = ()) -> AdapterRecord:
    """A `pllm adapt` adapter (folder + record + store rows) for `owner`, on `base`'s weights."""
    model = random_lora(base, seed)
    record = AdapterRecord(kind=kind, task=TASK, owner=owner, name=adapter_name(kind, owner), method="lora",
                           base_model=base.model_id, base_key=base_key(base), config={"min_items": 0},
                           data_hash=f"random-{seed}", n_items=0, n_pairs=0, train_seconds=0.0, losses=[],
                           members=list(members))
    return adapters.write(record, lambda tmp: model.save_pretrained(str(tmp)))


def save_align_adapter(base: HFGenerator, name: str, seed: int, *, users: list[str], kind: str = "dpo",
                       dimensions: list[str] | None = None) -> Path:
    """A `pllm align` adapter (a named owner of the default adapter store) trained for `users`; its folder."""
    model = random_lora(base, seed)
    record = named_record(name, kind, base.model_id, users=users, dimensions=dimensions or [])
    written = AdapterStore().write(record, lambda tmp: model.save_pretrained(str(tmp)))
    assert written.path is not None
    return written.path


def save_soft(base: HFGenerator, path: Path, *, embedder: str, embed_dim: int) -> SoftConfig:
    """An untrained `pllm soft` encoder for `base` (random init; the server only needs its shapes)."""
    config = SoftConfig(generator_model_id=base.model_id, generator_hidden_size=base.model.config.hidden_size,
                        task=TASK, embedder=embedder, embed_dim=embed_dim, n_tokens=2, attn_dim=8, mlp_hidden=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = UserEncoder(config)
    save_soft_encoder(encoder, get_task(TASK), path)
    return config
