"""Model-level personalization: a shared task adapter, one private peft adapter per user, group
(persona) adapters for cold-start users, serving many users' adapters in one batch, forgetting, and
Ray scale-out. See docs/adapters.md.

Names are imported lazily, so `import pllm.adapt.store` (the `ADAPTERS` storage feature, registered with the
user store at start-up) and `pllm.adapt.methods` (the method registry) do not pull in torch and peft."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AdaptConfig": "pllm.adapt.config",
    "ADAPTER_METHODS": "pllm.adapt.methods", "AdapterMethod": "pllm.adapt.methods",
    "register_adapter_method": "pllm.adapt.methods",
    "TrainingPair": "pllm.adapt.data", "training_pairs": "pllm.adapt.data", "user_items": "pllm.adapt.data",
    "AdapterGenerator": "pllm.adapt.generator", "Route": "pllm.adapt.generator",
    "AdapterRecord": "pllm.adapt.store", "AdapterStore": "pllm.adapt.store",
    "forget_user_adapters": "pllm.adapt.store",
    "TrainResult": "pllm.adapt.train", "train_adapter": "pllm.adapt.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pllm.adapt' has no attribute {name!r}")
