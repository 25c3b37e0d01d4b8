"""The judge as a metric for generation tasks. Unlike LaMP's metrics (predictions vs golds only), it
needs the question (the user's profile), so it lives in its own registry of record-level metrics:
`RECORD_METRICS.get("judge")(generator=...)` gives an object whose `compute(questions, predictions,
references)` is the share of pairs where the prediction beats the reference for that user (ties count
half; 0.5 = as good as the reference) with the tie rate beside it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pllm.errors import InputError
from pllm.judge.judge import Judge, JudgeConfig, summarize_verdicts
from pllm.models.base import Generator
from pllm.registry import Registry
from pllm.tasks.spec import TaskSpec
from pllm.types import Question


class JudgeMetric:
    name = "judge"
    higher_is_better = True

    def __init__(self, generator: Generator | None = None, *, backend: str = "hf", model: str | None = None,
                 config: JudgeConfig | None = None, spec: TaskSpec | None = None, store: Any = None) -> None:
        if generator is None:
            from pllm.models import load_generator

            generator = load_generator(backend, model)
        self.judge = Judge(generator, config, spec=spec, store=store)
        self.last: dict[str, Any] = {}

    def compute(self, questions: Sequence[Question], predictions: Sequence[str | None],
                references: Sequence[str], *, batch_size: int = 8) -> float:
        """Judge score of predictions against references (ties half); details in `self.last`."""
        if not (len(questions) == len(predictions) == len(references)):
            raise InputError(f"{len(questions)} questions, {len(predictions)} predictions, "
                             f"{len(references)} references")
        if not questions:
            raise InputError("no examples to judge")
        triples = [(q, p or "", str(r)) for q, p, r in zip(questions, predictions, references)]
        verdicts = self.judge.compare_many(triples, batch_size=batch_size)
        summary = summarize_verdicts(verdicts)
        self.last = {**summary.as_dict(), "judge": self.judge.describe()}
        return summary.score


RECORD_METRICS: Registry[Callable[..., JudgeMetric]] = Registry("record metric")
RECORD_METRICS.register("judge", JudgeMetric)
