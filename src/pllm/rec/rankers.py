"""Candidate rankers for `movielens-rec` questions, all behind one `Ranker` interface and registry.

Classic recommenders (what a recommender engineer would deploy): `popularity`, `itemknn` (cosine over
co-ratings), `mf-als` (implicit's alternating least squares), `mf-svd` (scikit-learn TruncatedSVD), and
`random` as the chance reference. They are fitted on `Interactions` that never include a question's
target or anything the user rated after it.

LLM rankers reuse the library: `llm-pointwise` turns each candidate into a yes/no question and scores
it through `Personalizer` (retrieval over the user's history with the candidate as the query, the
demonstration prompt style, label log-likelihoods), one batch per user; `llm-pointwise-adapter` is the
same ranker scored through `pllm.adapt.AdapterGenerator`, so each user's own peft adapter (or their
group's, or none) scores their candidates; `llm-listwise` shows the history and the lettered candidate
list and scores each candidate's letter as the continuation.
"""

from __future__ import annotations

import dataclasses
import json
import random
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from scipy import sparse

from pllm.errors import ArtifactError, InputError, PllmError
from pllm.models.base import Generator, Prompt
from pllm.pipeline import MethodConfig, Personalizer
from pllm.prompting.profile import ItemCrowd
from pllm.prompting.styles import get_style
from pllm.rec.data import POINTWISE_SPEC, REC_SPEC, TASK_NAME, candidates_of, ensure_task, kept_ratings, target_index
from pllm.registry import Registry
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.adapt.store import AdapterRecord, AdapterStore
    from pllm.soft.train import SoftTrainConfig, SoftTrainResult

# ------------------------------------------------------------------------------------- training data


@dataclass
class Interactions:
    """A binary user x item matrix (who rated what) for the classic recommenders."""

    users: list[str]
    items: list[str]
    matrix: sparse.csr_matrix  # (U, I) float32, 1 where the user rated the item

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.item_index = {m: i for i, m in enumerate(self.items)}

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]], items: Sequence[str] | None = None) -> Interactions:
        users = sorted({u for u, _ in pairs})
        item_list = list(items) if items is not None else sorted({m for _, m in pairs})
        ui = {u: i for i, u in enumerate(users)}
        ii = {m: i for i, m in enumerate(item_list)}
        rows = [ui[u] for u, m in pairs if m in ii]
        cols = [ii[m] for _, m in pairs if m in ii]
        mat = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                shape=(len(users), len(item_list)))
        mat.data[:] = 1.0  # duplicates collapse to one interaction
        return cls(users, item_list, mat)


def training_interactions(ratings: Sequence[Any], questions: Sequence[Question],
                          items: Sequence[str] | None = None) -> Interactions:
    """Every rating except, for each user with questions, those at or after their earliest question:
    the targets and everything later stay unseen (leave-latest-out per user, `kept_ratings`)."""
    return Interactions.from_pairs([(r.user_id, r.movie_id) for r in kept_ratings(ratings, questions)], items)


# ----------------------------------------------------------------------------------------- interface


class Ranker(ABC):
    """Scores a question's candidates (higher = more likely liked); one call per user."""

    name: ClassVar[str]
    kind: ClassVar[str] = "classic"  # classic | llm

    def fit(self, train: Interactions) -> None:  # noqa: B027 - most LLM rankers need no fitting
        """Learn from training interactions (classic rankers)."""

    @abstractmethod
    def score(self, question: Question) -> np.ndarray:
        """(C,) scores aligned with `question.query['candidates']`."""

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name}


RANKERS: Registry[Callable[..., Ranker]] = Registry("ranker")


def make_ranker(name: str, **options: Any) -> Ranker:
    return RANKERS.get(name)(**options)


def _candidate_ids(q: Question) -> list[str]:
    return [str(c["movie_id"]) for c in candidates_of(q)]


def _history_ids(q: Question) -> list[str]:
    return [str(p.fields["movie_id"]) for p in q.profile if "movie_id" in p.fields]


class _Fitted(Ranker):
    def __init__(self) -> None:
        self.train: Interactions | None = None

    def _need(self) -> Interactions:
        if self.train is None:
            raise PllmError(f"ranker {self.name!r} must be fitted before scoring")
        return self.train

    def _cols(self, ids: Sequence[str]) -> np.ndarray:
        index = self._need().item_index
        return np.array([index.get(m, -1) for m in ids], dtype=np.int64)


