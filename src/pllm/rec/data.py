"""The `movielens-rec` builder: next-item recommendation as a candidate-ranking task.

Per question (one user, one held-out movie):
- target = the id of a movie the user rated highly (>= `like_threshold`), their latest such rating
  (time split) with at least `min_profile` strictly earlier ratings;
- profile = the user's ratings strictly before the target (title, year, genres, rating, liked);
- query["candidates"] = the target plus `negatives` movies the user never rated (at any time), sampled
  with a seed per (seed, user, target), then shuffled with the same seed so list position says nothing.

The candidates are a structured list of movie-field dicts in `Question.query` (written to the usual
LaMP-shaped JSON folder), never recovered from rendered text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pllm.data.base import BUILDERS, BuildConfig, DatasetBuilder, sample_users, split_plan, split_users
from pllm.data.movielens import MovieLens, Rating, load_movielens, movie_fields
from pllm.errors import InputError
from pllm.prompting.profile import ItemCrowd
from pllm.tasks.spec import TaskSpec, get_task, register_task, task_names
from pllm.types import ProfileItem, Question

TASK_NAME = "movielens-rec"

# The candidate-ranking task: metrics are the ranking metrics in `pllm.rec.metrics`; the spec's own
# metric (accuracy of the top-1 movie id = Recall@1) keeps it usable by generic LaMP tooling.
REC_SPEC = TaskSpec(
    name=TASK_NAME, kind="generation",
    description="MovieLens-100k: rank 1 held-out liked movie among unrated candidates (next-item recommendation).",
    query_text="{candidate_titles}", item_text="{title} {genres}", item_output="{liked}",
    item_template="{title} ({year}; {genres}): {rating}", item_join="\n",
    prompt_template="Movies this user rated (1-5):\n{profile}\n\n{input}",
    demo_header="A user's movie ratings. Liked: Yes means 4 or 5 stars.",
    demo_input="Movie: {title} ({year}; {genres})", demo_output_prefix="Liked:",
    parser="text", metrics=["accuracy"], max_new_tokens=4,
)

# One (user, candidate) pair as a yes/no question, for the pointwise ranker: the library's
# demonstration style renders the retrieved history as "Movie: ...\nLiked: Yes/No" lines.
POINTWISE_SPEC = TaskSpec(
    name="movielens-rec-pointwise", kind="classification",
    description="Will this user like this movie? (one candidate of a movielens-rec list)",
    labels=["Yes", "No"], query_text="{title} {genres}", item_text="{title} {genres}", item_output="{liked}",
    item_template="{title} ({year}; {genres}): {liked}", item_join="\n",
    prompt_template="Movies this user rated (liked or not):\n{profile}\n\nWill the user like {input}?",
    demo_header=REC_SPEC.demo_header, demo_input=REC_SPEC.demo_input, demo_output_prefix="Liked:",
    parser="label", metrics=["accuracy"], max_new_tokens=2,
)


def ensure_task() -> TaskSpec:
    """Register the `movielens-rec` task once (so `get_task` and task folders resolve it)."""
    if TASK_NAME not in task_names():
        register_task(REC_SPEC)
    return get_task(TASK_NAME)


@dataclass
class RecBuildConfig(BuildConfig):
    negatives: int = field(default=19, metadata={
        "help": "Movies the user never rated, sampled per question (the list has negatives + 1 candidates)."})
    like_threshold: int = field(default=4, metadata={"help": "A rating >= this counts as liked (target, Liked: Yes)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.negatives < 1:
            raise InputError("negatives must be >= 1", field="negatives")
        if not 1 <= self.like_threshold <= 5:
            raise InputError("like_threshold must be in 1..5", field="like_threshold")


def candidate_fields(movie_id: str, ml: MovieLens) -> dict[str, str]:
    return {"movie_id": movie_id, **movie_fields(ml.movies[movie_id])}


def history_item(user_id: str, r: Rating, ml: MovieLens, like_threshold: int) -> ProfileItem:
    return ProfileItem(id=f"{user_id}-{r.movie_id}", user_id=user_id, timestamp=float(r.timestamp),
                       fields={**candidate_fields(r.movie_id, ml), "rating": str(r.rating),
                               "liked": "Yes" if r.rating >= like_threshold else "No", "timestamp": r.timestamp})


def liked_targets(ratings: list[Rating], n: int, min_profile: int, like_threshold: int) -> list[int]:
    """Indexes of the user's latest `n` liked ratings with >= `min_profile` strictly earlier ratings."""
    out: list[int] = []
    for idx in range(len(ratings) - 1, -1, -1):
        r = ratings[idx]
        if r.rating < like_threshold:
            continue
        if sum(1 for x in ratings[:idx] if x.timestamp < r.timestamp) >= min_profile:
            out.append(idx)
        if len(out) == n:
            break
    return sorted(out)


