"""Run several personalization methods and baselines over the same questions."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from pllm.eval.baselines import make_baseline
from pllm.eval.report import MethodResult
from pllm.models.base import Generator, device_label
from pllm.pipeline import MethodConfig, Personalizer
from pllm.prompting.profile import SummaryConfig
from pllm.tasks.spec import TaskSpec
from pllm.types import Question

Progress = Callable[[str, int, int], None]  # (method, done, total)


def method_generator(spec: TaskSpec, generator: Generator, method: MethodConfig, *, train: Sequence[Question] = (),
                     adapters: Any = None, progress: Progress | None = None, train_source: dict[str, Any] | None = None
                     ) -> tuple[Generator, dict[str, Any]]:
    """The generator a method runs on: the base model, or for a learned method (`ft+...`) a copy with the
    task adapter trained on the train split (once: cached by content), and what to record about it."""
    if not method.ft:
        return generator, {}
    from pllm.adapt.learned import learned_generator, train_learned
    from pllm.adapt.store import AdapterStore

    step = (lambda s, t: progress(f"training {method.label}", s, t)) if progress else None
    record, trained = train_learned(generator, spec, method, train, store=adapters or AdapterStore(None),
                                    progress=step, source=train_source)
    return learned_generator(generator, spec, record), {
        "adapter": str(record.path), "adapter_data_hash": record.data_hash, "adapter_pairs": record.n_pairs,
        "adapter_train_seconds": record.train_seconds, "adapter_trained_now": trained,
        "adapter_recipe": record.config}


def run_method(spec: TaskSpec, questions: Sequence[Question], generator: Generator, method: MethodConfig, *,
               store: Any = None, batch_size: int = 8, progress: Progress | None = None,
               name: str | None = None, summary_config: SummaryConfig | None = None,
               train: Sequence[Question] = (), adapters: Any = None, train_source: dict[str, Any] | None = None
               ) -> MethodResult:
    generator, learned = method_generator(spec, generator, method, train=train, adapters=adapters, progress=progress,
                                          train_source=train_source)
    pers = Personalizer(spec, generator, method, store=store, summary_config=summary_config)
    label = name or method.label
    records = []
    t0 = time.perf_counter()
    if progress:
        progress(label, 0, len(questions))  # the bar (and the rate's clock) starts before the first batch
    for start in range(0, len(questions), batch_size):
        records.extend(pers.predict(questions[start:start + batch_size], batch_size=batch_size))
        if progress:
            progress(label, len(records), len(questions))
    return MethodResult(method=label, records=records, seconds=time.perf_counter() - t0, kind="llm",
                        config={**dataclasses.asdict(method), "model": generator.model_id, "backend": generator.name,
                                "mode": pers.mode, "style": pers.style.name, **learned},
                        timings=pers.timings.as_dict(), devices=_devices(generator, len(records)))


def _devices(generator: Generator, n: int) -> dict[str, int]:
    device = device_label(generator)
    return {device: n} if device and n else {}


def run_baseline(spec: TaskSpec, questions: Sequence[Question], name: str, *, train: Sequence[Question] = (),
                 store: Any = None, **options: Any) -> MethodResult:
    t0 = time.perf_counter()
    base = make_baseline(name, spec, store=store, **options)
    # Without training questions, fit on the scored questions' histories only: never on their targets.
    base.fit(train or [dataclasses.replace(q, target=None) for q in questions])
    records = base.predict(questions)
    return MethodResult(method=name, records=records, seconds=time.perf_counter() - t0, kind="baseline",
                        config={"baseline": name, **options, "fallbacks": base.fallbacks})