@RANKERS.register("random")
class RandomRanker(Ranker):
    """Uniform random scores, seeded per question: the chance reference (Recall@1 = 1/C expected)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, question: Question) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int.from_bytes(question.id.encode()[:8].ljust(8, b"\0"), "little")])
        return rng.random(len(candidates_of(question)))

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "seed": self.seed}


@RANKERS.register("popularity")
class PopularityRanker(_Fitted):
    """How many training users rated the candidate."""

    name = "popularity"

    def fit(self, train: Interactions) -> None:
        self.train = train
        self.counts = np.asarray(train.matrix.sum(axis=0)).ravel()  # (I,)

    def score(self, question: Question) -> np.ndarray:
        cols = self._cols(_candidate_ids(question))
        return np.where(cols >= 0, self.counts[np.maximum(cols, 0)], 0.0).astype(np.float64)


@RANKERS.register("itemknn")
class ItemKNNRanker(_Fitted):
    """Item-item cosine similarity over co-ratings; a candidate scores the summed similarity to the
    user's `neighbors` most similar history items (all of them when None)."""

    name = "itemknn"

    def __init__(self, neighbors: int | None = 50) -> None:
        super().__init__()
        self.neighbors = neighbors

    def fit(self, train: Interactions) -> None:
        self.train = train
        m = train.matrix.tocsc().astype(np.float32)  # (U, I)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=0)).ravel())  # (I,)
        norms[norms == 0] = 1.0
        co = (m.T @ m).toarray()  # (I, I) co-rating counts
        self.sim = co / norms[:, None] / norms[None, :]
        np.fill_diagonal(self.sim, 0.0)

    def score(self, question: Question) -> np.ndarray:
        cols = self._cols(_candidate_ids(question))
        hist = self._cols(_history_ids(question))
        hist = hist[hist >= 0]
        out = np.zeros(len(cols))
        if hist.size == 0:
            return out
        for j, c in enumerate(cols):
            if c < 0:
                continue
            sims = self.sim[c, hist]  # (H,)
            if self.neighbors is not None and sims.size > self.neighbors:
                sims = np.partition(sims, -self.neighbors)[-self.neighbors:]
            out[j] = float(sims.sum())
        return out

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "neighbors": self.neighbors}


class _FactorRanker(_Fitted):
    user_factors: np.ndarray  # (U, F)
    item_factors: np.ndarray  # (I, F)

    def score(self, question: Question) -> np.ndarray:
        train = self._need()
        cols = self._cols(_candidate_ids(question))
        u = train.user_index.get(question.user_id)
        if u is None:  # a user with no training interactions: fold in the history
            hist = self._cols(_history_ids(question))
            hist = hist[hist >= 0]
            vec = self.item_factors[hist].mean(axis=0) if hist.size else np.zeros(self.item_factors.shape[1])
        else:
            vec = self.user_factors[u]
        scores = self.item_factors[np.maximum(cols, 0)] @ vec  # (C,)
        return np.where(cols >= 0, scores, -np.inf).astype(np.float64)


@RANKERS.register("mf-als")
class ALSRanker(_FactorRanker):
    """Matrix factorization for implicit feedback (Hu, Koren & Volinsky 2008), from the `implicit` library."""

    name = "mf-als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 20, alpha: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__()
        self.factors, self.regularization, self.iterations, self.alpha, self.seed = (
            factors, regularization, iterations, alpha, seed)

    def fit(self, train: Interactions) -> None:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError:
            raise PllmError("the mf-als ranker needs the `implicit` package (pip install implicit); "
                            "or use mf-svd (scikit-learn)") from None
        from threadpoolctl import threadpool_limits

        self.train = train
        with threadpool_limits(1, "blas"):  # implicit's own threads; a BLAS pool on top only contends
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                            iterations=self.iterations, alpha=self.alpha, random_state=self.seed,
                                            num_threads=1, calculate_training_loss=False)
            model.fit(train.matrix.tocsr(), show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "library": "implicit", "factors": self.factors,
                "regularization": self.regularization, "iterations": self.iterations, "alpha": self.alpha}


