"""The input-level personalization pipeline: retrieve from the user's own history, build the prompt
in a style within a token budget (optionally with a cached profile summary), then predict by label
scoring or by generation plus parsing. Eval, bench, learned methods and the server's chat (the `chat`
style) all go through `Personalizer`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pllm.errors import InputError
from pllm.models.base import Generator
from pllm.prompting.profile import ItemCrowd, ProfileSummarizer, SummaryConfig, output_stats
from pllm.prompting.styles import PROMPT_STYLES, BuiltPrompt, PromptBuilder, PromptStyle, default_style, get_style
from pllm.retrieval.base import (
    RETRIEVERS,
    Doc,
    RetrieverIndex,
    item_group,
    make_retriever,
    retriever_needs_embedder,
    retriever_options,
    retriever_reads_train,
)
from pllm.retrieval.embedders import EMBEDDERS
from pllm.tasks.readouts import READOUTS, check_readout, read_out
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem, Question

PREDICT_MODES = ("auto", "score", "generate")
# (question, its retrieval query, k) -> the user's items, best first: a caller's own search over indexes it
# keeps (the server's memory service, current as items are written) in place of the Personalizer's.
ItemSearch = Callable[[Question, str, int], list[ProfileItem]]


@dataclass
class MethodConfig:
    """One input-level personalization method; saved beside every report it produced."""

    retriever: str = field(default="none", metadata={
        "help": "none|random|recency|bm25|dense|hybrid|cf (by other users' answers: reads the train split)|..."})
    k: int = field(default=4, metadata={"help": "Items retrieved from the user's history."})
    profile: bool = field(default=False, metadata={"help": "Prepend a cached LLM-written user summary."})
    stats: bool = field(default=False, metadata={
        "help": "Prepend a statistical profile: the distribution of the user's own past outputs (no LLM call)."})
    crowd: bool = field(default=False, metadata={
        "help": "Prepend collaborative context: other users' outputs for the queried item, from the train split "
                "(the asking user's own never; see pllm.prompting.profile.ItemCrowd)."})
    style: str | None = field(default=None, metadata={
        "help": "Prompt style: demonstrations|instruction (default: demonstrations where the task has them)."})
    predict: str = field(default="auto", metadata={
        "help": "auto (score labels when the task has them and the backend can), score, or generate."})
    readout: str = field(default="argmax", metadata={
        "help": "Label scores -> prediction: argmax, expected (numeric labels: probability-weighted mean) or "
                "median (numeric labels: MAE-optimal). Choose it on a dev split."})
    calibrate: bool = field(default=False, metadata={
        "help": "Contextual calibration: divide the label distribution by the one a content-free prompt (same "
                "demonstrations, query 'N/A') gets, removing the label prior the demonstrations set."})
    ft: bool = field(default=False, metadata={
        "help": "Learned: run on the base model with the task adapter trained on the train split's users, with "
                "this method's own retrieval inside every training prompt (see pllm.adapt.learned)."})
    ft_user: bool = field(default=False, metadata={
        "help": "Learned, second stage (OPPU): on top of the merged task model, a private LoRA per scored user "
                "trained on that user's own earlier items with this method's rendering; users with too few items "
                "run on the task model alone (see pllm.adapt.private). Needs ft."})
    ft_soft: bool = field(default=False, metadata={
        "help": "Learned, soft stage (PPlug on OPPU's first stage): on top of the merged task model, one user "
                "encoder trained on the train split's users (texts the task adapter did not train on), whose soft "
                "tokens go before every prompt (see pllm.adapt.learned). Needs ft; not with ft_user."})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "Prompt budget in generator tokens."})
    embedder: str = field(default="minilm", metadata={"help": "Embedder for dense/hybrid retrieval."})
    seed: int = field(default=0, metadata={"help": "Seed for the random retriever."})

    def __post_init__(self) -> None:
        # Names are checked here, on construction, so a typo fails before any model loads.
        if retriever_needs_embedder(self.retriever):  # an unknown name raises UnknownNameError listing known ones
            EMBEDDERS.get(self.embedder)
        if self.style is not None:
            PROMPT_STYLES.get(self.style)
        if self.k < 0:
            raise InputError(f"k must be >= 0, got {self.k}", field="k")
        if self.k == 0 and self.retriever != "none":
            raise InputError(f"k=0 retrieves nothing with retriever {self.retriever!r}: give k >= 1, or use "
                             "retriever 'none'", field="k")
        if self.predict not in PREDICT_MODES:
            raise InputError(f"predict must be one of {PREDICT_MODES}, got {self.predict!r}", field="predict")
        if self.readout not in READOUTS:
            raise InputError(f"readout must be one of {READOUTS.names()}, got {self.readout!r}", field="readout")
        if self.ft and self.profile:
            raise InputError("a learned method (ft) with an LLM-written profile summary is not supported: summaries "
                             "would have to be written for every training item's history", field="profile")
        if self.ft_user and not self.ft:
            raise InputError("a private user adapter (ft_user) sits on top of the learned task adapter: it needs ft "
                             "(method names: ft+user+...)", field="ft_user")
        if self.ft_soft and not self.ft:
            raise InputError("soft tokens on a learned method (ft_soft) sit on top of the learned task adapter: they "
                             "need ft (method names: ft+soft+...)", field="ft_soft")
        if self.ft_soft and self.ft_user:
            raise InputError("ft+soft+ and ft+user+ are two different second stages on the task adapter; stacking "
                             "both is not supported: pick one", field="ft_soft")
        if self.max_prompt_tokens < 16:
            raise InputError("max_prompt_tokens must be at least 16", field="max_prompt_tokens")

    @property
    def reads_crowd(self) -> bool:
        """Whether this method reads other users' answers from the train split: the crowd line (`crowd+`) or a
        collaborative retriever (`cf@k`); `crowd_from` fits what it reads."""
        return self.crowd or retriever_reads_train(self.retriever)

    def crowd_from(self, spec: TaskSpec, train: Sequence[Question]) -> ItemCrowd | None:
        """Other users' answers per item, fitted on `train` (the train split: never a test target), when this
        method reads them; None otherwise, so nothing is fitted for a method that would not use it."""
        return ItemCrowd(spec).fit(train) if self.reads_crowd else None

    def task_adapter_method(self) -> MethodConfig:
        """The method a learned task adapter is trained and named for: the readout, calibration and a private
        second stage (`ft+user+`, `ft+soft+`) do not change it, so they share one adapter."""
        return dataclasses.replace(self, ft_user=False, ft_soft=False, readout="argmax", calibrate=False)

    @property
    def label(self) -> str:
        """`[ft+[user+|soft+]][profile+][stats+][crowd+]retriever@k`, with `/readout` and `+cal` when those differ
        from the default."""
        parts = [] if self.retriever == "none" else [f"{self.retriever}@{self.k}"]
        if self.crowd:
            parts.insert(0, "crowd")
        if self.stats:
            parts.insert(0, "stats")
        if self.profile:
            parts.insert(0, "profile")
        if self.ft_user:
            parts.insert(0, "user")
        if self.ft_soft:
            parts.insert(0, "soft")
        if self.ft:
            parts.insert(0, "ft")
        label = "+".join(parts) or "none"
        if self.calibrate:
            label += "+cal"
        return label if self.readout == "argmax" else f"{label}/{self.readout}"


@dataclass
class PredictionRecord:
    id: str
    user_id: str
    prediction: str | None
    target: str | None
    raw: str = ""
    label_scores: dict[str, float] | None = None
    label_prior: dict[str, float] | None = None  # content-free prompt's label scores (calibrated methods)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = False
    retrieved: list[str] = field(default_factory=list)
    empty_profile: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of a record (details files, cell logs, cached results)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictionRecord:
        """A record from its JSON form; keys a log line adds beside the record (wall time, device) are ignored."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass
