"""The builder extension point. A builder turns a public raw dataset into a LaMP-format task folder:
`{train,dev,test}_questions.json`, `{train,dev,test}_outputs.json`, `task.yaml` (the spec) and
`build_config.json`. Builds are deterministic (same source and seed, same bytes) and validated
against the task spec before anything is written."""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pllm.errors import InputError
from pllm.io import atomic_dir, atomic_write_json, save_config
from pllm.registry import Registry
from pllm.tasks.lamp import question_to_json
from pllm.tasks.spec import TaskSpec, get_task, save_spec
from pllm.types import Question

SPLITS = ("train", "dev", "test")


@dataclass
class BuildConfig:
    source: str = field(metadata={"help": "Folder (or file) with the raw public data."})
    out: str = field(metadata={"help": "Output task folder (replaced atomically)."})
    split: str = field(default="user", metadata={
        "help": "user: disjoint users per split; time: every user's latest items held out."})
    seed: int = field(default=0, metadata={"help": "Seed for user sampling and splitting."})
    max_users: int | None = field(default=None, metadata={"help": "Sample at most this many users."})
    dev_fraction: float = field(default=0.1, metadata={"help": "Share of users in dev (user split)."})
    test_fraction: float = field(default=0.25, metadata={"help": "Share of users in test (user split)."})
    questions_per_user: int = field(default=1, metadata={"help": "Latest items per user turned into questions."})
    min_profile: int = field(default=5, metadata={"help": "Questions need this many strictly earlier items."})
    max_profile: int | None = field(default=None, metadata={"help": "Keep only the most recent N profile items."})

    def __post_init__(self) -> None:
        if self.split not in ("user", "time"):
            raise InputError(f"split must be 'user' or 'time', got {self.split!r}", field="split")
        if not 0 <= self.dev_fraction < 1 or not 0 < self.test_fraction < 1 or \
                self.dev_fraction + self.test_fraction >= 1:
            raise InputError("fractions must satisfy 0 <= dev, 0 < test, dev + test < 1", field="test_fraction")
        if self.questions_per_user < 1:
            raise InputError("questions_per_user must be >= 1", field="questions_per_user")
        if self.max_users is not None and self.max_users < 1:
            raise InputError("max_users must be >= 1", field="max_users")


@dataclass
class BuildResult:
    out: Path
    counts: dict[str, int]
    users: dict[str, int]


class DatasetBuilder(ABC):
    name: ClassVar[str]
    task: ClassVar[str]  # the registered task spec the output follows

    @abstractmethod
    def questions(self, config: BuildConfig) -> dict[str, list[Question]]:
        """Split name -> questions with profiles and targets (not yet written)."""

    def spec(self) -> TaskSpec:
        return get_task(self.task)


BUILDERS: Registry[type[DatasetBuilder]] = Registry("dataset builder")
# Raw datasets `pllm data download NAME` fetches: name -> download(dest, *, url, sha256, force, progress) -> folder.
DOWNLOADS: Registry[Callable[..., Path]] = Registry("download")


def split_users(user_ids: Sequence[str], config: BuildConfig) -> dict[str, str]:
    """user -> split for the user-based split (disjoint users), deterministic for the seed."""
    users = sorted(user_ids)
    rng = random.Random(config.seed)
    rng.shuffle(users)
    n = len(users)
    n_test = max(1, round(n * config.test_fraction))
    n_dev = round(n * config.dev_fraction)
    out = {}
    for i, u in enumerate(users):
        out[u] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return out


def split_plan(user_id: str, assignment: dict[str, str], config: BuildConfig,
               pick: Callable[[int], list[int]]) -> list[tuple[str, list[int]]]:
    """(split, item indexes) for one user. `pick(want)` gives up to `want` of the user's latest eligible
    items in time order. User split: `questions_per_user` of them go to the user's split (`assignment`,
    from `split_users`); time split: the latest go to test, the ones before to dev, earlier ones to train."""
    n = config.questions_per_user
    if config.split == "user":
        return [(assignment[user_id], pick(n))]
    picked = pick(3 * n)
    return [("test", picked[-n:]), ("dev", picked[-2 * n:-n]), ("train", picked[:-2 * n])]


Pick = Callable[[int], list[int]]  # want -> up to `want` of a user's latest eligible item indexes
Make = Callable[[int], Question]  # item index -> its question
Plan = Callable[[str], tuple[Pick, Make]]


def build_splits(user_ids: Sequence[str], config: BuildConfig, plan: Plan) -> dict[str, list[Question]]:
    """Every builder's split loop: sample the users, then put each user's questions in their splits.
    `plan(user)` gives `pick(want)` (the user's latest eligible item indexes, see `split_plan`) and the
    function that makes the question of one picked index."""
    users = sample_users(user_ids, config)
    assignment = split_users(users, config) if config.split == "user" else {}
    splits: dict[str, list[Question]] = {"train": [], "dev": [], "test": []}
    for u in users:
        pick, make = plan(u)
        for split, idxs in split_plan(u, assignment, config, pick):
            splits[split].extend(make(i) for i in idxs)
    return splits


def sample_users(user_ids: Sequence[str], config: BuildConfig) -> list[str]:
    users = sorted(user_ids)
    if config.max_users is not None and config.max_users < len(users):
        users = sorted(random.Random(config.seed + 1).sample(users, config.max_users))
    return users


def validate(spec: TaskSpec, questions: Sequence[Question], *, split: str) -> None:
    """Every record must render under the spec, targets must be in the label set, and no profile item
    may be at or after its question's time (the answer never leaks)."""
    for i, q in enumerate(questions):
        where = f"{split} split"
        try:
            spec.retrieval_query(q)
            for item in q.profile:
                spec.retrieval_text(item)
                spec.output_of(item)
        except InputError as exc:
            raise InputError(f"built record does not fit the task spec: {exc}", source=where, index=i) from None
        if q.target is None:
            raise InputError("built record has no target", source=where, index=i)
        if spec.labels and spec.kind == "classification" and q.target not in spec.labels:
            raise InputError(f"target {q.target!r} not in the label set", source=where, index=i)
        if q.timestamp is not None and any(p.timestamp is not None and p.timestamp >= q.timestamp
                                           for p in q.profile):
            raise InputError("a profile item is not strictly earlier than its question", source=where, index=i)


def config_record(config: BuildConfig) -> dict:
    """What is saved beside the build: everything but the output path, so equal builds are equal bytes."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "out"}


def build_dataset(name: str, config: BuildConfig) -> BuildResult:
    builder = BUILDERS.get(name)()
    spec = builder.spec()
    splits = builder.questions(config)
    for split, qs in splits.items():
        validate(spec, qs, split=split)
    out = Path(config.out)
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            qs = splits.get(split, [])
            atomic_write_json(tmp / f"{split}_questions.json", [question_to_json(q) for q in qs])
            atomic_write_json(tmp / f"{split}_outputs.json",
                              {"task": spec.name, "golds": [{"id": q.id, "output": q.target} for q in qs]})
        save_spec(spec, tmp / "task.yaml")
        save_config(config_record(config), tmp, "build_config.json")
    return BuildResult(out=out, counts={s: len(splits.get(s, [])) for s in SPLITS},
                       users={s: len({q.user_id for q in splits.get(s, [])}) for s in SPLITS})
