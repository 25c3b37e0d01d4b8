"""LLM backends behind one `Generator` interface; importing this registers "hf" and "openai"."""

from pllm.models import hf, openai_backend  # noqa: F401  (register the backends)
from pllm.models.base import GENERATORS, Generation, Generator, Prompt, load_generator

__all__ = ["GENERATORS", "Generation", "Generator", "Prompt", "load_generator"]
