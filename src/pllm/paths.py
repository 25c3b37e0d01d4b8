"""Where pllm keeps its data: `PLLM_HOME` if set, else the user's cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def pllm_home() -> Path:
    """The data folder (store, caches, adapters); tests point `PLLM_HOME` at a temp folder."""
    env = os.environ.get("PLLM_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "pllm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_path() -> Path:
    return pllm_home() / "pllm.sqlite3"


def models_dir() -> Path:
    """Converted model weights: `$PLLM_MODELS_DIR` if set, else `$PLLM_HOME/cache/models`.

    Separate from the data folder so tests (each with its own PLLM_HOME) share one converted copy.
    """
    env = os.environ.get("PLLM_MODELS_DIR")
    path = Path(env).expanduser() if env else cache_dir("models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(name: str) -> Path:
    path = pllm_home() / "cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