class Timings:
    retrieval: float = 0.0
    summary: float = 0.0
    prompt: float = 0.0
    model: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


class Personalizer:
    """Retrieve, summarize, render, predict. `style` is a configured instance in place of the method's style
    name (chat's memory placement); `search` replaces the per-user indexes built here over `question.profile`;
    `crowd` (fitted on the train split) is required by a method with collaborative context."""

    def __init__(self, spec: TaskSpec, generator: Generator, method: MethodConfig | None = None, *,
                 store: Any = None, embedder: Any = None, summary_config: SummaryConfig | None = None,
                 index_cache_size: int = 256, style: PromptStyle | None = None,
                 search: ItemSearch | None = None, crowd: ItemCrowd | None = None) -> None:
        self.spec, self.generator = spec, generator
        self.method = method or MethodConfig()
        self.store = store
        self.style = style or get_style(self.method.style or default_style(spec))
        self.search = search
        self.builder = PromptBuilder(spec, self.style, count_tokens=generator.count_tokens,
                                     truncate_tokens=generator.truncate_to_tokens,
                                     max_prompt_tokens=self.method.max_prompt_tokens)
        self.mode = self._resolve_mode()
        if self.mode == "score":
            check_readout(spec, self.method.readout)
        elif self.method.readout != "argmax" or self.method.calibrate:
            raise InputError("readouts and calibration act on label scores; this method generates (the task has no "
                             "labels or the backend cannot score)", field="readout")
        if self.method.profile and store is None:
            raise InputError("profile summaries are cached in a user store; pass store=")
        self.summarizer = ProfileSummarizer(generator, spec, store, summary_config) if self.method.profile else None
        if self.method.reads_crowd and crowd is None:
            what = "shows other users' answers for the item" if self.method.crowd else \
                "retrieves by other users' answers"
            raise InputError(f"method {self.method.label!r} {what}: it needs the train split (a fitted ItemCrowd)",
                             field="crowd" if self.method.crowd else "retriever")
        self.crowd = crowd if self.method.crowd else None
        self._coratings = crowd.coratings() if crowd is not None and retriever_reads_train(self.method.retriever) \
            else None
        self._embedder = embedder
        self._indexes: OrderedDict[tuple, RetrieverIndex] = OrderedDict()
        self._index_cache_size = index_cache_size
        self.timings = Timings()
        if search is None:  # fail early on a bad name or option
            make_retriever(self.method.retriever, **self._retriever_options(None))
        else:  # the caller's search builds the retriever with its own resources (a server's cross-encoder)
            RETRIEVERS.get(self.method.retriever)

    # -- retrieval ------------------------------------------------------------------------------
    def _retriever_options(self, user_id: str | None) -> dict[str, Any]:
        # Item embeddings persist in the store (when given), keyed by user for forgetting.
        return retriever_options(self.method.retriever, embedder=self._embedder or self.method.embedder,
                                 cache=self.store, user_id=user_id, seed=self.method.seed, generator=self.generator,
                                 coratings=self._coratings)

    def _index(self, question: Question) -> RetrieverIndex:
        key = (question.user_id, tuple(p.id for p in question.profile))
        index = self._indexes.get(key)
        if index is not None:
            self._indexes.move_to_end(key)
            return index
        retriever = make_retriever(self.method.retriever, **self._retriever_options(question.user_id))
        cf = self._coratings is not None  # only a collaborative retriever matches items across users
        index = retriever.build([Doc(text=self.spec.retrieval_text(p), timestamp=p.timestamp,
                                     group=item_group(p.fields), key=self.spec.item_key(p) if cf else None)
                                 for p in question.profile])
        self._indexes[key] = index
        while len(self._indexes) > self._index_cache_size:
            self._indexes.popitem(last=False)
        return index

    def retrieve(self, question: Question) -> list[ProfileItem]:
        if self.method.retriever == "none" or self.method.k == 0 or not question.profile:
            return []
        query = self.spec.retrieval_query(question)
        if self.search is not None:
            return self.search(question, query, self.method.k)
        hits = self._index(question).search(query, self.method.k, query_timestamp=question.timestamp,
                                            seed_key=question.id)
        return [question.profile[h.index] for h in hits]

    # -- prompts --------------------------------------------------------------------------------
    def build_prompts(self, questions: Sequence[Question], *,
                      retrieved: Sequence[list[ProfileItem]] | None = None) -> list[BuiltPrompt]:
        """`retrieved`: each question's items when `retrieve` already ran (the server retrieves in its io pool
        and builds in the generation thread, since a profile summary is a generation)."""
        return self._build(questions, retrieved)[0]

    def _build(self, questions: Sequence[Question], retrieved: Sequence[list[ProfileItem]] | None = None
               ) -> tuple[list[BuiltPrompt], list[BuiltPrompt] | None]:
        """The prompts, and (calibrated methods) their content-free twins: same items and summary."""
        t0 = time.perf_counter()
        retrieved = list(retrieved) if retrieved is not None else [self.retrieve(q) for q in questions]
        t1 = time.perf_counter()
        summaries: list[str | None] = [None] * len(questions)
        if self.summarizer is not None:
            summaries = list(self.summarizer.summaries([(q.user_id, q.profile) for q in questions]))
        if self.method.stats:
            summaries = [" ".join(x for x in (s, output_stats(self.spec, q.profile)) if x) or None
                         for s, q in zip(summaries, questions)]
        if self.crowd is not None:
            summaries = [" ".join(x for x in (s, self.crowd.text(q)) if x) for s, q in zip(summaries, questions)]
        t2 = time.perf_counter()
        built = [self.builder.build(q, items, s) for q, items, s in zip(questions, retrieved, summaries)]
        free = [self.builder.build(content_free(q), items, s) for q, items, s in zip(questions, retrieved, summaries)
                ] if self.method.calibrate else None
        t3 = time.perf_counter()
        self.timings.retrieval += t1 - t0
        self.timings.summary += t2 - t1
        self.timings.prompt += t3 - t2
        return built, free

    # -- prediction -----------------------------------------------------------------------------
    def _resolve_mode(self) -> str:
        mode = self.method.predict
        can_score = bool(self.spec.labels) and self.generator.supports_scoring
        if mode == "auto":
            return "score" if can_score else "generate"
        if mode == "score" and not can_score:
            why = "the task has no label set" if not self.spec.labels else \
                f"the {self.generator.name!r} backend cannot score"
            raise InputError(f"cannot score labels: {why}; use predict='generate'", field="predict")
        return mode

    def predict(self, questions: Sequence[Question], *, batch_size: int = 8) -> list[PredictionRecord]:
        out: list[PredictionRecord] = []
        for start in range(0, len(questions), batch_size):
            chunk = list(questions[start:start + batch_size])
            built, free = self._build(chunk)
            t0 = time.perf_counter()
            if self.mode == "score":
                records = self._score(chunk, built, free, batch_size)
            else:
                records = self._generate(chunk, built, batch_size)
            dt = time.perf_counter() - t0
            self.timings.model += dt
            for r in records:
                r.seconds = dt / max(len(records), 1)
            out.extend(records)
        return out

    def _record(self, q: Question, b: BuiltPrompt, prediction: str | None, raw: str, **kw: Any) -> PredictionRecord:
        return PredictionRecord(id=q.id, user_id=q.user_id, prediction=prediction, target=q.target, raw=raw,
                                prompt_tokens=b.prompt_tokens, truncated=b.truncated, retrieved=b.item_ids,
                                empty_profile=not q.profile, **kw)

    def _label_logp(self, built: list[BuiltPrompt], batch_size: int) -> list[dict[str, float]]:
        labels = list(self.spec.labels or [])
        conts = [[b.continuation_prefix + lab for lab in labels] for b in built]
        logp = self.generator.score([b.prompt for b in built], conts, batch_size=batch_size)  # (N, C)
        return [{lab: float(s) for lab, s in zip(labels, row)} for row in logp]

    def _score(self, questions: list[Question], built: list[BuiltPrompt], free: list[BuiltPrompt] | None,
               batch_size: int) -> list[PredictionRecord]:
        scores = self._label_logp(built, batch_size)
        priors: list[dict[str, float] | None] = list(self._label_logp(free, batch_size)) if free else \
            [None] * len(built)
        out = []
        for q, b, sc, prior in zip(questions, built, scores, priors):
            pred = read_out(self.spec, sc, self.method.readout, prior)
            out.append(self._record(q, b, pred, pred, label_scores=sc, label_prior=prior))
        return out

    def _generate(self, questions: list[Question], built: list[BuiltPrompt], batch_size: int
                  ) -> list[PredictionRecord]:
        gens = self.generator.generate([b.prompt for b in built], max_new_tokens=self.spec.max_new_tokens,
                                       stop=built[0].stop or None, batch_size=batch_size)
        return [self._record(q, b, self.spec.parse_output(g.text), g.text, completion_tokens=g.completion_tokens)
                for q, b, g in zip(questions, built, gens)]


def content_free(question: Question) -> Question:
    """The question with its content replaced by "N/A" (contextual calibration's content-free input)."""
    return dataclasses.replace(question, input="N/A", query={k: "N/A" for k in question.query})


def is_unparseable(record: PredictionRecord) -> bool:
    return record.prediction is None or (isinstance(record.prediction, float) and math.isnan(record.prediction))
