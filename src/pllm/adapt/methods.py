"""Adapter methods, registered by name in `ADAPTER_METHODS` and nowhere else (peft's `register_peft_method`).

A method says what it trains with (`config_cls`, a dataclass saved beside the adapter), how it trains
(`train_fn`) and what serving needs to know about its adapters, so trainers, generators and the CLI ask the
method instead of branching on its name:

- supervised peft methods (LoRA, IA3, prompt tuning) share `AdaptConfig` and the pair-training loop of
  `pllm.adapt.train`; they differ in `peft_config` (recipe -> peft config) and in the serving flags;
- alignment methods (DPO, RiC, soups, registered in `pllm.align.methods`) train with trl or combine stored
  adapters, and serve a user through `serve` in `serve_rank` order (the first that answers wins).

This module stays light (no torch, no peft at import): configs validate method names on construction.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pllm.adapt.config import AdaptConfig
from pllm.errors import InputError
from pllm.registry import Registry

if TYPE_CHECKING:
    from pllm.models.base import Generator


@dataclass(frozen=True)
class AdapterMethod:
    """One registered way to adapt a model."""

    name: str
    config_cls: type  # the recipe dataclass, saved beside every adapter it trained
    train_fn: Callable[..., Any]  # trains (and stores) one adapter
    prompt_learning: bool = False  # soft tokens: no position ids, one row at a time, never merged into weights
    # Full fine-tuning (peft's modules_to_save: trained copies of whole modules): it trains on a copy of the
    # base model, which peft's unload would leave changed, and only the module copies learn (the LoRA target
    # peft requires is a frozen zero placeholder, not saved as weights).
    full_weights: bool = False
    lr_scale: float = 1.0  # optimizer step relative to the recipe's `lr`
    layer_subset: bool = False  # supports `top_layers` (peft's layers_to_transform)
    peft_config: Callable[[AdaptConfig, dict[str, Any]], Any] | None = None  # supervised peft methods
    # Alignment methods: a user's generator from a request (`pllm.align.serving.ServeRequest`: the method
    # layer above this one defines what a request holds, so this registry does not import it).
    serve: Callable[..., Generator | None] | None = None
    serve_rank: int = 0  # order among serving methods (lower first)
    find: Callable[[str], object] | None = None  # an assignable adapter (or soup) by name; raises if missing


ADAPTER_METHODS: Registry[AdapterMethod] = Registry("adapter method")
BUILTIN_MODULES = ("pllm.align.methods",)  # built-in methods registered outside this module


def register_adapter_method(name: str, config_cls: type, train_fn: Callable[..., Any], *,
                            replace: bool = False, **options: Any) -> AdapterMethod:
    """Register an adapter method (see `AdapterMethod` for the options); duplicate names are refused. Whether
    its adapters run many users' rows in one pass is read from peft when they load (`pllm.adapt.pool`)."""
    if not isinstance(config_cls, type):
        raise InputError(f"adapter method {name!r}: config_cls must be a class, got {config_cls!r}")
    if not callable(train_fn):
        raise InputError(f"adapter method {name!r}: train_fn must be callable")
    method = AdapterMethod(name=name, config_cls=config_cls, train_fn=train_fn, **options)
    ADAPTER_METHODS.register(name, method, replace=replace)
    return method


def get_method(name: str) -> AdapterMethod:
    _load_builtins()
    return ADAPTER_METHODS.get(name)


def methods(*, config_cls: type | None = None) -> list[AdapterMethod]:
    """Registered methods (of one recipe class, if given), in name order."""
    _load_builtins()
    found = [ADAPTER_METHODS.get(n) for n in ADAPTER_METHODS.names()]
    return [m for m in found if config_cls is None or m.config_cls is config_cls]


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


# -- the supervised peft methods ------------------------------------------------------------------------
def _train_supervised(*args: Any, **kwargs: Any) -> Any:
    from pllm.adapt.train import train_adapter

    return train_adapter(*args, **kwargs)


def _lora(config: AdaptConfig, layers: dict[str, Any]) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules or ["q_proj", "v_proj"], task_type=TaskType.CAUSAL_LM,
                      **layers)


def _ia3(config: AdaptConfig, layers: dict[str, Any]) -> Any:
    from peft import IA3Config, TaskType

    targets = config.target_modules or ["k_proj", "v_proj", "down_proj"]
    ff = [m for m in targets if m in ("down_proj", "fc2", "mlp.down_proj")]
    return IA3Config(target_modules=targets, feedforward_modules=ff, task_type=TaskType.CAUSAL_LM)


def _prompt_tuning(config: AdaptConfig, layers: dict[str, Any]) -> Any:
    from peft import PromptTuningConfig, TaskType

    return PromptTuningConfig(num_virtual_tokens=config.num_virtual_tokens, task_type=TaskType.CAUSAL_LM)


LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _full(config: AdaptConfig, layers: dict[str, Any]) -> Any:
    """Every weight of the named linear modules (default: all seven of a Llama-style layer) trained in full,
    in the top `top_layers` layers (all by default); embeddings, norms and the output head stay frozen."""
    from peft import LoraConfig, TaskType

    names = list(config.target_modules or LINEAR_MODULES)
    if "layers_to_transform" in layers:  # modules_to_save matches name suffixes: one per layer and module
        names = [f"layers.{i}.{part}.{m}" for i in layers["layers_to_transform"] for m in names
                 for part in (("self_attn",) if m in LINEAR_MODULES[:4] else ("mlp",))]
    return LoraConfig(r=1, target_modules=["lm_head"], modules_to_save=names, task_type=TaskType.CAUSAL_LM)


register_adapter_method("lora", AdaptConfig, _train_supervised, layer_subset=True,
                        peft_config=_lora)
# Full fine-tuning steps are far smaller than low-rank ones (recipe lr 2e-3 -> 5e-5, the usual SFT step for a
# model this size).
register_adapter_method("full", AdaptConfig, _train_supervised, layer_subset=True, full_weights=True,
                        lr_scale=0.025, peft_config=_full)
register_adapter_method("ia3", AdaptConfig, _train_supervised, peft_config=_ia3)
# Soft prompts sit in embedding space and need a larger step than low-rank weight deltas.
register_adapter_method("prompt-tuning", AdaptConfig, _train_supervised, prompt_learning=True, lr_scale=10.0,
                        peft_config=_prompt_tuning)
