"""What an adapter is trained with: the peft method and its size, the optimizer schedule, and how a
user's items become training texts. Saved inside every adapter record, so a result can be reproduced
and an up-to-date adapter recognised (and skipped) on a resumed run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pllm.errors import InputError

if TYPE_CHECKING:
    from pllm.adapt.methods import AdapterMethod

ADDED_LATER = ("stats", "crowd")  # recipe fields newer than some trained adapters (see hash_fields)


@dataclass
class AdaptConfig:
    """One adapter training recipe (task, group and user adapters all use it)."""

    method: str = field(default="lora", metadata={
        "help": "Adapter method trained on pairs (registered in pllm.adapt.methods): lora | ia3 | prompt-tuning."})
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Module names to adapt (default: q_proj, v_proj for LoRA; k_proj, v_proj, down_proj for IA3)."})
    top_layers: int | None = field(default=None, metadata={
        "help": "LoRA on the top N transformer layers only (None: all). Backpropagation stops at the lowest "
                "adapted layer, so a training step costs a forward pass plus about N/L of a backward pass."})
    num_virtual_tokens: int = field(default=8, metadata={"help": "Soft tokens for prompt tuning."})
    epochs: int = field(default=2, metadata={"help": "Passes over the training pairs."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (prompt tuning uses 10x)."})
    batch_size: int = field(default=8, metadata={"help": "Training pairs per optimizer step."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps (None: epochs)."})
    seed: int = field(default=0, metadata={"help": "Seed for adapter init and pair order."})
    max_items: int | None = field(default=100, metadata={
        "help": "Train on the user's latest N items (None: all)."})
    min_items: int = field(default=10, metadata={
        "help": "Users with fewer items get no private adapter; they are routed to their group's adapter."})
    retriever: str = field(default="none", metadata={
        "help": "Retriever over the user's earlier items for demonstrations inside training texts."})
    k: int = field(default=0, metadata={"help": "Demonstrations per training text (0: the query alone)."})
    stats: bool = field(default=False, metadata={
        "help": "Statistical profile (the user's earlier output distribution) inside every training text."})
    crowd: bool = field(default=False, metadata={
        "help": "Collaborative context (other train users' outputs for the item) inside every training text."})
    max_prompt_tokens: int = field(default=512, metadata={"help": "Token budget of one training prompt."})
    style: str | None = field(default=None, metadata={"help": "Prompt style (default: the task's default)."})

    def __post_init__(self) -> None:
        method = self.adapter_method
        if self.top_layers is not None and (self.top_layers < 1 or not method.layer_subset):
            raise InputError(f"top_layers must be >= 1 and needs a method with layers_to_transform (lora), got "
                             f"{self.top_layers} with {self.method}", field="top_layers")
        for name in ("r", "alpha", "num_virtual_tokens", "epochs", "batch_size", "min_items"):
            if getattr(self, name) < (0 if name == "min_items" else 1):
                raise InputError(f"{name} must be positive, got {getattr(self, name)}", field=name)
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}", field="dropout")
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}", field="lr")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError("max_steps must be >= 1", field="max_steps")
        if self.max_items is not None and self.max_items < 1:
            raise InputError("max_items must be >= 1", field="max_items")
        if self.k < 0:
            raise InputError("k must be >= 0", field="k")
        from pllm.prompting.styles import PROMPT_STYLES
        from pllm.retrieval.base import RETRIEVERS

        RETRIEVERS.get(self.retriever)  # names fail on construction, before a model loads
        if self.style is not None:
            PROMPT_STYLES.get(self.style)
        if self.target_modules is not None:
            self.target_modules = [str(m) for m in self.target_modules]

    def hash_fields(self) -> dict[str, Any]:
        """The recipe as it enters an adapter's data hash: fields added after adapters were trained are left
        out while at their default, so those adapters stay up to date."""
        data = asdict(self)
        for name in ADDED_LATER:
            if data[name] == AdaptConfig.__dataclass_fields__[name].default:
                data.pop(name)
        return data

    @property
    def adapter_method(self) -> AdapterMethod:
        """The registered method this recipe trains (one that trains on pairs with this config class)."""
        from pllm.adapt.methods import methods

        known = {m.name: m for m in methods(config_cls=AdaptConfig) if m.peft_config is not None}
        if self.method not in known:
            raise InputError(f"method must be one of {sorted(known)}, got {self.method!r}", field="method")
        return known[self.method]

    def peft_config(self, num_layers: int | None = None) -> Any:
        """The peft config object for this recipe (task type: causal LM); `num_layers` (the model's) is
        needed with `top_layers`."""
        layers: dict[str, Any] = {}
        if self.top_layers is not None:
            if not num_layers or self.top_layers > num_layers:
                raise InputError(f"top_layers={self.top_layers} needs a model with at least that many layers "
                                 f"(this one has {num_layers})", field="top_layers")
            layers = {"layers_to_transform": list(range(num_layers - self.top_layers, num_layers))}
        build = self.adapter_method.peft_config
        assert build is not None  # checked in __post_init__
        return build(self, layers)

    @property
    def effective_lr(self) -> float:
        return self.lr * self.adapter_method.lr_scale


# The recipe fields a learned method decides from its own rendering (`pllm.adapt.learned.ft_config`).
METHOD_DECIDED = ("retriever", "k", "stats", "crowd", "style", "max_prompt_tokens")


def check_recipe_overrides(overrides: Mapping[str, Any]) -> None:
    """A grid's `ft_recipe`: AdaptConfig fields that change how the adapter trains, never what its prompts hold
    (those the learned method sets), with values a recipe accepts."""
    bad = sorted(set(overrides) - ({f.name for f in fields(AdaptConfig)} - set(METHOD_DECIDED)))
    if bad:
        raise InputError(f"ft_recipe cannot set {', '.join(bad)}: give AdaptConfig fields other than "
                         f"{', '.join(sorted(METHOD_DECIDED))} (the method sets those)", field="ft_recipe")
    AdaptConfig(**overrides)
