"""Mechanics of the transformers backend on the tiny random model (fast, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pllm.errors import InputError, PllmError, UnknownNameError
from pllm.models import GENERATORS, Generation, Generator, Prompt, load_generator
from pllm.models.hf import HFGenerator, _last_token_apart, pick_device
from pllm.models.testing import make_tiny_generator

LABELS = ["1", "2", "3", "4", "5"]


@pytest.fixture(scope="module")
def gen() -> HFGenerator:
    return make_tiny_generator(seed=0)


@pytest.fixture(scope="module")
def prompts() -> list[Prompt]:
    return [
        Prompt("what is the rating of this movie ?"),
        Prompt("rate this review : terrible product", system="answer with one number"),
        Prompt("great book , I love it . rating :", chat=False),
        Prompt("the paper is about"),
        Prompt("give only one word : good or bad ? I love this movie , it was great"),
    ]


def test_registry_and_unknown_backend() -> None:
    assert {"hf", "openai"} <= set(GENERATORS.names())
    with pytest.raises(UnknownNameError) as info:
        load_generator("nope")
    assert "hf" in str(info.value) and "openai" in str(info.value)


def test_tiny_generator_is_deterministic_llama() -> None:
    a, b, c = make_tiny_generator(3), make_tiny_generator(3), make_tiny_generator(4)
    assert type(a.model).__name__ == "LlamaForCausalLM"
    assert isinstance(a, Generator) and a.supports_scoring
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    names = {n.split(".")[-1] for n, _ in a.model.named_modules()}
    assert {"q_proj", "v_proj"} <= names


def test_vocab_words_extend_tokenizer() -> None:
    g = make_tiny_generator(vocab_words=["zebra"])
    assert g.count_tokens("zebra") == 1
    assert g.tokenizer.convert_tokens_to_ids("zebra") != g.tokenizer.unk_token_id


def test_render_chat_vs_raw(gen: HFGenerator) -> None:
    raw = gen.render(Prompt("hello world", chat=False))
    assert raw == "hello world"
    chat = gen.render(Prompt("hello world"))
    assert chat.startswith("<|user|>") and chat.rstrip().endswith("<|assistant|>") and "hello world" in chat
    with_sys = gen.render(Prompt("hello world", system="be nice"))
    assert with_sys.startswith("<|system|> be nice")
    assert gen.count_prompt_tokens(Prompt("hello world")) == gen.count_tokens(chat)


def test_base_model_without_template_gets_its_bos_on_chat_prompts() -> None:
    """A base model (no chat template, e.g. the embedded Gemma 3 270M) renders chat prompts as plain text,
    and that text is encoded like raw text: with the BOS the tokenizer adds, as in pretraining."""
    from tokenizers.processors import TemplateProcessing

    from pllm.models.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.chat_template = None
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    base = HFGenerator.from_model(make_tiny_generator(seed=0).model, tok, "tiny-base")
    chat_ids = base.encode_prompt(Prompt("rate this movie", system="answer with one number"))
    raw_ids = base.encode_prompt(Prompt("answer with one number\n\nrate this movie", chat=False))
    assert chat_ids == raw_ids and chat_ids[0] == bos
    templated = make_tiny_generator(seed=0)  # a template writes its own specials: no BOS added on top
    templated.tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", templated.tokenizer.bos_token_id)])
    assert templated.encode_prompt(Prompt("rate this movie"))[0] != templated.tokenizer.bos_token_id
    scores = base.score([Prompt("rate this movie")], LABELS)
    assert scores.shape == (1, 5) and np.isfinite(scores).all()


def test_count_and_truncate_tokens(gen: HFGenerator) -> None:
    text = "the movie was great , I love it"
    assert gen.count_tokens(text) == 8
    assert gen.truncate_to_tokens(text, 4) == "the movie was great"
    assert gen.truncate_to_tokens(text, 100) == text
    assert gen.truncate_to_tokens(text, 0) == ""
    assert gen.count_tokens(gen.truncate_to_tokens(text, 5)) == 5


def test_generate_returns_text_and_counts(gen: HFGenerator, prompts: list[Prompt]) -> None:
    out = gen.generate(prompts[:2], max_new_tokens=6)
    assert len(out) == 2 and all(isinstance(g, Generation) for g in out)
    for p, g in zip(prompts, out, strict=False):
        assert isinstance(g.text, str) and g.text
        assert g.prompt_tokens == gen.count_prompt_tokens(p)
        assert 1 <= g.completion_tokens <= 6


def test_batched_generate_equals_one_by_one(gen: HFGenerator, prompts: list[Prompt]) -> None:
    batched = gen.generate(prompts, max_new_tokens=8, batch_size=8)
    small = gen.generate(prompts, max_new_tokens=8, batch_size=2)
    single = [gen.generate([p], max_new_tokens=8)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single] == [g.text for g in small]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]


def test_stop_strings_are_trimmed(gen: HFGenerator, prompts: list[Prompt]) -> None:
    full = gen.generate([prompts[0]], max_new_tokens=8)[0].text
    words = full.split()
    assert len(words) >= 3
    stop = words[2]
    cut = gen.generate([prompts[0]], max_new_tokens=8, stop=[stop])[0].text
    assert stop not in cut and full.startswith(cut)


def test_sampling_runs(gen: HFGenerator, prompts: list[Prompt]) -> None:
    torch.manual_seed(0)
    out = gen.generate(prompts[:2], max_new_tokens=4, temperature=1.0)
    assert len(out) == 2


def test_stream_matches_generate(gen: HFGenerator, prompts: list[Prompt]) -> None:
    streamed = "".join(gen.stream(prompts[0], max_new_tokens=6))
    assert streamed.strip() == gen.generate([prompts[0]], max_new_tokens=6)[0].text.strip()


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_generation_in_gaps_equals_generate_and_yields_before_every_step(gen: HFGenerator, prompts: list[Prompt],
                                                                        chunk: int) -> None:
    calls: list[int] = []
    for stop in (None, ["."]):
        for p in prompts:
            n_prompt = gen.count_prompt_tokens(p)
            out = gen.generate_in_gaps(p, max_new_tokens=6, stop=stop, yield_to=lambda: calls.append(1),
                                       chunk=chunk)
            want = gen.generate([p], max_new_tokens=6, stop=stop, batch_size=1)[0]
            assert (out.text, out.completion_tokens) == (want.text, want.completion_tokens)
            assert out.prompt_tokens == want.prompt_tokens == n_prompt
            # once per prefill chunk of the first n-1 prompt tokens, once before generate, once per new token
            assert len(calls) >= -(-(n_prompt - 1) // chunk) + 1 + max(out.completion_tokens - 1, 0)
            calls.clear()


def test_score_shape_and_fast_path_matches_general(gen: HFGenerator, prompts: list[Prompt]) -> None:
    fast = gen.score(prompts, LABELS)
    general = gen.score(prompts, LABELS, _fast_path=False)
    assert fast.shape == (len(prompts), len(LABELS))
    assert np.all(fast < 0)
    np.testing.assert_allclose(fast, general, atol=1e-4)
    # batch size does not change results
    np.testing.assert_allclose(gen.score(prompts, LABELS, batch_size=2), fast, atol=1e-5)


def test_candidates_one_token_apart_share_one_forward(gen: HFGenerator, prompts: list[Prompt]) -> None:
    # " rating 1" .. " rating 5": the shared "rating" is scored once in the same batched forward
    conts = [" rating " + lab for lab in LABELS]
    _, parts = gen.split_continuations(prompts[2], conts)
    assert len(parts[0][1]) - parts[0][0] == 2 and _last_token_apart(parts)
    fast = gen.score(prompts, conts, batch_size=3)
    np.testing.assert_allclose(fast, gen.score(prompts, conts, _fast_path=False), atol=1e-4)
    np.testing.assert_allclose(gen.score(prompts, conts, normalize=True), fast / 2, atol=1e-5)


def test_fast_path_equals_next_token_logprobs(gen: HFGenerator, prompts: list[Prompt]) -> None:
    p = prompts[1]
    ids = torch.tensor([gen.encode_prompt(p)])
    with torch.no_grad():
        logprobs = torch.log_softmax(gen.model(input_ids=ids).logits[0, -1], -1)
    label_ids = gen.tokenizer.convert_tokens_to_ids(LABELS)
    np.testing.assert_allclose(gen.score([p], LABELS)[0], logprobs[label_ids].numpy(), atol=1e-5)


def _full_sequence_logprob(gen: HFGenerator, prompt: Prompt, cont: str) -> tuple[float, int]:
    p_ids = gen.encode_prompt(prompt)
    full = gen.tokenizer(gen.render(prompt) + cont, add_special_tokens=not prompt.chat)["input_ids"]
    assert full[:len(p_ids)] == p_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(gen.model(input_ids=torch.tensor([full])).logits[0], -1)
    total = sum(float(logprobs[t - 1, full[t]]) for t in range(len(p_ids), len(full)))
    return total, len(full) - len(p_ids)


def test_multi_token_scores_and_normalize(gen: HFGenerator, prompts: list[Prompt]) -> None:
    cands = [["very good", "bad", "not good at all"]] * 2
    chosen = [prompts[0], prompts[3]]
    scores = gen.score(chosen, cands, batch_size=2)
    normed = gen.score(chosen, cands, normalize=True)
    for i, p in enumerate(chosen):
        for j, c in enumerate(cands[i]):
            ref, n = _full_sequence_logprob(gen, p, c)
            assert scores[i, j] == pytest.approx(ref, abs=1e-4)
            assert normed[i, j] == pytest.approx(ref / n, abs=1e-4)


def test_score_input_validation(gen: HFGenerator, prompts: list[Prompt]) -> None:
    with pytest.raises(InputError):
        gen.score(prompts[:2], [["1"], ["2"], ["3"]])
    with pytest.raises(InputError):
        gen.score(prompts[:1], "12")
    with pytest.raises(InputError):
        gen.score(prompts[:2], [["1", "2"], ["3"]])
    assert gen.score([], LABELS).shape == (0, 5)
    assert gen.generate([]) == []
    with pytest.raises(InputError):
        gen.generate([Prompt("", chat=False)])


def test_base_generator_cannot_score() -> None:
    class Echo(Generator):
        name = "echo"

        def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, stop=None, batch_size=8):
            return [Generation(p.text, 1, 1) for p in prompts]

    echo = Echo()
    with pytest.raises(PllmError, match="cannot score"):
        echo.score([Prompt("x")], ["a"])
    assert list(echo.stream(Prompt("hi there"))) == ["hi there"]
    assert echo.count_tokens("hello, world") == 5  # heuristic: "hell" "o" "," " worl" "d"
    assert echo.truncate_to_tokens("hello, world", 2) == "hello"


def test_device_is_picked_not_hardcoded() -> None:
    dev = pick_device()
    assert dev.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        assert dev.type != "cuda"


def test_peft_wrapped_model_still_scores_and_generates(prompts: list[Prompt]) -> None:
    from peft import LoraConfig, get_peft_model

    gen = make_tiny_generator(seed=1)
    before = gen.score(prompts[:2], LABELS)
    gen.model = get_peft_model(gen.model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    gen.model.eval()
    after = gen.score(prompts[:2], LABELS)
    np.testing.assert_allclose(before, after, atol=1e-5)  # LoRA B starts at zero
    np.testing.assert_allclose(after, gen.score(prompts[:2], LABELS, _fast_path=False), atol=1e-4)
    assert gen.generate(prompts[:1], max_new_tokens=3)[0].completion_tokens >= 1


def test_encoder_decoder_model() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    from pllm.models.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_heads=4,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    gen = HFGenerator.from_model(T5ForConditionalGeneration(cfg), tok, model_id="tiny-t5")
    prompts = [Prompt("rate this movie", chat=False), Prompt("is it good ?")]
    out = gen.generate(prompts, max_new_tokens=4)
    assert len(out) == 2 and all(1 <= g.completion_tokens <= 4 for g in out)
    scores = gen.score(prompts, ["1", "very good"])
    assert scores.shape == (2, 2) and np.all(np.isfinite(scores)) and np.all(scores < 0)


def test_device_and_dtype_from_the_environment(monkeypatch):
    """PLLM_DEVICE / PLLM_DTYPE pick the default device and dtype; a bad value names the variable."""
    import torch

    from pllm.errors import InputError
    from pllm.models.hf import _resolve_dtype

    monkeypatch.setenv("PLLM_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("PLLM_DTYPE", "bfloat16")
    assert _resolve_dtype(None, torch.device("cpu")) is torch.bfloat16
    assert _resolve_dtype("float32", torch.device("cpu")) is torch.float32  # an explicit dtype wins
    monkeypatch.setenv("PLLM_DTYPE", "float33")
    with pytest.raises(InputError, match="PLLM_DTYPE='float33'"):
        _resolve_dtype(None, torch.device("cpu"))
    monkeypatch.setenv("PLLM_DEVICE", "gpu0")
    with pytest.raises(InputError, match="PLLM_DEVICE='gpu0'"):
        pick_device()