def rec_question(user_id: str, ratings: list[Rating], idx: int, ml: MovieLens, all_movies: list[str],
                 config: RecBuildConfig) -> Question:
    target = ratings[idx]
    rated = {r.movie_id for r in ratings}  # every movie the user ever rated, before or after the target
    history = [r for r in ratings if r.timestamp < target.timestamp]
    if config.max_profile is not None:
        history = history[-config.max_profile:]
    pool = [m for m in all_movies if m not in rated]
    if len(pool) < config.negatives:
        raise InputError(f"user {user_id} has only {len(pool)} unrated movies for {config.negatives} negatives",
                         field="negatives")
    rng = random.Random(f"{config.seed}:{user_id}:{target.movie_id}")
    ids = [target.movie_id, *rng.sample(pool, config.negatives)]
    rng.shuffle(ids)
    candidates = [candidate_fields(m, ml) for m in ids]
    titles = "; ".join(f"{c['title']} ({c['year']})" for c in candidates)
    text = f"Which of these {len(ids)} movies will this user like next? {titles}"
    return Question(id=f"{user_id}-{target.movie_id}", user_id=user_id, input=text,
                    query={"candidates": candidates, "candidate_titles": titles},
                    profile=[history_item(user_id, r, ml, config.like_threshold) for r in history],
                    target=target.movie_id, timestamp=float(target.timestamp))


def kept_ratings(ratings: Sequence[Rating], questions: Sequence[Question]) -> list[Rating]:
    """Every rating except, for each user with questions, those at or after their earliest question: what
    the collaborative side (classic rankers, the crowd line) may read while those questions are ranked, so
    their targets and everything later stay unseen (leave-latest-out per user)."""
    cutoff: dict[str, float] = {}
    for q in questions:
        if q.timestamp is None:
            raise InputError("rec questions need a timestamp to cut the training data", source=q.id)
        cutoff[q.user_id] = min(cutoff.get(q.user_id, q.timestamp), q.timestamp)
    return [r for r in ratings if r.user_id not in cutoff or r.timestamp < cutoff[r.user_id]]


def rec_crowd(ml: MovieLens, questions: Sequence[Question], *, like_threshold: int = 4) -> ItemCrowd:
    """Collaborative context for the pointwise ranker (`crowd` in `PointwiseConfig`): per movie, how many
    other users rated it and what share liked it, read from exactly the ratings the classic rankers are
    fitted on (`kept_ratings`); `ItemCrowd` leaves the asking user out."""
    by_user: dict[str, list[ProfileItem]] = {}
    for r in kept_ratings(ml.ratings, questions):
        by_user.setdefault(r.user_id, []).append(history_item(r.user_id, r, ml, like_threshold))
    holders = [Question(id=f"crowd-{u}", user_id=u, input="", query={}, profile=items)
               for u, items in sorted(by_user.items())]
    return ItemCrowd(POINTWISE_SPEC).fit(holders)


def check_rec_question(q: Question, *, where: str = "question", index: int | None = None) -> None:
    """The task's invariants: the target is one candidate, no other candidate was ever in the history,
    and no history item is at or after the target's time."""
    cands = candidates_of(q, where=where, index=index)
    ids = [c["movie_id"] for c in cands]
    if q.target not in ids:
        raise InputError("the target is not among the candidates", source=where, index=index, field="target")
    if len(set(ids)) != len(ids):
        raise InputError("duplicate candidates", source=where, index=index, field="candidates")
    history_ids = {p.fields.get("movie_id") for p in q.profile}
    if q.target in history_ids:
        raise InputError("the target is in the history", source=where, index=index, field="profile")
    if history_ids & (set(ids) - {q.target}):
        raise InputError("a negative candidate is in the history", source=where, index=index, field="candidates")


def candidates_of(q: Question, *, where: str = "question", index: int | None = None) -> list[dict[str, Any]]:
    cands = q.query.get("candidates")
    if not isinstance(cands, list) or not cands or not all(isinstance(c, dict) and "movie_id" in c for c in cands):
        raise InputError("query.candidates must be a non-empty list of movie dicts with movie_id",
                         source=where, index=index, field="candidates")
    return cands


def target_index(q: Question) -> int:
    ids = [str(c["movie_id"]) for c in candidates_of(q)]
    try:
        return ids.index(str(q.target))
    except ValueError:
        raise InputError("the target is not among the candidates", source=q.id, field="target") from None


@BUILDERS.register(TASK_NAME)
class MovieLensRecBuilder(DatasetBuilder):
    name = TASK_NAME
    task = TASK_NAME

    def spec(self) -> TaskSpec:
        return ensure_task()

    def questions(self, config: BuildConfig) -> dict[str, list[Question]]:
        if not isinstance(config, RecBuildConfig):  # `pllm data build` passes a plain BuildConfig
            config = RecBuildConfig(**{k: getattr(config, k) for k in BuildConfig.__dataclass_fields__})
        ml = load_movielens(config.source)
        by_user = ml.by_user()
        all_movies = sorted(ml.movies, key=lambda m: (int(m) if m.isdigit() else 0, m))
        users = sample_users(list(by_user), config)
        splits: dict[str, list[Question]] = {"train": [], "dev": [], "test": []}
        assignment = split_users(users, config) if config.split == "user" else {}
        for u in users:
            rs = by_user[u]
            pick = partial(liked_targets, rs, min_profile=config.min_profile, like_threshold=config.like_threshold)
            for split, idxs in split_plan(u, assignment, config, pick):
                for idx in idxs:
                    q = rec_question(u, rs, idx, ml, all_movies, config)
                    check_rec_question(q, where=f"{split} split")
                    splits[split].append(q)
        return splits
