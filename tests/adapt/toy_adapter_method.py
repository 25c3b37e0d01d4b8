"""A toy adapter method registered from the test folder, as a plugin would: peft's LoHa (Hadamard-product
low-rank factors) on the attention projections, trained on pairs with the shared recipe. It touches no pllm
source file: `register_adapter_method` is the whole integration."""

from __future__ import annotations

from typing import Any

from pllm.adapt.config import AdaptConfig
from pllm.adapt.methods import register_adapter_method
from pllm.adapt.train import train_adapter

NAME = "toy-loha"
TRAINED: list[str] = []  # owners trained through this method's entry point


def loha_config(config: AdaptConfig, layers: dict[str, Any]) -> Any:
    from peft import LoHaConfig, TaskType

    return LoHaConfig(r=config.r, alpha=config.alpha, target_modules=config.target_modules or ["q_proj", "v_proj"],
                      task_type=TaskType.CAUSAL_LM, **layers)


def train(*args: Any, owner: str, **kwargs: Any) -> Any:
    TRAINED.append(owner)
    return train_adapter(*args, owner=owner, **kwargs)  # the shared pair-training loop, with LoHa layers


def register() -> None:
    # peft has no per-row `adapter_names` path for LoHa: the pool (asking peft) serves its rows adapter by adapter.
    register_adapter_method(NAME, AdaptConfig, train, layer_subset=True, peft_config=loha_config,
                            replace=True)
