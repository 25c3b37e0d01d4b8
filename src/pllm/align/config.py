"""What alignment fine-tunes (DPO, RiC) train with: dataclass recipes saved beside every adapter (`config.json`).
Light (no torch), so the method registry can name them without loading a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pllm.errors import InputError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class LoraSettings:
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS),
                                      metadata={"help": "Module names LoRA wraps (never lm_head: trl reads it "
                                                        "directly)."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise InputError(f"LoRA rank must be >= 1, got {self.r}", field="r")
        if self.alpha <= 0:
            raise InputError(f"LoRA alpha must be > 0, got {self.alpha}", field="alpha")
        if not 0 <= self.dropout < 1:
            raise InputError(f"LoRA dropout must be in [0, 1), got {self.dropout}", field="dropout")
        if not self.target_modules or "lm_head" in self.target_modules:
            raise InputError("target_modules must be non-empty and must not include lm_head",
                             field="target_modules")

    def peft_config(self) -> Any:
        from peft import LoraConfig

        # peft types alpha as int but only divides by it (scaling = alpha / r); float alphas are kept as saved.
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,  # type: ignore[arg-type]
                          target_modules=list(self.target_modules), task_type="CAUSAL_LM")


@dataclass
class TrainSettings:
    """What every alignment fine-tune (DPO, RiC) shares."""

    epochs: float = field(default=2.0, metadata={"help": "Passes over the training rows."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Rows per optimizer step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "AdamW learning rate."})
    max_prompt_tokens: int = field(default=96, metadata={"help": "Prompts are cut to this many tokens."})
    max_answer_tokens: int = field(default=96, metadata={"help": "Answers are cut to this many tokens."})
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init and data order."})
    threads: int = field(default=0, metadata={"help": "torch threads while training (0: leave as is); 1 is "
                                                      "fastest on a crowded machine."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA settings."})

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.epochs <= 0 and self.max_steps <= 0:
            raise InputError("give epochs > 0 or max_steps > 0", field="epochs")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}", field="batch_size")
        if self.learning_rate <= 0:
            raise InputError(f"learning_rate must be > 0, got {self.learning_rate}", field="learning_rate")
        if self.max_prompt_tokens < 1 or self.max_answer_tokens < 1:
            raise InputError("max_prompt_tokens and max_answer_tokens must be >= 1", field="max_answer_tokens")


@dataclass
class DPOSettings(TrainSettings):
    beta: float = field(default=0.1, metadata={"help": "DPO beta (strength of the KL anchor to the reference)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise InputError(f"beta must be > 0, got {self.beta}", field="beta")


@dataclass
class RiCSettings(TrainSettings):
    precision: int = field(default=2, metadata={"help": "Decimals of each score written into the prompt."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.precision <= 4:
            raise InputError(f"precision must be in [0, 4], got {self.precision}", field="precision")
