"""A fake judge backend registered through GENERATORS: prefers whichever response mentions a keyword,
so order swapping and aggregation can be checked exactly."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest

from pllm.models.base import GENERATORS, Generation, Generator, normalize_continuations


class KeywordJudge(Generator):
    """Scores ' A' / ' B' by whether that response contains `keyword`; `bias` adds to slot A (position
    bias); `scoring=False` makes it generate a letter instead ('?' when `garble`)."""

    name = "test-keyword-judge"

    def __init__(self, model: str | None = None, keyword: str = "dogs", bias: float = 0.0, scoring: bool = True,
                 garble: bool = False) -> None:
        self.model_id = model or "keyword"
        self.keyword, self.bias, self.garble = keyword, bias, garble
        self.supports_scoring = scoring
        self.prompts: list = []

    def _slots(self, text: str) -> tuple[float, float]:
        a = re.search(r"Response A: (.*?)\n\nResponse B:", text, re.S).group(1)
        b = re.search(r"Response B: (.*?)\n\nWhich", text, re.S).group(1)
        return float(self.keyword in a) + self.bias, float(self.keyword in b)

    def score(self, prompts, continuations, *, batch_size=8, normalize=False):
        self.prompts.extend(prompts)
        conts = normalize_continuations(len(prompts), continuations)
        out = []
        for p, cs in zip(prompts, conts):
            a, b = self._slots(p.text)
            out.append([a if c.strip() == "A" else b for c in cs])
        return np.array(out)

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
        self.prompts.extend(prompts)
        outs = []
        for p in prompts:
            a, b = self._slots(p.text)
            outs.append("?" if self.garble else (" A" if a >= b else " B"))
        return [Generation(text=t, prompt_tokens=1, completion_tokens=1) for t in outs]


@pytest.fixture
def keyword_judge() -> Iterator[str]:
    GENERATORS.register("test-keyword-judge", KeywordJudge, replace=True)
    yield "test-keyword-judge"
    GENERATORS.unregister("test-keyword-judge")
