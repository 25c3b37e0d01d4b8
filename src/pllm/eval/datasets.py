"""The questions a run scores: a task folder (built from raw data when missing or built with other
settings, so one command reproduces a report), one split of it with its gold outputs, and the train
split that baselines fit on and learned methods train on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pllm.errors import InputError
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import TaskSpec, get_task
from pllm.types import Question

if TYPE_CHECKING:
    from pllm.data import BuildConfig
    from pllm.eval.grid import TaskEntry


@dataclass
class LoadedTask:
    """What a cell runs on: the scored questions of one task, and what may be learned from."""

    name: str
    spec: TaskSpec
    questions: list[Question]
    train: list[Question] = field(default_factory=list)  # what baselines fit on (never the scored questions)
    learn: list[Question] = field(default_factory=list)  # what learned methods train on (profiles only)
    learn_source: str | None = None  # the train questions file (a forgotten user's adapter is rebuilt from it)
    folder: Path | None = None
    split: str = "test"


def ensure_built(builder: str, build: BuildConfig) -> Path:
    """Build the task folder unless it already holds a build with exactly these settings."""
    from pllm.data import build_dataset
    from pllm.data.base import config_record

    folder = Path(build.out)
    saved = folder / "build_config.json"
    if not saved.is_file() or json.loads(saved.read_text(encoding="utf-8")) != config_record(build):
        build_dataset(builder, build)
    return folder


def read_split(folder: Path, split: str, spec: TaskSpec) -> list[Question]:
    return read_questions(folder / f"{split}_questions.json", spec=spec, outputs=folder / f"{split}_outputs.json")


def task_folder(entry: TaskEntry) -> Path:
    """A grid task's folder, built first when the entry has a `build` section."""
    if entry.build is None:
        folder = Path(entry.data or "")
        if not (folder / f"{entry.split}_questions.json").is_file():
            raise InputError(f"no {entry.split}_questions.json in the task folder (build it with "
                             "`pllm data build`, or give the task a `build` section)", source=str(folder))
        return folder
    from pllm.data import BuildConfig
    from pllm.eval.runner import slug
    from pllm.paths import pllm_home

    b = entry.build
    folder = Path(entry.data) if entry.data else pllm_home() / "bench-tasks" / slug(
        f"{b.builder}-{b.split}-s{b.seed}-u{b.max_users}-q{b.questions_per_user}")
    return ensure_built(b.builder, BuildConfig(source=b.source, out=str(folder), split=b.split, seed=b.seed,
                                               max_users=b.max_users, questions_per_user=b.questions_per_user))


def load_task(entry: TaskEntry) -> LoadedTask:
    """One grid task: its scored split (first `limit` questions) and its train split."""
    folder = task_folder(entry)
    spec = get_task(folder)
    qs = read_split(folder, entry.split, spec)
    if entry.limit is not None:
        qs = qs[: entry.limit]
    if not qs:
        raise InputError(f"no questions in the {entry.split} split", source=str(folder))
    learn: list[Question] = []
    source = None
    if entry.train_split and (folder / f"{entry.train_split}_questions.json").is_file():
        learn = read_split(folder, entry.train_split, spec)
        source = str((folder / f"{entry.train_split}_questions.json").resolve())
    # Baselines never fit on the questions they score; learned cells read only profiles, so a grid may
    # score the train split itself (e.g. to fit a hybrid on it) with the same adapter.
    train = learn if entry.train_split != entry.split else []
    return LoadedTask(entry.name or spec.name, spec, qs, train, learn, source, folder, entry.split)


def questions_task(spec: TaskSpec, questions: Path, *, outputs: Path | None = None, train: Path | None = None,
                   limit: int | None = None, needs_train: bool = False) -> LoadedTask:
    """A questions file as a task (`pllm eval`). The train split: `train`, else train_questions.json
    beside the questions file (with its outputs when present, for the baselines' fit); a learned, crowd+ or
    cf@k method without one is an error."""
    qs = read_questions(questions, spec=spec, outputs=outputs)
    if limit is not None:
        qs = qs[:limit]
    path = train or questions.parent / "train_questions.json"
    if path.is_dir():
        path = path / "train_questions.json"
    if not path.is_file() or path.resolve() == questions.resolve():
        if needs_train:
            raise InputError("a learned (ft+), crowd+ or cf@k method reads a train split: pass --train (a "
                             "train_questions.json or its folder); it must not be the questions scored",
                             source=str(path))
        return LoadedTask(spec.name, spec, qs)
    gold = path.with_name(path.name.replace("_questions", "_outputs"))
    learn = read_questions(path, spec=spec, outputs=gold if gold.is_file() and gold != path else None)
    return LoadedTask(spec.name, spec, qs, learn, learn, str(path.resolve()))
