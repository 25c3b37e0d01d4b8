"""The one engine that scores a method or a baseline over questions. `pllm eval` (one cell), `pllm run`
(a fixed set of cells) and every cell of `pllm bench` go through `CellRunner.run`: fixed batches by
question position, one JSON line per question into the cell's log (on disk for a resumable grid, in
memory otherwise), and a `MethodResult` read back from those lines."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pllm.errors import InputError
from pllm.eval.datasets import LoadedTask
from pllm.eval.log import CellLog, record_line
from pllm.eval.report import MethodResult
from pllm.io import sha1_text
from pllm.models.base import Generator, device_label
from pllm.pipeline import MethodConfig, Personalizer, PredictionRecord
from pllm.prompting.profile import SummaryConfig
from pllm.tasks.spec import TaskSpec
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.adapt.private import PrivateRecipe
    from pllm.adapt.store import AdapterRecord, AdapterStore
    from pllm.models.hf import HFGenerator
    from pllm.users.store import UserStore

Progress = Callable[[str, int, int], None]  # (cell label, done, total)


@dataclass
class Cell:
    """One method setting (`kind` llm) or one baseline, on one task: the unit the runner scores."""

    task: str
    label: str  # shown in reports, unique within the task
    kind: str  # llm | baseline
    method: str  # grid method name or baseline name
    k: int = 0
    style: str | None = None
    model: str | None = None  # generator key: 'backend' or 'backend:model'
    config: dict[str, Any] = field(default_factory=dict)  # MethodConfig fields + model, or baseline options

    @property
    def slug(self) -> str:
        return slug(self.label)

    @property
    def method_config(self) -> MethodConfig:
        return MethodConfig(**{k: v for k, v in self.config.items() if k != "model"})


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def llm_cell(method: MethodConfig, *, model: str = "hf", task: str = "", label: str | None = None,
             name: str | None = None) -> Cell:
    """The cell of an LLM method (`name`: the grid's method name, default its label)."""
    return Cell(task, label or method.label, "llm", name or method.label, method.k, method.style, model,
                {**dataclasses.asdict(method), "model": model})


def baseline_cells(spec: TaskSpec, names: Sequence[str], *, task: str = "", knn_k: int = 5,
                   embedder: str = "minilm") -> list[Cell]:
    """One cell per baseline, each given only the options it declares (`Baseline.options`)."""
    from pllm.eval.baselines import BASELINES

    offered = {"k": knn_k, "embedder": embedder}
    return [Cell(task, b, "baseline", b, config={"baseline": b, **{o: offered[o] for o in BASELINES.get(b).options}})
            for b in names]


@dataclass
class LearnedStage:
    """A learned method's first stage: the merged copy, its task adapter and what to record about it."""

    generator: HFGenerator
    record: AdapterRecord
    info: dict[str, Any]


def learned_stage(spec: TaskSpec, generator: Generator, method: MethodConfig, *, train: Sequence[Question] = (),
                  adapters: AdapterStore | None = None, progress: Progress | None = None,
                  train_source: dict[str, Any] | None = None, max_pairs: int | None = None,
                  recipe: Mapping[str, Any] | None = None) -> LearnedStage:
    """The task adapter of `ft+<method>` (trained once, cached by content) merged into a copy of `generator`;
    `recipe`: overrides of the learned recipe (`pllm.adapt.learned.ft_recipe`)."""
    from pllm.adapt.learned import FT_PAIRS, ft_recipe, learned_generator, train_learned
    from pllm.adapt.store import AdapterStore

    step = (lambda s, t: progress(f"training {method.label}", s, t)) if progress else None
    record, trained = train_learned(generator, spec, method, train, store=adapters or AdapterStore(None),
                                    config=ft_recipe(spec, method, recipe) if recipe else None, progress=step,
                                    source=train_source, max_pairs=max_pairs or FT_PAIRS)
    return LearnedStage(learned_generator(generator, spec, record), record, {
        "adapter": str(record.path), "adapter_data_hash": record.data_hash, "adapter_pairs": record.n_pairs,
        "adapter_train_seconds": record.train_seconds, "adapter_trained_now": trained,
        "adapter_recipe": record.config})


def private_stage(spec: TaskSpec, stage: LearnedStage, method: MethodConfig, *, questions: Sequence[Question],
                  train: Sequence[Question] = (), adapters: AdapterStore | None = None,
                  private: PrivateRecipe | None = None, progress: Progress | None = None
                  ) -> tuple[Generator, dict[str, Any]]:
    """OPPU's second stage of `ft+user+<method>` on a first stage: every scored user's private adapter trained
    (or found up to date) on the merged model, and a routing generator over it. The router wraps the model it
    is given in place, so it gets its own copy, leaving the first stage's intact for the `ft+<method>` cells
    that share it."""
    from pllm.adapt.private import private_generator, train_private
    from pllm.adapt.store import AdapterStore

    if not questions:
        raise InputError(f"method {method.label!r} trains a private adapter per scored user: it needs the questions",
                         field="questions")
    learned = stage.generator.private_copy()
    store = adapters or AdapterStore(None)
    crowd = method.crowd_from(spec, train)  # the train split's, as at inference
    users = (lambda s, t: progress(f"private adapters {method.label}", s, t)) if progress else None
    result = train_private(learned, spec, method, questions, task_record=stage.record, store=store, recipe=private,
                           crowd=crowd, progress=users)
    fallback = set(result.fallback)
    info = {**stage.info, **result.summary(),
            "private_fallback_questions": sum(q.user_id in fallback for q in questions)}
    return private_generator(learned, result, store=store), info


def soft_stage(spec: TaskSpec, stage: LearnedStage, method: MethodConfig, *, train: Sequence[Question],
               adapters: AdapterStore | None = None, cache: UserStore | None = None,
               recipe: Mapping[str, Any] | None = None, progress: Progress | None = None
               ) -> tuple[Generator, dict[str, Any]]:
    """The soft stage of `ft+soft+<method>` on a first stage: a user encoder trained (or found up to date) against
    the merged model, whose soft tokens go before every prompt; the merged model itself is not changed, so the
    `ft+<method>` cells keep sharing it. `recipe`: a grid's `soft_recipe` overrides."""
    from pllm.adapt.learned import soft_recipe, train_learned_soft
    from pllm.adapt.store import AdapterStore

    generator, info = train_learned_soft(stage.generator, spec, method, train, record=stage.record,
                                         store=adapters or AdapterStore(None), config=soft_recipe(method, recipe),
                                         cache=cache, progress=progress)
    return generator, {**stage.info, **info}


@dataclass
class GeneratorOptions:
    """What a method runs on besides the base model (`pllm eval`): per-user adapters and a soft-prompt user
    encoder. Saved with the method in method_config.json."""

    adapter: str = field(default="none", metadata={
        "help": "Per-user peft adapters: user (own, else group, else base) | group | none."})
    adapters_dir: str | None = field(default=None, metadata={"help": "Adapter folder (default: beside the store)."})
    soft: str | None = field(default=None, metadata={"help": "Soft-prompt user encoder (pllm soft train) to add."})

    def __post_init__(self) -> None:
        from pllm.adapt.generator import ROUTE_MODES

        if self.adapter not in ROUTE_MODES:
            raise InputError(f"adapter mode must be one of {', '.join(ROUTE_MODES)}, got {self.adapter!r}",
                             field="adapter")
        if self.soft is not None and not Path(self.soft).exists():
            raise InputError("soft-prompt encoder not found (train one with `pllm soft train`)", source=self.soft)

    def wrap(self, generator: Generator, spec: TaskSpec, store: UserStore) -> Generator:
        if self.adapter != "none":  # each question's user is routed to their adapter, many users per batch
            from pllm.adapt import AdapterGenerator, AdapterStore

            generator = AdapterGenerator(generator, spec.name, mode=self.adapter,
                                         store=AdapterStore(self.adapters_dir, db=store))
        if self.soft is not None:  # soft-fused prompting: the user encoder's vectors go before every prompt
            from pllm.soft.model import load_soft_generator

            generator = load_soft_generator(self.soft, generator, store=store)
        return generator

    def label(self, method_label: str) -> str:
        if self.soft is not None:
            from pllm.soft.model import soft_label

            method_label = soft_label(method_label)
        return method_label if self.adapter == "none" else f"{self.adapter} adapter+{method_label}"


class CellRunner:
    """Scores cells. `load` maps a cell's generator key to a generator (cached by the caller when it
    loads models); learned cells get their trained copy here, once per adapter."""

    def __init__(self, load: Callable[[str], Generator], *, store: UserStore | None = None, batch_size: int = 8,
                 summary: SummaryConfig | None = None, progress: Progress | None = None,
                 adapters: AdapterStore | None = None, ft_pairs: int | None = None,
                 private: PrivateRecipe | None = None, ft_recipe: Mapping[str, Any] | None = None,
                 soft_recipe: Mapping[str, Any] | None = None) -> None:
        self.load, self.store, self.batch_size, self.ft_pairs = load, store, batch_size, ft_pairs
        self.private, self.ft_recipe, self.soft_recipe = private, dict(ft_recipe or {}), dict(soft_recipe or {})
        self.summary, self.progress, self.adapters = summary, progress, adapters
        self._stages: dict[str, LearnedStage] = {}
        self._second: dict[str, tuple[Generator, dict[str, Any]]] = {}  # ft+user+ / ft+soft+ second stages

    def generator(self, cell: Cell, task: LoadedTask) -> tuple[Generator, dict[str, Any]]:
        """The generator of an LLM cell and what to record about it (a learned cell: its adapter)."""
        mc = cell.method_config
        base = self.load(cell.model or "hf")
        if not mc.ft:
            return base, {}
        # One trained copy per task adapter: the splits of one task folder, readouts and the `ft+user+` cells on
        # top of it share it. A copy with private adapters routes one split's users: it is kept per questions.
        plain = mc.task_adapter_method()
        key = f"{cell.model or 'hf'}|{task.learn_source}|{plain.label}"
        if key not in self._stages:
            if not task.learn:
                raise InputError(f"learned method {cell.label!r} needs a train split to learn from", field="train")
            source = {"questions": task.learn_source} if task.learn_source else None
            self._stages[key] = learned_stage(task.spec, base, mc, train=task.learn, adapters=self.adapters,
                                              progress=self.progress, train_source=source, max_pairs=self.ft_pairs,
                                              recipe=self.ft_recipe)
        stage = self._stages[key]
        if mc.ft_soft:  # one encoder over the whole train split, shared by every split of the task folder
            key += f"|soft|{mc.task_adapter_method().label}"
            if key not in self._second:
                self._second[key] = soft_stage(task.spec, stage, mc, train=task.learn, adapters=self.adapters,
                                               cache=self.store, recipe=self.soft_recipe, progress=self.progress)
            return self._second[key]
        if not mc.ft_user:
            return stage.generator, stage.info
        key += f"|{task.name}|{sha1_text(*[q.id for q in task.questions])}"
        if key not in self._second:
            self._second[key] = private_stage(task.spec, stage, mc, questions=task.questions, train=task.learn,
                                              adapters=self.adapters, private=self.private, progress=self.progress)
        return self._second[key]

    def run(self, cell: Cell, task: LoadedTask, log: CellLog) -> dict[str, Any]:
        """Score the questions of `cell` not yet in `log`, batch by batch (fixed positions, so a resumed
        run batches as an uninterrupted one). Returns what this run knows about the cell beyond its
        config (backend, prediction mode, a learned adapter, a baseline's fallbacks)."""
        qs, bs = task.questions, self.batch_size
        label = f"{cell.task}: {cell.label}" if cell.task else cell.label

        def tick() -> None:
            if self.progress:
                self.progress(label, sum(q.id in log.records for q in qs), len(qs))

        tick()  # the bar (and the rate's clock) starts before the first batch
        if all(q.id in log.records for q in qs):
            return {}
        predict: Callable[[list[Question]], list[PredictionRecord]]
        if cell.kind == "llm":
            generator, learned = self.generator(cell, task)
            mc = cell.method_config
            # other users' answers per item: the train split (the asker is always left out)
            crowd = mc.crowd_from(task.spec, task.learn or task.train)
            pers = Personalizer(task.spec, generator, mc, store=self.store, summary_config=self.summary, crowd=crowd)
            device = device_label(generator)
            info = {"model": generator.model_id, "backend": generator.name, "mode": pers.mode,
                    "style": pers.style.name, **learned}
            predict = lambda todo: pers.predict(todo, batch_size=bs)  # noqa: E731
        else:
            from pllm.eval.baselines import make_baseline

            base = make_baseline(cell.method, task.spec, store=self.store,
                                 **{k: v for k, v in cell.config.items() if k != "baseline"})
            # Without training questions, fit on the scored questions' histories only, never their targets.
            base.fit(task.train or [dataclasses.replace(q, target=None) for q in qs])
            device, pers, info, predict = None, None, {}, base.predict
        for start in range(0, len(qs), bs):
            todo = [q for q in qs[start:start + bs] if q.id not in log.records]
            if not todo:
                continue
            t0 = time.perf_counter()
            before = pers.timings.as_dict() if pers else {}
            records = predict(todo)
            timings = {k: (v - before[k]) / len(todo) for k, v in pers.timings.as_dict().items()} if pers else {}
            wall = (time.perf_counter() - t0) / len(todo)
            log.append([record_line(r, q, wall, timings, device) for r, q in zip(records, todo)])
            tick()
        if cell.kind == "baseline":
            info["fallbacks"] = base.fallbacks
        return info

    def result(self, cell: Cell, task: LoadedTask) -> MethodResult:
        """Run `cell` on every question (an in-memory log: nothing to resume) and return its result,
        its config completed by what the run found out."""
        log = CellLog()
        info = self.run(cell, task, log)
        return cell_result(cell, log.lines(task.questions) or [], info)


def cell_result(cell: Cell, lines: Sequence[dict[str, Any]], info: dict[str, Any] | None = None) -> MethodResult:
    """A cell's `MethodResult` from its log lines (in question order)."""
    timings: dict[str, float] = {}
    for line in lines:
        for k, v in (line.get("timings") or {}).items():
            timings[k] = timings.get(k, 0.0) + v
    devices = Counter(line["device"] for line in lines if line.get("device"))
    return MethodResult(method=cell.label, records=[PredictionRecord.from_json(line) for line in lines],
                        seconds=sum(line.get("wall", 0.0) for line in lines), kind=cell.kind,
                        config={**cell.config, **(info or {})}, timings={k: round(v, 3) for k, v in timings.items()},
                        devices=dict(devices.most_common()))


def run_method(spec: TaskSpec, questions: Sequence[Question], generator: Generator, method: MethodConfig, *,
               store: UserStore | None = None, batch_size: int = 8, progress: Progress | None = None,
               name: str | None = None, summary_config: SummaryConfig | None = None,
               train: Sequence[Question] = (), adapters: AdapterStore | None = None,
               train_source: dict[str, Any] | None = None, private: PrivateRecipe | None = None) -> MethodResult:
    """One method on these questions with this generator: a one-cell run of `CellRunner` (`private`: the
    per-user recipe of an `ft+user+...` method)."""
    task = LoadedTask(spec.name, spec, list(questions), learn=list(train),
                      learn_source=(train_source or {}).get("questions"))
    runner = CellRunner(lambda key: generator, store=store, batch_size=batch_size, summary=summary_config,
                        progress=progress, adapters=adapters, private=private)
    return runner.result(llm_cell(method, label=name), task)