@RANKERS.register("mf-svd")
class SVDRanker(_FactorRanker):
    """Truncated SVD of the interaction matrix (scikit-learn): the pure-scikit-learn MF baseline."""

    name = "mf-svd"

    def __init__(self, factors: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.factors, self.seed = factors, seed

    def fit(self, train: Interactions) -> None:
        from sklearn.decomposition import TruncatedSVD

        self.train = train
        k = max(1, min(self.factors, min(train.matrix.shape) - 1))
        svd = TruncatedSVD(n_components=k, random_state=self.seed)
        self.user_factors = svd.fit_transform(train.matrix)  # (U, F) = U * Sigma
        self.item_factors = svd.components_.T  # (I, F)

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "library": "scikit-learn", "factors": self.factors}


# --------------------------------------------------------------------------------------- LLM rankers


def candidate_question(question: Question, candidate: dict[str, Any], target: str | None = None) -> Question:
    """One candidate of a list as a yes/no `Question` of `POINTWISE_SPEC` (query = the movie's fields)."""
    return Question(id=f"{question.id}#{candidate['movie_id']}", user_id=question.user_id,
                    input=f"Will the user like {candidate['title']}?", query=dict(candidate),
                    profile=question.profile, target=target, timestamp=question.timestamp)


def pointwise_training_questions(questions: Sequence[Question], *, negatives: int = 3,
                                 seed: int = 0) -> list[Question]:
    """Yes/No training questions from ranked lists with known targets: each list's held-out liked movie
    (Yes) and `negatives` of its unrated candidates sampled with `seed` (No). This is the ranking task
    itself, asked of other (training) users, which is what a shared model such as a soft-prompt user
    encoder can learn from; per-user adapters instead train on the user's own ratings."""
    if negatives < 0:
        raise InputError(f"negatives must be >= 0, got {negatives}", field="negatives")
    rng = random.Random(seed)
    out: list[Question] = []
    for q in questions:
        if q.target is None:
            raise InputError("training lists need their target (pass the outputs file)", source=q.id, field="target")
        cands = candidates_of(q)
        t = target_index(q)
        others = [c for i, c in enumerate(cands) if i != t]
        out.append(candidate_question(q, cands[t], "Yes"))
        out.extend(candidate_question(q, c, "No") for c in rng.sample(others, min(negatives, len(others))))
    return out


FT_RANK_PAIRS = 1200  # the fine-tuned ranker's default training texts: lists x (1 + negatives)
FT_RANK_NEGATIVES = 3  # unrated candidates (No) per training list


@dataclass
class PointwiseConfig:
    retriever: str = field(default="bm25", metadata={"help": "History retriever, the candidate as the query."})
    k: int = field(default=4, metadata={"help": "History items retrieved per candidate."})
    max_prompt_tokens: int = field(default=384, metadata={"help": "Prompt budget in generator tokens."})
    embedder: str = field(default="minilm", metadata={"help": "Embedder for dense/hybrid retrieval."})
    crowd: bool = field(default=False, metadata={
        "help": "Add one line with how many other users rated the candidate and what share liked it (CFRAG-style "
                "collaborative context, `rec_crowd`: the ratings the classic rankers are fitted on)."})
    crowd_rank: bool = field(default=False, metadata={
        "help": "With crowd: also say where the candidate stands by how many users rated it ('top 8% of items'), "
                "the scale a bare count lacks."})

    def __post_init__(self) -> None:
        if self.k < 0:
            raise InputError("k must be >= 0", field="k")
        if self.crowd_rank and not self.crowd:
            raise InputError("crowd_rank renders the crowd line: it needs crowd", field="crowd_rank")

    def crowd_of(self, crowd: ItemCrowd | None) -> ItemCrowd | None:
        """`crowd` rendered as this config asks (the fitted answers are shared, not copied)."""
        return crowd.ranked(self.crowd_rank) if crowd is not None else None

    def owner(self, model_id: str, *, pairs: int = FT_RANK_PAIRS, negatives: int = FT_RANK_NEGATIVES) -> str:
        """The fine-tuned ranker's adapter name: one per rendering, base model and sample (texts and negatives per
        list, named where not the default), so no size overwrites another in the same folder."""
        from pllm.adapt.learned import ft_owner

        size = (f"-n{pairs}" if pairs != FT_RANK_PAIRS else "") + (
            f"-neg{negatives}" if negatives != FT_RANK_NEGATIVES else "")
        return ft_owner(self.method(), model_id) + ("-rank" if self.crowd_rank else "") + size

    def method(self) -> MethodConfig:
        """The pipeline method every pointwise prompt is rendered with (inference and training alike)."""
        return MethodConfig(retriever=self.retriever if self.k else "none", k=self.k, style="demonstrations",
                            predict="score", max_prompt_tokens=self.max_prompt_tokens, embedder=self.embedder,
                            crowd=self.crowd)


