"""Where adapters live and how they are recorded, validated and forgotten: every adapter method's, the
per-task ones of `pllm adapt` and the named ones of `pllm align` alike.

Layout: `<root>/<task>/{task,groups,users,named}/<owner>/` with peft's own files (`adapter_config.json`,
`adapter_model.safetensors`) plus `pllm_adapter.json`: base model, training config, data hash, item
count, training time, loss curve, and the sha256 of every peft file. A folder is written under a temp
name and renamed (`atomic_dir`), and the record is written last inside it, so a crash never leaves a
folder that loads; a folder whose record is missing or whose files do not match it is refused with an
`ArtifactError` naming the folder. Alignment adapters (DPO, RiC) are *named* owners: task "align", kind
"named", owner = the adapter's name, which is also its peft adapter name. Folders written by earlier versions
of `pllm align` (`<name>/{meta.json,config.json,adapter/}` under `pllm_home()/align/adapters`, or under an
explicit root) are moved into this layout the first time a store over them is opened.

The root defaults to `adapters/` beside the user store's database. Rows in the `adapters` and
`adapter_members` tables (migration `0005_adapters` of the `ADAPTERS` feature, which owns them) index the
folders, so forgetting a user finds and deletes their adapter and marks every shared (task/group) adapter
trained on their data stale.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pllm.errors import ArtifactError, InputError, NotFoundError
from pllm.io import atomic_dir, atomic_write_json, sha1_text, to_jsonable
from pllm.paths import pllm_home
from pllm.users.store import Feature, UserStore

KINDS = ("task", "group", "user", "named")
RECORD_FILE = "pllm_adapter.json"
# The shared task adapter user and group adapters are trained on top of (OPPU's first stage). Learned
# methods' task adapters (`ft-...`, pllm.adapt.learned) are other owners of kind "task", used on their own.
BASE_OWNER = "task"
RECORD_VERSION = 1
_FOLDERS = {"task": "task", "group": "groups", "user": "users", "named": "named"}
NAMED_TASK = "align"  # the task named (alignment) adapters are filed under
LEGACY_META = "meta.json"  # the record of an align adapter folder written before the stores were one
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass
class AdapterRecord:
    """What `pllm_adapter.json` holds (`path` is where it was read from, not saved)."""

    kind: str
    task: str
    owner: str  # user id (user adapters), group id (group adapters), "task", or the name (named adapters)
    name: str  # the peft adapter name it is loaded under (unique per owner, a valid module key)
    method: str
    base_model: str
    base_key: str  # hash of the base weights' identity (model + merged task adapter), must match to load
    config: dict[str, Any]
    data_hash: str
    n_items: int
    n_pairs: int
    train_seconds: float
    losses: list[float]
    members: list[str] = field(default_factory=list)  # users whose data trained it (task/group/named adapters)
    centroid: list[float] | None = None  # group adapters: mean history embedding of the members
    embedder: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # where the training data came from (retrain-stale)
    dimensions: list[str] = field(default_factory=list)  # RiC: the conditioning dimensions, in order
    metrics: dict[str, Any] = field(default_factory=dict)  # training metrics (alignment methods)
    files: dict[str, str] = field(default_factory=dict)  # peft file -> sha256
    bytes: int = 0
    stale: bool = False
    created: float = 0.0
    version: int = RECORD_VERSION
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    @classmethod
    def from_json(cls, data: Any, path: Path) -> AdapterRecord:
        if not isinstance(data, dict):
            raise ArtifactError(f"adapter folder {path}: {RECORD_FILE} is not an object")
        known = {f.name for f in fields(cls)} - {"path"}
        missing = sorted(n for n in ("kind", "task", "owner", "name", "method", "base_key", "files")
                         if n not in data)
        if missing:
            raise ArtifactError(f"adapter folder {path}: {RECORD_FILE} lacks {missing}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known}, path=path)
        except TypeError as exc:
            raise ArtifactError(f"adapter folder {path}: bad {RECORD_FILE}: {exc}") from None


def adapter_name(kind: str, owner: str) -> str:
    """A peft adapter name for an owner: stable, unique, and a valid module key (no dots)."""
    return f"{kind[0]}_{sha1_text(kind, owner)[:16]}"


def engine_name(task: str, kind: str, owner: str) -> str:
    """The adapter's name on a serving engine (vLLM's `--lora-modules NAME=PATH`, then `model: NAME` per
    request): one engine holds every task's adapters, so unlike `adapter_name` it includes the task."""
    return f"{kind[0]}_{sha1_text(task, kind, owner)[:16]}"


