"""The generator interface every LLM backend implements, and the registry that names them.

Prompts are structured (`Prompt`), so one prompt builder serves chat models (rendered with the
model's own chat template) and raw few-shot continuation alike; token budgets are counted with the
generator's own tokenizer, because that is what decides what fits in the context window.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pllm.errors import InputError, PllmError
from pllm.registry import Registry
from pllm.types import Question

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One model input.

    chat=True: rendered with the tokenizer's chat template as one user turn (generation prompt added);
    chat=False: raw text continued as is (few-shot demonstration style).
    """

    text: str
    chat: bool = True
    system: str | None = None
    # The structured record this prompt was rendered from, for generators that personalize beyond the
    # text (per-user adapters, soft prompts): they read it, never parse the text.
    question: Question | None = field(default=None, repr=False, compare=False)
    # A whole conversation (OpenAI-style {"role", "content"} dicts, oldest first) for chat generators:
    # rendered with the model's chat template in place of the single user turn `text`, which then
    # holds a plain-text transcript for backends that take one string.
    messages: list[dict[str, str]] | None = field(default=None, repr=False)


@dataclass
class Generation:
    """One completion with its token accounting (in the generator's own tokenizer or server usage)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


# A cheap stand-in for a real tokenizer: a run of up to 4 word characters, or one other non-space
# character, with the whitespace before it, is one token. English BPE averages ~4 chars per token, so
# this over-counts slightly, which is the safe side for prompt budgets.
_APPROX_TOKEN = re.compile(r"\s*(?:\w{1,4}|[^\w\s])", re.UNICODE)


def approx_count_tokens(text: str) -> int:
    """Heuristic token count (see `_APPROX_TOKEN`); used where no exact tokenizer is available."""
    return len(_APPROX_TOKEN.findall(text))


def approx_truncate_tokens(text: str, max_tokens: int) -> str:
    """Keep the first `max_tokens` heuristic tokens of `text`, cutting at a token boundary."""
    if max_tokens <= 0:
        return ""
    end = 0
    for i, match in enumerate(_APPROX_TOKEN.finditer(text)):
        if i == max_tokens:
            return text[:end]
        end = match.end()
    return text


def trim_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut `text` at the earliest occurrence of any stop string; return (text, whether it was cut)."""
    if not stop:
        return text, False
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def normalize_continuations(n_prompts: int, continuations: Sequence[Sequence[str]] | Sequence[str]
                            ) -> list[list[str]]:
    """Per-prompt candidate lists; a flat list of strings is one candidate set shared by every prompt."""
    if isinstance(continuations, str):
        raise InputError("continuations must be a list of strings or a list of lists of strings, not a str")
    items = list(continuations)
    if not items:
        raise InputError("continuations is empty: give at least one candidate")
    if all(isinstance(c, str) for c in items):
        shared = [str(c) for c in items]
        return [list(shared) for _ in range(n_prompts)]
    if len(items) != n_prompts:
        raise InputError(f"got {len(items)} candidate lists for {n_prompts} prompts")
    out = []
    for i, cands in enumerate(items):
        if isinstance(cands, str) or not all(isinstance(c, str) for c in cands):
            raise InputError("each candidate list must hold strings", index=i, field="continuations")
        if not cands:
            raise InputError("empty candidate list", index=i, field="continuations")
        out.append(list(cands))
    if len({len(c) for c in out}) != 1:
        raise InputError("every prompt needs the same number of candidates (the result is an (N, C) array)")
    return out


class Generator(ABC):
    """A text generator (and, where supported, a scorer of candidate continuations)."""

    name: str = "base"
    model_id: str = ""
    supports_scoring: bool = False
    # A serving engine that holds adapters under names (vLLM's --lora-modules): `with_engine_adapter(name)`.
    serves_engine_adapters: bool = False

    def with_engine_adapter(self, name: str) -> Generator:
        """This generator, answering with the engine's adapter `name` instead of the base model (same client;
        only for `serves_engine_adapters`)."""
        raise NotImplementedError(f"the {self.name!r} backend does not serve adapters by name")

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this generator's tokenizer (heuristic in this default)."""
        return approx_count_tokens(text)

    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        """Keep the first `max_tokens` tokens of `text` (heuristic in this default)."""
        return approx_truncate_tokens(text, max_tokens)

    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the model. This default has no chat template: system + blank line + text."""
        if prompt.chat and prompt.system:
            return f"{prompt.system}\n\n{prompt.text}"
        return prompt.text

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens the model reads for `prompt` (chat template included)."""
        return self.count_tokens(self.render(prompt))

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        """One completion per prompt, in order; greedy when temperature == 0; stop strings trimmed."""

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        """(N, C) summed log-probability of each continuation appended right after the rendered prompt.

        A flat list of strings is one candidate set for every prompt (label scoring); normalize=True
        divides by the continuation's token count.
        """
        raise PllmError(f"the {self.name!r} backend cannot score continuations (no token log-probs); "
                        "use generation instead, or a backend with supports_scoring (e.g. 'hf')")

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        """Yield text pieces as they are produced; this default yields the whole completion once."""
        yield self.generate([prompt], max_new_tokens=max_new_tokens, temperature=temperature)[0].text

    def generate_in_gaps(self, prompt: Prompt, *, max_new_tokens: int, stop: Sequence[str] | None,
                         yield_to: Callable[[], None]) -> Generation:
        """One greedy completion run as background work: `yield_to()` blocks while foreground work (a chat)
        waits or runs, and is called wherever the backend can pause, so the foreground never waits for more
        than one step of it. This default can pause only before it starts; `hf` pauses between prefill
        chunks and between tokens."""
        yield_to()
        return self.generate([prompt], max_new_tokens=max_new_tokens, temperature=0.0, stop=stop, batch_size=1)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r})"


class DelegatingGenerator(Generator):
    """A generator that runs another one's model (`base`: with adapters, soft tokens, or behind a lock):
    token counts, truncation and rendering are the base's, so prompts are built and budgeted as for it."""

    base: Generator

    def count_tokens(self, text: str) -> int:
        return self.base.count_tokens(text)

    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        return self.base.truncate_to_tokens(text, max_tokens)

    def render(self, prompt: Prompt) -> str:
        return self.base.render(prompt)

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        return self.base.count_prompt_tokens(prompt)


GENERATORS: Registry[Callable[..., Generator]] = Registry("generator")


def load_generator(backend: str = "hf", model: str | None = None, **options: object) -> Generator:
    """Build a generator by backend name; unknown names raise UnknownNameError listing the known ones."""
    factory = GENERATORS.get(backend)
    return factory(model=model, **options)


def device_label(generator: object) -> str | None:
    """Where a generator computes: "cpu", or the accelerator's name (e.g. "NVIDIA H200"); None when it
    has no device (remote or fake backends). Recorded beside timings, which mean little without it."""
    device = getattr(generator, "device", None)
    if device is None:
        return None
    if getattr(device, "type", None) == "cuda":
        import torch

        return str(torch.cuda.get_device_name(device))
    return str(getattr(device, "type", device))