@RANKERS.register("llm-pointwise")
class PointwiseRanker(Ranker):
    """TALLRec-style: score = log p(" Yes") - log p(" No") after the retrieved history and the candidate.

    Each candidate becomes a yes/no `Question` (query = the movie's fields, profile = the history), so
    retrieval, the prompt budget and scoring all go through `Personalizer`, and `Prompt.question`
    carries the record to generators that personalize beyond the text. One `score` batch per user.
    """

    name = "llm-pointwise"
    kind = "llm"

    def __init__(self, generator: Generator, config: PointwiseConfig | None = None, *, store: Any = None,
                 embedder: Any = None, crowd: ItemCrowd | None = None) -> None:
        """`crowd`: other users' ratings per movie (`rec_crowd`), needed by a config with `crowd`."""
        self.generator = generator
        self.config = config or PointwiseConfig()
        if not generator.supports_scoring:
            raise InputError(f"llm-pointwise scores Yes/No likelihoods; the {generator.name!r} backend cannot score")
        self.personalizer = Personalizer(POINTWISE_SPEC, generator, self.config.method(), store=store,
                                         embedder=embedder, crowd=self.config.crowd_of(crowd))
        self.prompt_tokens = 0

    def candidate_questions(self, question: Question) -> list[Question]:
        return [candidate_question(question, c) for c in candidates_of(question)]

    def score(self, question: Question) -> np.ndarray:
        cands = self.candidate_questions(question)
        records = self.personalizer.predict(cands, batch_size=len(cands))
        self.prompt_tokens += sum(r.prompt_tokens for r in records)
        margins = []
        for r in records:
            if r.label_scores is None:  # the pointwise spec is a classification task: always scored
                raise PllmError(f"question {r.id!r} came back without label scores")
            margins.append(r.label_scores["Yes"] - r.label_scores["No"])
        return np.array(margins, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, **dataclasses.asdict(self.config), "model": self.generator.model_id,
                "backend": self.generator.name, "style": "demonstrations"}


@RANKERS.register("llm-pointwise-ft")
class FinetunedPointwiseRanker(PointwiseRanker):
    """`llm-pointwise` through a model fine-tuned on the ranking task itself (TALLRec-style): one shared
    LoRA (`train_pointwise_adapter`) trained on other users' lists, whose held-out liked movie is "Yes" and
    sampled unrated candidates are "No", rendered exactly as this ranker renders its prompts; merged into
    a copy of the base model, so scoring costs what the base model costs. Still the LLM alone: with
    `crowd` the prompt carries other users' ratings of the candidate, which `popularity` also reads."""

    name = "llm-pointwise-ft"

    def __init__(self, generator: Generator, config: PointwiseConfig | None = None, *, adapter: AdapterRecord,
                 crowd: ItemCrowd | None = None, store: Any = None, embedder: Any = None) -> None:
        from pllm.adapt.learned import learned_generator

        config = config or PointwiseConfig()
        trained = {k: adapter.config.get(k) for k in ("retriever", "k", "crowd", "max_prompt_tokens")}
        trained["crowd_rank"] = bool(adapter.source.get("crowd_rank", False))
        method = config.method()
        wanted = {"retriever": method.retriever, "k": method.k, "crowd": method.crowd,
                  "max_prompt_tokens": method.max_prompt_tokens, "crowd_rank": config.crowd_rank}
        if adapter.task != POINTWISE_SPEC.name or trained != wanted:
            raise ArtifactError(f"adapter {adapter.path} was trained for {adapter.task!r} with {trained}, not "
                                f"{POINTWISE_SPEC.name!r} with {wanted}: rank with the settings it was trained with")
        super().__init__(learned_generator(generator, POINTWISE_SPEC, adapter), config, store=store,
                         embedder=embedder, crowd=crowd)
        self.adapter = adapter

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "adapter": str(self.adapter.path), "data_hash": self.adapter.data_hash,
                "train_pairs": self.adapter.n_pairs, "train_seconds": self.adapter.train_seconds}