def slug(owner: str) -> str:
    """A folder name for any user/group id: readable prefix + hash (ids may hold '/', '..', spaces)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", owner)[:40]
    return f"{safe}-{sha1_text(owner)[:10]}"


def check_name(name: str, what: str = "adapter") -> str:
    """A named adapter's (or soup's) name: it is a peft adapter name and part of a folder name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.' (max 128)")
    return name


def named_record(name: str, method: str, base_model: str, *, users: Sequence[str] = (),
                 dimensions: Sequence[str] = (), metrics: dict[str, Any] | None = None,
                 config: object = None) -> AdapterRecord:
    """The record of a named (alignment) adapter; `AdapterStore.write` fills in files, size and time."""
    metrics = dict(metrics or {})
    return AdapterRecord(kind="named", task=NAMED_TASK, owner=check_name(name), name=name, method=method,
                         base_model=base_model, base_key=sha1_text(base_model), config=to_jsonable(config or {}),
                         data_hash="", n_items=0, n_pairs=0, train_seconds=float(metrics.get("train_seconds") or 0.0),
                         losses=[], members=list(users), dimensions=list(dimensions), metrics=metrics)


def check_files(record: AdapterRecord) -> None:
    """Refuse a folder whose peft files are missing or differ from the sha256 its record holds."""
    folder = record.path
    assert folder is not None
    for name, digest in record.files.items():
        f = folder / name
        if not f.is_file():
            raise ArtifactError(f"adapter folder {folder} is incomplete: {name} is missing")
        if sha256_file(f) != digest:
            raise ArtifactError(f"adapter folder {folder} is corrupt: {name} does not match its "
                                "recorded sha256; delete it and retrain")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class AdapterStore:
    """Adapter folders under `root`, indexed in a user store's tables when `db` is given."""

    def __init__(self, root: str | Path | None = None, *, db: UserStore | None = None) -> None:
        legacy = Path(root) if root is not None else None  # where earlier `pllm align` wrote named adapters
        if root is None:
            root = (db.home if db is not None else pllm_home()) / "adapters"
            legacy = pllm_home() / "align" / "adapters" if db is None else None
        self.root = Path(root)
        self.db = db
        if db is not None:
            db.register_feature(ADAPTERS)
        if legacy is not None:
            self._migrate_legacy(legacy)

    # -- paths ----------------------------------------------------------------------------------
    def folder(self, task: str, kind: str, owner: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"adapter kind must be one of {KINDS}, got {kind!r}")
        return self.root / slug(task) / _FOLDERS[kind] / slug(owner)

    # -- writing --------------------------------------------------------------------------------
    def write(self, record: AdapterRecord, save_files: Callable[[Path], None], *,
              created: float | None = None) -> AdapterRecord:
        """Write peft files (by `save_files(tmp)`), hash them, write the record last, rename into place,
        then index it in the database (members included) in one transaction. `created` defaults to now."""
        dest = self.folder(record.task, record.kind, record.owner)
        with atomic_dir(dest) as tmp:
            save_files(tmp)
            if not (tmp / "adapter_config.json").is_file():
                raise ArtifactError(f"saving adapter {record.name}: peft wrote no adapter_config.json")
            record.files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            record.bytes = sum((tmp / n).stat().st_size for n in record.files)
            record.created = time.time() if created is None else created
            record.stale = False
            atomic_write_json(tmp / RECORD_FILE, record.to_json())
        record.path = dest
        self.index(record)
        return record

    def index(self, record: AdapterRecord) -> None:
        """(Re)write the database rows of a record (Ray workers write files; the driver indexes them)."""
        if self.db is None:
            return
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO adapters(task, kind, owner, name, path, method, base_model, data_hash, "
                "n_items, bytes, train_seconds, stale, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.task, record.kind, record.owner, record.name, str(record.path), record.method,
                 record.base_model, record.data_hash, record.n_items, record.bytes, record.train_seconds,
                 int(record.stale), record.created))
            conn.execute("DELETE FROM adapter_members WHERE task=? AND kind=? AND owner=?",
                         (record.task, record.kind, record.owner))
            conn.executemany("INSERT INTO adapter_members(task, kind, owner, member) VALUES (?, ?, ?, ?)",
                             [(record.task, record.kind, record.owner, m) for m in record.members])

    # -- reading --------------------------------------------------------------------------------
    def load_record(self, folder: str | Path, *, verify: bool = True) -> AdapterRecord:
        """The record of a complete adapter folder; anything half-written or corrupt is refused."""
        folder = Path(folder)
        if not folder.is_dir():
            raise NotFoundError(f"no adapter folder at {folder}")
        path = folder / RECORD_FILE
        if not path.is_file():
            raise ArtifactError(f"adapter folder {folder} is incomplete: no {RECORD_FILE} (a crashed or "
                                "foreign write); delete it and retrain")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"adapter folder {folder}: {RECORD_FILE} is not valid JSON ({exc})") from None
        record = AdapterRecord.from_json(data, folder)
        if "adapter_config.json" not in record.files:
            raise ArtifactError(f"adapter folder {folder}: the record lists no adapter_config.json")
        if verify:
            check_files(record)
        if self.db is not None and not record.stale:
            rows = self.db.execute("SELECT stale FROM adapters WHERE task=? AND kind=? AND owner=?",
                                   (record.task, record.kind, record.owner))
            record.stale = bool(rows and rows[0][0])
        return record

    def get(self, task: str, kind: str, owner: str, *, verify: bool = True) -> AdapterRecord | None:
        """The owner's adapter, None if there is none; raises if the folder is there but broken."""
        folder = self.folder(task, kind, owner)
        if not folder.exists():
            return None
        return self.load_record(folder, verify=verify)

    def records(self, task: str, kind: str, *, verify: bool = False) -> list[AdapterRecord]:
        """Every complete adapter of one kind for a task (temp folders of unfinished writes skipped)."""
        base = self.root / slug(task) / _FOLDERS[kind]
        if not base.is_dir():
            return []
        out = []
        for folder in sorted(base.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                out.append(self.load_record(folder, verify=verify))
        return out

    def lora_modules(self, task: str, kind: str = "user") -> tuple[list[tuple[str, AdapterRecord]], list[str]]:
        """(engine name, record) of every fresh LoRA adapter of `kind` for the task, which a serving engine
        loads from its folder as it is (peft's adapter_config.json + adapter_model.safetensors); and why
        the others were left out (stale, or a peft type other than LoRA, which vLLM does not serve)."""
        served, skipped = [], []
        for record in self.records(task, kind):
            assert record.path is not None
            try:
                peft_type = json.loads((record.path / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"]
            except (OSError, ValueError, KeyError) as exc:
                raise ArtifactError(f"adapter folder {record.path}: unreadable adapter_config.json ({exc})") from None
            if record.stale:
                skipped.append(f"{record.owner}: stale (retrain it: pllm adapt retrain-stale)")
            elif str(peft_type).upper() != "LORA":
                skipped.append(f"{record.owner}: {peft_type} adapter (vLLM serves LoRA only)")
            else:
                served.append((engine_name(task, kind, record.owner), record))
        return served, skipped

    def indexed(self, kind: str, owner: str) -> list[tuple[str, float, Path]]:
        """(task, created_at, folder) of every adapter of `owner` indexed in the database, under any root."""
        if self.db is None:
            return []
        rows = self.db.execute("SELECT task, created_at, path FROM adapters WHERE kind=? AND owner=?", (kind, owner))
        return [(r[0], float(r[1]), Path(r[2])) for r in rows]

    # -- staleness and deletion -----------------------------------------------------------------
    def mark_stale(self, record: AdapterRecord, *, drop_member: str | None = None) -> None:
        if drop_member is not None:
            record.members = [m for m in record.members if m != drop_member]
        record.stale = True
        if record.path is not None and (record.path / RECORD_FILE).is_file():
            atomic_write_json(record.path / RECORD_FILE, record.to_json())
        if self.db is not None:
            with self.db.transaction() as conn:
                conn.execute("UPDATE adapters SET stale=1 WHERE task=? AND kind=? AND owner=?",
                             (record.task, record.kind, record.owner))
                if drop_member is not None:
                    conn.execute("DELETE FROM adapter_members WHERE task=? AND kind=? AND owner=? AND member=?",
                                 (record.task, record.kind, record.owner, drop_member))

    def delete(self, task: str, kind: str, owner: str) -> int:
        """Remove the adapter folder and its rows; returns the number of files removed."""
        folder = self.folder(task, kind, owner)
        n = _remove_tree(folder)
        if self.db is not None:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM adapters WHERE task=? AND kind=? AND owner=?", (task, kind, owner))
                conn.execute("DELETE FROM adapter_members WHERE task=? AND kind=? AND owner=?", (task, kind, owner))
        return n

    def stale(self, task: str) -> list[AdapterRecord]:
        return [r for kind in ("task", "group") for r in self.records(task, kind) if r.stale]

    # -- named adapters (alignment methods) -------------------------------------------------------
    def named_folder(self, name: str) -> Path:
        return self.folder(NAMED_TASK, "named", check_name(name))

    def has_named(self, name: str) -> bool:
        return (self.named_folder(name) / RECORD_FILE).is_file()

    def get_named(self, name: str, *, verify: bool = False) -> AdapterRecord:
        """The named adapter's record (files are verified when a host first loads it); raises if missing."""
        record = self.get(NAMED_TASK, "named", check_name(name), verify=verify)
        if record is None:
            known = ", ".join(r.owner for r in self.named()) or "(none)"
            raise NotFoundError(f"no alignment adapter {name!r} under {self.root}; known: {known}")
        return record

    def named(self) -> list[AdapterRecord]:
        """Every readable named adapter, by name (a broken folder is skipped here, refused by `get_named`)."""
        base = self.root / slug(NAMED_TASK) / _FOLDERS["named"]
        out = []
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if folder.is_dir() and not folder.name.startswith("."):
                with contextlib.suppress(ArtifactError):
                    out.append(self.load_record(folder, verify=False))
        return sorted(out, key=lambda r: r.owner)

    def delete_named(self, name: str) -> bool:
        existed = self.named_folder(name).exists()
        self.delete(NAMED_TASK, "named", name)
        return existed

    def _migrate_legacy(self, legacy: Path) -> None:
        """Move align adapter folders of the earlier layout (`<name>/{meta.json,config.json,adapter/}`) into
        this store as named adapters; an old folder is removed once its new one is in place."""
        if not legacy.is_dir():
            return
        for old in sorted(legacy.iterdir()):
            meta, files = old / LEGACY_META, old / "adapter"
            if old.name.startswith(".") or not meta.is_file() or not (files / "adapter_config.json").is_file():
                continue
            try:
                data = json.loads(meta.read_text(encoding="utf-8"))
                config = json.loads((old / "config.json").read_text(encoding="utf-8")) \
                    if (old / "config.json").is_file() else {}
                record = named_record(data["name"], data["kind"], data["base_model_id"], users=data.get("users", []),
                                      dimensions=data.get("dimensions", []), metrics=data.get("metrics"),
                                      config=config)
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, InputError) as exc:
                raise ArtifactError(f"cannot move the align adapter folder {old} into {self.root}: {exc}") from None
            created = float(data.get("created_at") or 0.0) or None
            self.write(record, functools.partial(_copy_files, files), created=created)
            shutil.rmtree(old, ignore_errors=True)
        if legacy != self.root:
            with contextlib.suppress(OSError):
                legacy.rmdir()  # only if nothing else is left there


def _copy_files(src: Path, dest: Path) -> None:
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)


def _remove_tree(folder: Path) -> int:
    if not folder.exists():
        return 0
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return n


def forget_user_adapters(store: UserStore, user_id: str) -> dict[str, int]:
    """The adapters feature's forget hook: delete the user's own adapters (files and rows) and mark every task/group
    adapter trained on their data stale, with the user dropped from its members.

    The tables name users `owner`/`member`, not `user_id`, on purpose: `forget` deletes `user_id` rows
    before hooks run, and this hook needs the rows to find the folders."""
    own = store.execute("SELECT task, path FROM adapters WHERE kind='user' AND owner=?", (user_id,))
    files = sum(_remove_tree(Path(path)) for _, path in own)
    shared = store.execute("SELECT DISTINCT a.task, a.kind, a.owner, a.path FROM adapter_members m JOIN adapters a "
                           "ON a.task=m.task AND a.kind=m.kind AND a.owner=m.owner WHERE m.member=?", (user_id,))
    with store.transaction() as conn:
        rows = conn.execute("DELETE FROM adapters WHERE kind='user' AND owner=?", (user_id,)).rowcount
        rows += conn.execute("DELETE FROM adapter_members WHERE member=?", (user_id,)).rowcount
        for task, kind, owner, _ in shared:
            conn.execute("UPDATE adapters SET stale=1 WHERE task=? AND kind=? AND owner=?", (task, kind, owner))
    for _, _, _, path in shared:  # the records on disk must not name the user either
        record_path = Path(path) / RECORD_FILE
        if record_path.is_file():
            data = json.loads(record_path.read_text(encoding="utf-8"))
            data["members"] = [m for m in data.get("members", []) if m != user_id]
            data["stale"] = True
            atomic_write_json(record_path, data)
    return {"adapters": rows, "adapter_files": files, "stale_shared_adapters": len(shared)}


def forget_named_adapters(store: UserStore, user_id: str) -> dict[str, int]:
    """The preferences feature's forget hook: delete named adapters trained on this user's data alone (group
    adapters trained on several users are kept; their records name the users so an operator can retrain them)."""
    adapters = AdapterStore()
    return {"align_adapters": sum(adapters.delete_named(r.owner) for r in adapters.named() if r.members == [user_id])}


# The index of adapter folders in the user store; `AdapterStore(db=...)` and start-up register it.
ADAPTERS = Feature(name="adapters", migrations=(
    (
        "0005_adapters",
        """
        CREATE TABLE adapters (
            task TEXT NOT NULL,
            kind TEXT NOT NULL,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            method TEXT NOT NULL,
            base_model TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            n_items INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            train_seconds REAL NOT NULL,
            stale INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (task, kind, owner)
        );
        CREATE INDEX adapters_owner ON adapters(owner);
        CREATE TABLE adapter_members (
            task TEXT NOT NULL,
            kind TEXT NOT NULL,
            owner TEXT NOT NULL,
            member TEXT NOT NULL,
            PRIMARY KEY (task, kind, owner, member)
        );
        CREATE INDEX adapter_members_member ON adapter_members(member);
        """,
    ),
), forget=forget_user_adapters)
