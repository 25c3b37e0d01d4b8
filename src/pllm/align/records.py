"""Stored alignment adapters: the on-disk records (no torch import, so the CLI and the forget hook stay
light). An adapter folder under `pllm_home()/align/adapters/<name>/` holds the peft adapter (`adapter/`),
the training config (`config.json`) and `meta.json` (kind, base model, users it was trained for,
training metrics). Folders are written with `atomic_dir`, so a crash never leaves one a loader would trust.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.io import atomic_write_json
from pllm.paths import pllm_home

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def align_root() -> Path:
    return pllm_home() / "align"


def check_name(name: str, what: str = "adapter") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.' (max 128)")
    return name


@dataclass
class AdapterRecord:
    """What `meta.json` says about a stored adapter."""

    name: str
    kind: str  # "dpo" | "ric"
    base_model_id: str
    users: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)  # RiC: the conditioning dimensions, in order
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    path: Path | None = None

    @property
    def adapter_dir(self) -> Path:
        assert self.path is not None
        return self.path / "adapter"


class AdapterStore:
    """Named adapter folders under one root (default `pllm_home()/align/adapters`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else align_root() / "adapters"

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.path(name) / "meta.json").is_file()

    def write_meta(self, folder: Path, record: AdapterRecord) -> None:
        data = {k: v for k, v in record.__dict__.items() if k != "path"}
        atomic_write_json(folder / "meta.json", data)

    def get(self, name: str) -> AdapterRecord:
        folder = self.path(name)
        meta = folder / "meta.json"
        if not meta.is_file():
            known = ", ".join(r.name for r in self.list()) or "(none)"
            raise NotFoundError(f"no alignment adapter {name!r} under {self.root}; known: {known}")
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            record = AdapterRecord(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ArtifactError(f"corrupt adapter metadata {meta}: {exc}") from None
        record.path = folder
        if not (record.adapter_dir / "adapter_config.json").is_file():
            raise ArtifactError(f"adapter {name!r} has no peft adapter files in {record.adapter_dir}")
        return record

    def list(self) -> list[AdapterRecord]:
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "meta.json").is_file():
                continue
            with contextlib.suppress(Exception):
                out.append(self.get(folder.name))
        return out

    def delete(self, name: str) -> bool:
        folder = self.path(name)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True


def forget_user_adapters(store: Any, user_id: str) -> dict[str, int]:
    """FORGET hook: delete adapters trained on this user's data alone (group adapters trained on several
    users are kept; their records name the users so an operator can retrain them)."""
    adapters = AdapterStore()
    n = 0
    for record in adapters.list():
        if record.users == [user_id]:
            n += adapters.delete(record.name)
    return {"align_adapters": n}
