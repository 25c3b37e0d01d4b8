"""The `movielens-genre` builder: LaMP-2 shaped personalized tagging on MovieLens-100k.

MovieLens has no user-written tags, so the label is defined from the user's own behaviour, and only
from what happened strictly before the question (it never reads the rating being predicted):

    the tag a user gives a movie = among the movie's own genres, the one the user has most often
    *liked* (rated 4 or 5) in their earlier history; ties go to the genre the user has watched more
    often, then to MovieLens's genre order.

So a single-genre movie gets its genre, and a multi-genre movie ("Action Comedy Romance") gets the
genre this user has shown they enjoy: the personal part of the task. The query shows only the title
and year (as LaMP-2 shows only the description): the model must know or guess the movie's genres and
read the user's preferences from the history. Profile items are the user's earlier movies with their
genres, rating and their own tag, computed by the same rule at that item's time.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

from pllm.data.base import BUILDERS, BuildConfig, Make, Pick
from pllm.data.movielens import ML_GENRES, MovieLens, MovieLensBuilder, Rating, movie_fields
from pllm.types import ProfileItem, Question

GENRE_LABELS = [g for g in ML_GENRES if g != "unknown"]  # the 18 real genres
LIKED = 4  # a rating at or above this counts as "liked"


def genre_tag(genres: tuple[str, ...], liked: Counter[str], seen: Counter[str]) -> str | None:
    """The tag rule (module docstring), given the counts of the user's strictly earlier movies per genre
    (`liked`: rated 4-5, `seen`: any rating). None when the movie has no real genre."""
    own = [g for g in genres if g in GENRE_LABELS]
    if not own:
        return None
    return min(own, key=lambda g: (-liked[g], -seen[g], GENRE_LABELS.index(g)))


def user_tags(history: list[Rating], ml: MovieLens) -> list[str | None]:
    """The tag of every rating in a time-ordered history, each from the ratings strictly before it (one
    pass: ratings in the same second never count for each other)."""
    liked: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    tags: list[str | None] = []
    pending: list[Rating] = []  # ratings at the current timestamp, counted once the clock moves on
    for r in history:
        if pending and pending[0].timestamp < r.timestamp:
            for p in pending:
                for g in ml.movies[p.movie_id].genres:
                    seen[g] += 1
                    liked[g] += p.rating >= LIKED
            pending = []
        tags.append(genre_tag(ml.movies[r.movie_id].genres, liked, seen))
        pending.append(r)
    return tags


def genre_question(user_id: str, history: list[Rating], tags: list[str | None], idx: int, ml: MovieLens, *,
                   max_profile: int | None) -> Question:
    """The tagging question for `history[idx]` (whose tag must not be None)."""
    query = history[idx]
    profile = [ProfileItem(id=f"{user_id}-{r.movie_id}", user_id=user_id, timestamp=float(r.timestamp),
                           fields={**movie_fields(ml.movies[r.movie_id]), "rating": str(r.rating), "tag": tag,
                                   "timestamp": r.timestamp})
               for r, tag in zip(history, tags) if r.timestamp < query.timestamp and tag is not None]
    if max_profile is not None:
        profile = profile[-max_profile:]
    fields = movie_fields(ml.movies[query.movie_id])
    text = (f'Which genre would this user tag the movie "{fields["title"]} ({fields["year"]})" with? '
            f"Answer with exactly one of: {', '.join(GENRE_LABELS)}.")
    return Question(id=f"{user_id}-{query.movie_id}", user_id=user_id, input=text,
                    query={"title": fields["title"], "year": fields["year"]}, profile=profile,
                    target=tags[idx], timestamp=float(query.timestamp))


def eligible(history: list[Rating], tags: list[str | None], want: int, min_profile: int) -> list[int]:
    """Indexes of up to `want` of the latest taggable ratings with >= `min_profile` strictly earlier
    taggable ratings, at distinct timestamps, in time order."""
    earlier_tagged = []
    count, i = 0, 0
    for j, r in enumerate(history):  # taggable ratings strictly before history[j]
        while i < j and history[i].timestamp < r.timestamp:
            count += tags[i] is not None
            i += 1
        earlier_tagged.append(count)
    out: list[int] = []
    for j in range(len(history) - 1, -1, -1):
        if tags[j] is None or earlier_tagged[j] < min_profile:
            continue
        if out and history[out[-1]].timestamp == history[j].timestamp:
            continue  # one question per second: held-out items are strictly later than earlier ones
        out.append(j)
        if len(out) == want:
            break
    return sorted(out)


@BUILDERS.register("movielens-genre")
class MovieLensGenreBuilder(MovieLensBuilder):
    name = "movielens-genre"
    task = "movielens-genre"

    def histories(self, ml: MovieLens) -> dict[str, list[Rating]]:
        return {u: [r for r in rs if r.movie_id in ml.movies] for u, rs in ml.by_user().items()}

    def plan(self, user_id: str, history: list[Rating], ml: MovieLens, config: BuildConfig) -> tuple[Pick, Make]:
        tags = user_tags(history, ml)
        return (partial(eligible, history, tags, min_profile=config.min_profile),
                lambda idx: genre_question(user_id, history, tags, idx, ml, max_profile=config.max_profile))
