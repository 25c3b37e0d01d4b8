"""Finding MovieLens-100k without ../shared (the `recbole` package) and downloading it, offline: the
archive is served from a loopback http.server, its URL and checksum passed the way a mirror's would be."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pllm
from pllm.cli import app
from pllm.data.movielens import RECBOLE_SUBDIR, download_movielens, find_movielens, load_movielens
from pllm.errors import InputError, PllmError

U_DATA = "1\t10\t4\t881250949\n1\t20\t2\t881250950\n2\t10\t5\t881250951\n"
U_ITEM = ("10|Heat (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|1|0|0|0|0|0|0|0|0|0|1|0|0\n"
          "20|Babe (1995)|01-Jan-1995||http://x|0|0|0|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


ARCHIVE = _zip({"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM, "ml-100k/u.user": "1|24|M|x|1\n"})
SHA = hashlib.sha256(ARCHIVE).hexdigest()


@pytest.fixture
def server() -> Iterator[str]:
    """http://127.0.0.1:PORT/ serving /ml-100k.zip (the test archive) and /broken.zip (not a zip)."""
    bodies = {"/ml-100k.zip": ARCHIVE, "/broken.zip": b"not a zip"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_unpacks_and_is_then_found(server, pllm_home, monkeypatch):
    monkeypatch.delenv("PLLM_MOVIELENS", raising=False)
    seen: list[tuple[int, int | None]] = []
    folder = download_movielens(url=f"{server}/ml-100k.zip", sha256=SHA, progress=lambda d, t: seen.append((d, t)))
    assert folder == pllm_home / "cache" / "data" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.item", "u.user"]
    assert seen[-1] == (len(ARCHIVE), len(ARCHIVE))
    ml = load_movielens(folder)
    assert len(ml.ratings) == 3 and ml.movies["10"].title == "Heat"
    assert ml.movies["10"].genres == ("Action", "Crime", "Thriller")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp file or folder left
    monkeypatch.chdir(pllm_home)
    if not any((b / "shared" / "data" / "movielens-100k").is_dir()
               for b in [*Path(pllm.__file__).resolve().parents]):  # ../shared beside the checkout wins
        assert find_movielens() == folder
    # A complete copy is not fetched again (the URL is no longer served).
    assert download_movielens(url=f"{server}/gone.zip", sha256=SHA) == folder


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "dl" / "ml"
    with pytest.raises(PllmError, match=f"checksum mismatch .*expected sha256 {'0' * 64}, got {SHA}"):
        download_movielens(dest, url=f"{server}/ml-100k.zip", sha256="0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


@pytest.mark.parametrize(("path", "error", "needle"), [
    ("/missing.zip", PllmError, "could not download .*404"),
    ("/broken.zip", InputError, "not a zip archive"),
])
def test_bad_downloads_leave_nothing(server, tmp_path, path, error, needle):
    body = b"not a zip" if path == "/broken.zip" else b""
    with pytest.raises(error, match=needle):
        download_movielens(tmp_path / "ml", url=server + path, sha256=hashlib.sha256(body).hexdigest())
    assert list(tmp_path.iterdir()) == []


def test_cli_download(server, tmp_path):
    out = tmp_path / "ml"
    args = ["data", "download", "movielens-100k", "--out", str(out), "--url", f"{server}/ml-100k.zip"]
    res = CliRunner().invoke(app, [*args, "--sha256", SHA])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output and (out / "u.data").read_text() == U_DATA
    res = CliRunner().invoke(app, [*args, "--force"])  # the official checksum: this archive is refused
    assert res.exit_code == 2 and "checksum mismatch" in res.output
    assert (out / "u.data").read_text() == U_DATA  # the earlier copy is untouched
    res = CliRunner().invoke(app, ["data", "download", "imagenet"])
    assert res.exit_code == 2 and "unknown download 'imagenet'; known: movielens-100k" in res.output


def test_env_override_must_point_at_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PLLM_MOVIELENS", str(tmp_path))
    with pytest.raises(InputError, match=r"\$PLLM_MOVIELENS=.*no MovieLens-100k files"):
        find_movielens()


def _recbole_folder() -> Path:
    spec = importlib.util.find_spec("recbole")  # located, never imported (its dependencies are not installed)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("recbole is not installed (make install adds it: pip install --no-deps recbole==1.2.1)")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*RECBOLE_SUBDIR)


def test_fresh_clone_without_shared_finds_the_recbole_package(tmp_path):
    """A copy of the package with no ../shared anywhere near it, a fresh PLLM_HOME and no PLLM_MOVIELENS
    resolves MovieLens-100k to the recbole package's folder (what `make run` on a new machine gets)."""
    expected = _recbole_folder()
    clone = tmp_path / "clone"
    shutil.copytree(Path(pllm.__file__).parent, clone / "src" / "pllm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PLLM_MOVIELENS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(clone / "src"), PLLM_HOME=str(tmp_path / "home"))
    code = ("import json, pllm; from pllm.data.movielens import find_movielens; "
            "print(json.dumps([pllm.__file__, str(find_movielens())]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    module, found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(clone)  # the copy ran, not the checkout
    assert Path(found) == expected and (expected / "ml-100k.inter").is_file()
