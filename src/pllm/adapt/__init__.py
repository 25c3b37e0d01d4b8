"""Model-level personalization: a shared task adapter, one private peft adapter per user, group
(persona) adapters for cold-start users, serving many users' adapters in one batch, forgetting, and
Ray scale-out. See docs/adapters.md."""

from pllm.adapt.config import METHODS, AdaptConfig
from pllm.adapt.data import TrainingPair, training_pairs, user_items
from pllm.adapt.generator import AdapterGenerator, Route
from pllm.adapt.store import AdapterRecord, AdapterStore, forget_user_adapters
from pllm.adapt.train import TrainResult, train_adapter

__all__ = ["METHODS", "AdaptConfig", "AdapterGenerator", "AdapterRecord", "AdapterStore", "Route", "TrainResult",
           "TrainingPair", "forget_user_adapters", "train_adapter", "training_pairs", "user_items"]