def train_pointwise_adapter(generator: Generator, lists: Sequence[Question], config: PointwiseConfig, *,
                            store: AdapterStore, crowd: ItemCrowd | None = None, negatives: int = FT_RANK_NEGATIVES,
                            max_pairs: int = FT_RANK_PAIRS, seed: int = 0, force: bool = False,
                            progress: Callable[[int, int], None] | None = None) -> tuple[AdapterRecord, bool]:
    """Train (or find cached) the `llm-pointwise-ft` adapter on ranked lists of *training* users, never the
    evaluated ones: `max_pairs // (1 + negatives)` lists are sampled (seeded) before any prompt is rendered,
    each gives its target (Yes) and `negatives` unrated candidates (No), and the recipe is the learned
    methods' (`FT_DEFAULTS`). Returns (record, trained?)."""
    from pllm.adapt.data import question_pairs
    from pllm.adapt.learned import fit_layers, ft_config
    from pllm.adapt.train import fit_adapter

    if not lists:
        raise InputError("the fine-tuned ranker needs training lists (a train split)", field="train")
    picked = random.Random(seed).sample(list(lists), min(max(1, max_pairs // (1 + negatives)), len(lists)))
    method = config.method()
    recipe = fit_layers(generator, ft_config(POINTWISE_SPEC, method, seed=seed))
    pairs = question_pairs(POINTWISE_SPEC, generator, pointwise_training_questions(picked, negatives=negatives,
                                                                                 seed=seed), recipe,
                           crowd=config.crowd_of(crowd))
    owner = config.owner(generator.model_id, pairs=max_pairs, negatives=negatives)
    return fit_adapter(generator, POINTWISE_SPEC, pairs, kind="task", owner=owner,  # type: ignore[arg-type]
                       config=recipe, store=store, n_items=len(lists), members=sorted({q.user_id for q in picked}),
                       source={"lists": len(picked), "negatives": negatives, "crowd_rank": config.crowd_rank},
                       force=force, step_callback=progress)


@RANKERS.register("llm-pointwise-adapter")
class AdapterPointwiseRanker(PointwiseRanker):
    """`llm-pointwise` scored through `AdapterGenerator`: every candidate row carries its user's record on
    `Prompt.question`, so it is routed to that user's own adapter, else (no adapter, a stale one, or fewer
    history items than `cold_start_items`) to the group adapter nearest their history, else to the base
    model. One user's candidates are still one `score` call: one forward pass with peft's per-row
    `adapter_names`.

    The adapters are those `pllm adapt train --task movielens-rec` writes: that task's demonstration
    prompts are exactly the pointwise prompts (same header, `Movie: ...` lines, `Liked:` Yes/No), so a
    user's adapter is trained on the texts it scores here. A shared task adapter, when present, is merged
    into the base weights (so pass a generator no other ranker uses).
    """

    name = "llm-pointwise-adapter"

    def __init__(self, generator: Generator, config: PointwiseConfig | None = None, *, adapters: Any = None,
                 task: str = TASK_NAME, mode: str = "user", cold_start_items: int | None = None,
                 memory_budget_mb: float = 256.0, store: Any = None, embedder: Any = None) -> None:
        """`generator`: a plain `HFGenerator` (wrapped here) or an `AdapterGenerator`; `adapters`: an
        `AdapterStore` or its root folder (default: where `pllm adapt train` writes)."""
        from pllm.adapt.generator import AdapterGenerator
        from pllm.adapt.store import AdapterStore
        from pllm.models.hf import HFGenerator

        if isinstance(generator, AdapterGenerator):
            routed = generator
        elif isinstance(generator, HFGenerator):
            if task == TASK_NAME:
                ensure_task()  # group routing reads the task's spec by name
            adapter_store = adapters if isinstance(adapters, AdapterStore) else AdapterStore(adapters)
            routed = AdapterGenerator(generator, task, store=adapter_store, mode=mode,
                                      cold_start_items=cold_start_items, memory_budget_mb=memory_budget_mb)
        else:
            raise InputError(f"llm-pointwise-adapter needs a local transformers model (backend 'hf'); the "
                             f"{generator.name!r} backend has no peft adapters", field="backend")
        super().__init__(routed, config, store=store, embedder=embedder)
        self.routed = routed

    def describe(self) -> dict[str, Any]:
        routes = {k.removeprefix("rows_"): v for k, v in self.routed.stats.items() if k.startswith("rows_")}
        return {**super().describe(), "adapter_task": self.routed.task, "adapter_mode": self.routed.mode,
                "adapters": str(self.routed.store.root), "cold_start_items": self.routed.cold_start_items,
                "task_adapter": self.routed.task_record is not None, "rows_by_route": routes}


@RANKERS.register("llm-pointwise-soft")
class SoftPointwiseRanker(PointwiseRanker):
    """`llm-pointwise` read through a soft-prompt user encoder (PPlug-style, `pllm.soft.model`): the
    user's whole history, embedded and pooled against each candidate, becomes a few soft tokens in front
    of that candidate's prompt, so the model sees all of the history rather than k retrieved lines. One
    encoder serves every user; `train_soft_ranker` (`pllm rec soft-train`) trains it on training users'
    lists against the frozen model. Without a config, retrieval follows what the encoder was trained with.
    """

    name = "llm-pointwise-soft"

    def __init__(self, generator: Generator, config: PointwiseConfig | None = None, *, encoder: Any = None,
                 store: Any = None, embedder: Any = None) -> None:
        """`generator`: a plain `HFGenerator` (wrapped with the encoder saved at `encoder`) or a
        `SoftPromptGenerator` for `POINTWISE_SPEC`."""
        from pllm.soft.model import SoftPromptGenerator, load_soft_generator

        if isinstance(generator, SoftPromptGenerator):
            soft = generator
        else:
            if encoder is None:
                raise InputError("llm-pointwise-soft needs an encoder folder (train one with `pllm rec soft-train`)",
                                 field="encoder")
            soft = load_soft_generator(encoder, generator, store=store)
        if soft.spec.name != POINTWISE_SPEC.name:
            raise ArtifactError(f"soft encoder {encoder or ''} was trained for task {soft.spec.name!r}, not the "
                                f"pointwise ranking task {POINTWISE_SPEC.name!r} (use `pllm rec soft-train`)")
        self.encoder_path = str(encoder) if encoder is not None else None
        self.train_config = _soft_train_config(encoder)
        if config is None:
            retriever = self.train_config.get("retriever", "none")
            config = PointwiseConfig(retriever=retriever, k=self.train_config.get("k", 0) if retriever != "none" else 0)
        super().__init__(soft, config, store=store, embedder=embedder)

    def describe(self) -> dict[str, Any]:
        cfg = self.generator.config  # type: ignore[attr-defined]
        return {**super().describe(), "encoder": self.encoder_path, "n_soft_tokens": cfg.n_soft,
                "pooling": cfg.pooling, "encoder_train_config": self.train_config}


def _soft_train_config(encoder: Any) -> dict[str, Any]:
    """The `SoftTrainConfig` an encoder folder was trained with (empty when it kept no log)."""
    log = Path(encoder) / "train_log.json" if encoder is not None else None
    if log is None or not log.is_file():
        return {}
    try:
        return dict(json.loads(log.read_text(encoding="utf-8")).get("train_config", {}))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise ArtifactError(f"{log}: unreadable training log") from None


def train_soft_ranker(base: Generator, questions: Sequence[Question], config: SoftTrainConfig, out: str | Path, *,
                      negatives: int = 3, store: Any = None, embedder: Any = None,
                      progress: Callable[[str, int, int], None] | None = None) -> SoftTrainResult:
    """Train the `llm-pointwise-soft` encoder on ranked lists of training users (never the evaluated
    users): `pointwise_training_questions` asked with the demonstrations style the ranker scores with."""
    from pllm.soft.train import train_soft_encoder

    qs = pointwise_training_questions(questions, negatives=negatives, seed=config.seed)
    config = dataclasses.replace(config, style="demonstrations")
    return train_soft_encoder(POINTWISE_SPEC, base, qs, config, out, store=store, embedder=embedder,  # type: ignore[arg-type]
                              progress=progress, extra={"pointwise_negatives": negatives, "lists": len(questions)})


@dataclass
class ListwiseConfig:
    retriever: str = field(default="bm25", metadata={
        "help": "History retriever; the query is all candidate titles and genres."})
    k: int = field(default=8, metadata={"help": "History items shown."})
    permutations: int = field(default=2, metadata={
        "help": "Candidate orders asked (1: as built, 2: also reversed); scores are averaged to cancel position bias."})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "Prompt budget in generator tokens."})
    embedder: str = field(default="minilm", metadata={"help": "Embedder for dense/hybrid retrieval."})

    def __post_init__(self) -> None:
        if self.k < 0:
            raise InputError("k must be >= 0", field="k")
        if self.permutations not in (1, 2):
            raise InputError("permutations must be 1 or 2", field="permutations")


@RANKERS.register("llm-listwise")
class ListwiseRanker(Ranker):
    """The model sees the history and the lettered candidate list; each candidate's score is the
    log-probability of its letter as the continuation (normalized over the letters), averaged over the
    asked orders. Backends that cannot score generate a letter instead; unparseable answers are counted
    and give every candidate the same score."""

    name = "llm-listwise"
    kind = "llm"
    letters = string.ascii_uppercase

    def __init__(self, generator: Generator, config: ListwiseConfig | None = None, *, store: Any = None,
                 embedder: Any = None) -> None:
        self.generator = generator
        self.config = config or ListwiseConfig()
        self.style = get_style("demonstrations")
        # The history is retrieved through the pipeline (REC_SPEC's query: all candidates' titles and genres).
        method = MethodConfig(retriever=self.config.retriever if self.config.k else "none", k=self.config.k,
                              embedder=self.config.embedder)
        self.retrieval = Personalizer(REC_SPEC, generator, method, store=store, embedder=embedder)
        self.prompt_tokens = 0
        self.unparseable = 0

    def history(self, question: Question) -> list[str]:
        """Retrieved history items rendered as demonstrations, best last (nearest the question)."""
        return [self.style.render_item(POINTWISE_SPEC, item) for item in reversed(self.retrieval.retrieve(question))]

    def render(self, question: Question, order: Sequence[int], history: list[str]) -> str:
        cands = candidates_of(question)
        lines = [f"{self.letters[i]}. {cands[j]['title']} ({cands[j]['year']}; {cands[j]['genres']})"
                 for i, j in enumerate(order)]
        head = REC_SPEC.demo_header + "\n\n" + ("\n\n".join(history) + "\n\n" if history else "")
        return (f"{head}Candidate movies:\n" + "\n".join(lines) +
                "\n\nOf these candidates, the movie this user will like most is option")

    def prompt(self, question: Question, order: Sequence[int]) -> Prompt:
        history = self.history(question)
        text = self.render(question, order, history)
        while history and self.generator.count_tokens(text) > self.config.max_prompt_tokens:
            history = history[1:]  # drop the least relevant (shown first) until it fits
            text = self.render(question, order, history)
        return Prompt(text=text, chat=False, question=question)

    def orders(self, n: int) -> list[list[int]]:
        forward = list(range(n))
        return [forward] if self.config.permutations == 1 else [forward, forward[::-1]]

    def score(self, question: Question) -> np.ndarray:
        n = len(candidates_of(question))
        if n > len(self.letters):
            raise InputError(f"llm-listwise labels candidates A-Z: at most 26, got {n}", source=question.id)
        orders = self.orders(n)
        prompts = [self.prompt(question, order) for order in orders]
        self.prompt_tokens += sum(self.generator.count_tokens(p.text) for p in prompts)
        total = np.zeros(n)
        if self.generator.supports_scoring:
            conts = [" " + self.letters[i] for i in range(n)]
            logp = self.generator.score(prompts, conts, batch_size=len(prompts))  # (P, n), by letter
            for row, order in zip(logp, orders):
                norm = row - np.logaddexp.reduce(row)  # log-softmax over the letters
                for pos, j in enumerate(order):
                    total[j] += norm[pos]
            return total / len(orders)
        gens = self.generator.generate(prompts, max_new_tokens=3, batch_size=len(prompts))
        for g, order in zip(gens, orders):
            pick = parse_letter(g.text, n)
            if pick is None:
                self.unparseable += 1
            else:
                total[order[pick]] += 1.0
        return total

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, **dataclasses.asdict(self.config), "model": self.generator.model_id,
                "backend": self.generator.name, "readout": "score" if self.generator.supports_scoring else "generate"}


def parse_letter(text: str, n: int) -> int | None:
    """Index of the first standalone option letter (A.. the n-th) in generated text, else None."""
    import re

    allowed = string.ascii_uppercase[:n]
    m = re.search(rf"\b([{allowed}])\b", text.strip())
    return allowed.index(m.group(1)) if m else None
