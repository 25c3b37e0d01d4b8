"""The transformers backend: any causal LM (or encoder-decoder) by hub id or local folder, plus the
embedded models by name (`pllm.models.embedded`; SmolLM2 is the default). Generation is batched with
left padding; scoring reads log-probs directly (one forward pass per prompt batch when every candidate
is a single token, the rating-label hot path).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pllm.errors import ArtifactError, InputError
from pllm.models.base import GENERATORS, Generation, Generator, Prompt, normalize_continuations, trim_at_stop
from pllm.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_model_path
from pllm.models.prefix_cache import PrefixCache, common_prefix_len

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TextIteratorStreamer
    from transformers.cache_utils import Cache

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    """`$PLLM_DEVICE` if set, else cuda if available, else Apple mps, else cpu (never hard-coded, so the
    same code runs anywhere)."""
    if os.environ.get("PLLM_DEVICE"):
        try:
            return torch.device(os.environ["PLLM_DEVICE"])
        except RuntimeError as exc:
            raise InputError(f"PLLM_DEVICE={os.environ['PLLM_DEVICE']!r} is not a torch device: {exc}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU/mps (fast enough for small models and exact for scoring), bf16/fp16 on cuda;
    `$PLLM_DTYPE` replaces that default (e.g. float32 on a GPU, to compare with CPU-measured numbers)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if (dtype is None or dtype == "auto") and os.environ.get("PLLM_DTYPE"):
        dtype = os.environ["PLLM_DTYPE"]
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise InputError(f"PLLM_DTYPE={dtype!r} is not a torch dtype; use e.g. float32, bfloat16, float16")
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16")
    return resolved


def _adapter_kwargs(adapter_names: Sequence[str] | None, rows: Sequence[int]) -> dict[str, Any]:
    """peft's per-row `adapter_names=` for the given rows of the caller's prompt list (none: no kwarg)."""
    return {} if adapter_names is None else {"adapter_names": [adapter_names[i] for i in rows]}


SMALL_BATCH_ROWS = 32


def _small_batch_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`F.linear`, but few-row inputs without grad computed as (W @ x.T).T.

    On CPU, BLAS runs x @ W.T for a handful of rows (decoding a batch token by token) 2-4x slower than
    W @ x.T (measured with torch 2.13/MKL on 2 cores: LM head 49152x576 at 8 rows, 52 ms vs 14 ms).
    """
    rows = x.numel() // x.shape[-1] if x.dim() else 0
    grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
    if 1 < rows <= SMALL_BATCH_ROWS and not grad:
        y = (self.weight @ x.reshape(rows, x.shape[-1]).t()).t().reshape(*x.shape[:-1], self.weight.shape[0])
        return y + self.bias if self.bias is not None else y
    return torch.nn.functional.linear(x, self.weight, self.bias)


def use_row_major_small_batch_linears(model: torch.nn.Module) -> None:
    """Route every plain `nn.Linear` of an inference model through `_small_batch_linear` (idempotent;
    peft's LoRA layers call their wrapped base layer, so adapters keep working)."""
    import types

    for module in model.modules():
        if type(module) is torch.nn.Linear and getattr(module.forward, "__func__", None) is not _small_batch_linear:
            # patching this instance's forward is the point; mypy forbids assigning to a method
            module.forward = types.MethodType(_small_batch_linear, module)  # type: ignore[method-assign]


def _last_token_apart(parts: Sequence[tuple[int, list[int]]]) -> bool:
    """True when every candidate is the same tokens up to its last one (e.g. " " + digit in tokenizers that
    split the space off): one forward over that shared context then scores all of them at once."""
    k, first = parts[0]
    return len(first) > k >= 1 and all(kk == k and len(f) == len(first) and f[:-1] == first[:-1]
                                         for kk, f in parts)


def one_forward_plan(parts: Sequence[tuple[int, list[int]]]) -> tuple[list[int], list[int], list[int]] | None:
    """(context ids, scored ids shared by every candidate, each candidate's last id) when the candidates are
    one token apart (`_last_token_apart`), else None: score those with one batched forward over the context."""
    if not _last_token_apart(parts):
        return None
    k, full = parts[0]
    return full[:-1], full[k:-1], [f[-1] for _, f in parts]


def read_one_forward(logprobs: torch.Tensor, shared: Sequence[int], cand_ids: Sequence[int]) -> np.ndarray:
    """Candidate scores from the log-probs (keep, V) of a context's last positions: the shared tokens'
    log-probs (one position each, ending one before the last) plus each candidate's last-position log-prob."""
    keep, s = logprobs.shape[0], len(shared)
    common = sum(float(logprobs[keep - 1 - s + j, tok]) for j, tok in enumerate(shared))
    return logprobs[-1, list(cand_ids)].double().cpu().numpy() + common


class ForwardOutput(Protocol):
    """What the prefix-cache scorer reads from a transformers forward output: the logits (B, T, V) and the
    KV cache, named `cache` in transformers >= 5.2x (read when present) and `past_key_values` before."""

    logits: torch.Tensor
    past_key_values: Cache


def score_on_prefix_cache(model: torch.nn.Module, out: ForwardOutput, parts: Sequence[tuple[int, list[int]]],
                          ctx: int, batch_size: int,
                          *, pad_id: int, cache_arg: str, device: torch.device, adapter: str | None = None
                          ) -> np.ndarray:
    """Summed log-probs of one prompt's candidates (parts as in `HFGenerator.score`) continuing the KV cache
    of `out`, the model's forward over the `ctx` positions that end with the prefix all candidates share.

    The cache is copied across right-padded batches of candidate suffixes. Shared by `HFGenerator` (ctx = the
    shared prefix) and the soft-prompt generator (ctx = soft tokens + the shared prefix).
    """
    fulls = [full for _, full in parts]
    shared = min(k for k, _ in parts)
    scores = np.zeros(len(parts))
    first_logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,) predicts position `shared`
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    for start in range(0, len(parts), batch_size):
        chunk = list(range(start, min(start + batch_size, len(parts))))
        suffixes = [fulls[j][shared:] for j in chunk]
        width = max(len(s) for s in suffixes)
        if width == 0:
            continue
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.ones((len(chunk), ctx + width), dtype=torch.long)
        for r, s in enumerate(suffixes):
            ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, ctx + len(s):] = 0
        chunk_cache = copy.deepcopy(cache)
        chunk_cache.batch_repeat_interleave(len(chunk))
        pos = torch.arange(ctx, ctx + width, device=device).unsqueeze(0).expand(len(chunk), -1)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos,
                       use_cache=True, **{cache_arg: chunk_cache},
                       **_adapter_kwargs([adapter] * len(chunk) if adapter else None, range(len(chunk)))).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (C, width, V)
        for r, j in enumerate(chunk):
            k, full = parts[j]
            total = 0.0
            for t in range(k, len(full)):  # token t (>= shared) is predicted at suffix index t - shared - 1
                total += float(first_logprobs[full[t]] if t == shared else logprobs[r, t - shared - 1, full[t]])
            scores[j] = total
    return scores


def through_eos(toks: list[int], eos_ids: set[int], pad: int | None = None) -> list[int]:
    """A generated row up to and including its first eos token (what `generate` adds after it is padding);
    a row a stop string ended early has no eos, only trailing `pad` tokens, which are dropped too."""
    for j, t in enumerate(toks):
        if t in eos_ids:
            return toks[:j + 1]
    while pad is not None and pad not in eos_ids and toks and toks[-1] == pad:
        toks = toks[:-1]
    return toks


class _StopOnStrings:
    """Stopping criterion: a row is done once its decoded new text contains a stop string.

    Tokenizer-agnostic (transformers' own `stop_strings` needs a vocabulary it can clean, which
    word-level tokenizers break); decoding the short generated part each step is cheap.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], offset: int) -> None:
        self.tokenizer, self.stops, self.offset = tokenizer, list(stops), offset

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.offset:], skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _Yield:
    """Stopping criterion that never stops: it calls `yield_to()` between tokens, which blocks while
    foreground work runs (`HFGenerator.generate_in_gaps`)."""

    def __init__(self, yield_to: Callable[[], None]) -> None:
        self.yield_to = yield_to

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.yield_to()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def token_streamer(tokenizer: PreTrainedTokenizerBase) -> TextIteratorStreamer:
    """A `TextIteratorStreamer` that hands over each token's text as soon as it is decoded (transformers' own
    holds a word back until the next space, so the first piece of an answer waited for the second word); it
    waits only while the text ends in an incomplete multi-byte character."""
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        def put(self, value: torch.Tensor) -> None:
            if value.dim() > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            if text.endswith("\ufffd"):
                return
            piece, self.print_len = text[self.print_len:], len(text)
            if piece:
                self.on_finalized_text(piece)

    return TokenStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


@GENERATORS.register("hf")
class HFGenerator(Generator):
    """A transformers model and tokenizer behind the `Generator` interface.

    `.model` and `.tokenizer` are public: adapter code wraps `.model` with peft in place. `prefix_cache`
    (None unless the owner sets one, as `pllm serve --prefix-cache-users N` does) reuses a user's previous
    prompt's KV cache for single-prompt generation (`pllm.models.prefix_cache`).
    """

    name = "hf"
    supports_scoring = True
    prefix_cache: PrefixCache | None = None

    def __init__(self, model: str | None = None, *, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                 revision: str | None = None) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        if model is None or model in EMBEDDED_MODELS:  # a packaged model, by name
            path: str | Path = embedded_model_path(model)
            model_id = model or DEFAULT_MODEL
        else:
            path, model_id = model, model
        dev = torch.device(device) if device is not None else pick_device()
        torch_dtype = _resolve_dtype(dtype, dev)
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
        try:
            config = AutoConfig.from_pretrained(path, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
            hf_model = auto.from_pretrained(path, config=config, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot load model {model_id!r} from {path}: {exc}") from exc
        hf_model.to(dev)  # type: ignore[arg-type]  # transformers types `.to` as taking a model, not a device
        self._setup(hf_model, tokenizer, model_id)

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                   model_id: str = "custom") -> HFGenerator:
        """Wrap an already-built model and tokenizer (tests, adapters); the model stays on its device."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, model_id)
        return self

    def private_copy(self, model_id: str | None = None, *, own_cache: bool = False) -> HFGenerator:
        """A generator over a deep copy of the weights, for code that changes them (peft wraps the model it
        loads adapters into; a task adapter is merged into it), so the shared model stays bare. The prefix
        cache is never shared, since its KV was computed by the original weights; `own_cache` gives the copy
        an empty one of the same size."""
        clone = HFGenerator.from_model(copy.deepcopy(self.model), self.tokenizer, model_id or self.model_id)
        if own_cache and self.prefix_cache is not None:
            clone.prefix_cache = PrefixCache(self.prefix_cache.max_users)
        return clone

    def _setup(self, model: Any, tokenizer: Any, model_id: str) -> None:
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ArtifactError(f"tokenizer of {model_id!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        if next(model.parameters()).device.type == "cpu":
            use_row_major_small_batch_linears(model)
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self._warned_no_template = False

    # ----------------------------------------------------------------------------------------- tokens
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        """Keep the first `max_tokens` tokens, cutting the original string at a token offset when the
        tokenizer reports offsets (so the kept text is verbatim), else decoding the kept tokens."""
        if max_tokens <= 0:
            return ""
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            if len(offsets) <= max_tokens:
                return text
            return text[: offsets[max_tokens - 1][1]]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def render(self, prompt: Prompt) -> str:
        """Chat prompts go through the tokenizer's chat template (one user turn, or `prompt.messages` when
        given, generation prompt on);
        a tokenizer without a template (base models) falls back to plain system + blank line + text."""
        if not prompt.chat:
            return prompt.text
        if not getattr(self.tokenizer, "chat_template", None):
            if not self._warned_no_template:
                log.warning("%s has no chat template; chat prompts are rendered as plain text", self.model_id)
                self._warned_no_template = True
            return super().render(prompt)
        messages = [dict(m) for m in prompt.messages] if prompt.messages else [
            {"role": "user", "content": prompt.text}]
        if prompt.system and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": prompt.system})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode_text(self, text: str, chat: bool) -> list[int]:
        # The chat template already writes its own special tokens; raw text, and chat prompts rendered as
        # plain text for want of a template (base models), get the tokenizer's usual ones (e.g. the BOS that
        # Gemma and Llama-style models saw in pretraining).
        templated = chat and bool(getattr(self.tokenizer, "chat_template", None))
        return list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """The exact input ids fed to the model for `prompt`."""
        return self._encode_text(self.render(prompt), prompt.chat)

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        return len(self.encode_prompt(prompt))

    def left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask), both (B, T) on the model's device: sequences right-aligned, as every
        forward pass here (and adapter training) reads them."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _eos_ids(self) -> set[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, (list, tuple)) else [eos]
        return {int(i) for i in ids if i is not None}

    # ------------------------------------------------------------------------------------- generation
    def _gen_kwargs(self, max_new_tokens: int, temperature: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature))
        else:  # greedy; clear sampling defaults from the model's generation config to avoid warnings
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8,
                 adapter_names: Sequence[str] | None = None) -> list[Generation]:
        """Batched generation; prompts are grouped by length to limit padding, results keep input order.

        `adapter_names` (one per prompt; peft's "__base__" for none) routes each row through its own
        adapter of a peft `.model` in the same batch (`pllm.adapt.AdapterGenerator` passes it).

        completion_tokens counts the tokens the model produced (the closing eos included, padding not),
        even when a stop string later trims the text.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        encoded = [self.encode_prompt(p) for p in prompts]
        for i, enc in enumerate(encoded):
            if not enc:
                raise InputError("prompt encodes to no tokens; give some text", index=i, field="text")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        eos_ids = self._eos_ids()
        stop_list = [s for s in (stop or []) if s]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = self.left_pad([encoded[i] for i in idx])
            kwargs = self._gen_kwargs(max_new_tokens, temperature)
            if stop_list:  # stop early in the model loop too, not just trim afterwards
                from transformers import StoppingCriteriaList

                offset = 1 if self.is_encoder_decoder else ids.shape[1]
                kwargs["stopping_criteria"] = StoppingCriteriaList(
                    [_StopOnStrings(self.tokenizer, stop_list, offset)])
            if len(idx) == 1:
                out = self._generate_cached(prompts[idx[0]], encoded[idx[0]], ids, mask, kwargs,
                                            adapter_names[idx[0]] if adapter_names is not None else None)
            else:
                out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs,
                                          **_adapter_kwargs(adapter_names, idx))
            new = out[:, 1:] if self.is_encoder_decoder else out[:, ids.shape[1]:]
            for row, i in enumerate(idx):
                results[i] = self._completion(new[row].tolist(), len(encoded[i]), eos_ids, stop_list)
        return [r for r in results if r is not None]

    def _completion(self, new: list[int], n_prompt: int, eos_ids: set[int], stop_list: list[str]) -> Generation:
        """A generated row as a Generation: up to its eos (counted), stop strings trimmed from the text."""
        toks = through_eos(new, eos_ids, self.tokenizer.pad_token_id if stop_list else None)
        text = self.tokenizer.decode([t for t in toks if t not in eos_ids], skip_special_tokens=True)
        return Generation(text=trim_at_stop(text, stop_list)[0], prompt_tokens=n_prompt, completion_tokens=len(toks))

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 64, temperature: float = 0.0,
               adapter: str | None = None) -> Iterator[str]:
        """Yield decoded text pieces as the model produces them (generation runs in a worker thread). Closing
        the iterator early stops the model at its next token and waits for it (a server frees its slot).
        `adapter`: a peft adapter name of `.model` to run through (`AdapterPool.stream`)."""
        from transformers import StoppingCriteriaList

        streamer = token_streamer(self.tokenizer)
        encoded = self.encode_prompt(prompt)
        ids, mask = self.left_pad([encoded])
        kwargs = self._gen_kwargs(max_new_tokens, temperature)
        closed = threading.Event()
        kwargs["stopping_criteria"] = StoppingCriteriaList([lambda input_ids, scores, **kw: torch.full(
            (input_ids.shape[0],), closed.is_set(), dtype=torch.bool, device=input_ids.device)])
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self._generate_cached(prompt, encoded, ids, mask, {**kwargs, "streamer": streamer}, adapter)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            closed.set()
            thread.join()
        if errors:
            raise errors[0]

    @torch.inference_mode()
    def generate_in_gaps(self, prompt: Prompt, *, max_new_tokens: int, stop: Sequence[str] | None,
                         yield_to: Callable[[], None], chunk: int = 16) -> Generation:
        """Greedy generation that pauses in `yield_to()` before every `chunk` prompt tokens and every new
        token: the prompt is read into a KV cache a chunk at a time (a whole prefill cannot be interrupted),
        then `generate` continues that cache with a stopping criterion that yields. The text equals
        `generate`'s (tests/models/test_models_hf.py)."""
        from transformers import DynamicCache, StoppingCriteriaList

        if self.is_encoder_decoder:
            return super().generate_in_gaps(prompt, max_new_tokens=max_new_tokens, stop=stop, yield_to=yield_to)
        encoded = self.encode_prompt(prompt)
        if not encoded:
            raise InputError("prompt encodes to no tokens; give some text", field="text")
        ids = torch.tensor([encoded], dtype=torch.long, device=self.device)
        extra, cache_arg = self.forward_params()
        cache = DynamicCache(config=self.model.config)
        for start in range(0, len(encoded) - 1, chunk):  # the last prompt token is generate's first step
            yield_to()
            self.model(input_ids=ids[:, start:min(start + chunk, len(encoded) - 1)], use_cache=True,
                       **{cache_arg: cache}, **extra)
        stop_list = [s for s in (stop or []) if s]
        criteria = [_Yield(yield_to)] + ([_StopOnStrings(self.tokenizer, stop_list, len(encoded))] if stop_list else [])
        yield_to()
        kwargs = {**self._gen_kwargs(max_new_tokens, 0.0), "stopping_criteria": StoppingCriteriaList(criteria)}
        if len(encoded) > 1:
            kwargs[cache_arg] = cache
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        return self._completion(out[0, len(encoded):].tolist(), len(encoded), self._eos_ids(), stop_list)

    def _generate_cached(self, prompt: Prompt, encoded: list[int], ids: torch.Tensor, mask: torch.Tensor,
                         kwargs: dict[str, Any], adapter: str | None = None) -> torch.Tensor:
        """`model.generate` for one prompt, through the user's prefix cache when there is one: only the tokens
        after the prefix it holds are computed, and the prompt and answer's cache is kept for the next turn.
        `adapter` (a peft adapter name of `.model`) runs the row through it; its cache is kept apart, since the
        adapter's weights computed it."""
        if adapter is not None:
            kwargs = {**kwargs, "adapter_names": [adapter]}
        question = prompt.question
        user = question.user_id if question is not None and question.user_id else None
        key = PrefixCache.key(user, adapter) if user is not None else None
        if self.prefix_cache is None or key is None or self.is_encoder_decoder:
            return self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        _, cache = self.prefix_cache.take(key, encoded)
        if cache is not None:
            kwargs = {**kwargs, self.forward_params()[1]: cache}
        out = self.model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **kwargs)
        held = getattr(out, "cache", None)
        held = held if held is not None else getattr(out, "past_key_values", None)
        if held is not None:
            self.prefix_cache.put(key, out.sequences[0].tolist(), held)
        return out.sequences

    # ---------------------------------------------------------------------------------------- scoring
    def forward_params(self) -> tuple[dict[str, int], str]:
        """Extra forward kwargs and the KV-cache argument name for this transformers version.

        Asks for last-position logits only when supported (saves a (B, T, V) tensor); the cache argument
        is `cache` in transformers >= 5.2x and `past_key_values` before.
        """
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        params = inspect.signature(type(base).forward).parameters
        extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        return extra, ("cache" if "cache" in params else "past_key_values")

    def split_continuations(self, prompt: Prompt, cands: Sequence[str]
                            ) -> tuple[list[int], list[tuple[int, list[int]]]]:
        """Tokenize at the prompt/continuation boundary.

        We tokenize the rendered prompt and rendered-prompt + continuation, and take the continuation's
        tokens as the suffix of the latter beyond their longest common prefix. Usually that prefix is the
        whole prompt; when a merge crosses the boundary (e.g. a prompt ending in a space) the context is
        the shared prefix, so each candidate is scored exactly as the model would read prompt + candidate.
        Returns the prompt ids and, per candidate, (context length, continuation ids).
        """
        rendered = self.render(prompt)
        p_ids = self._encode_text(rendered, prompt.chat)
        parts = []
        for cand in cands:
            full = self._encode_text(rendered + cand, prompt.chat)
            k = common_prefix_len(p_ids, full)
            if k == 0:  # nothing to condition on: the first token becomes the context
                k = min(1, len(full))
            parts.append((k, full))
        return p_ids, parts

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False, _fast_path: bool = True,
              adapter_names: Sequence[str] | None = None) -> np.ndarray:
        """(N, C) summed (or per-token mean, normalize=True) log-probs of each continuation.

        Prompts whose candidates are all one token after the full prompt are scored with one forward
        pass per batch of prompts, reading the next-token distribution. Other prompts run their shared
        prefix once (KV cache) and then all their candidates as one batch continuing that cache.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        cand_lists = normalize_continuations(len(prompts), continuations)
        if not prompts:
            flat = not isinstance(continuations, str) and all(isinstance(c, str) for c in continuations)
            return np.zeros((0, len(continuations) if flat else 0))
        n_cands = len(cand_lists[0])
        scores = np.zeros((len(prompts), n_cands), dtype=np.float64)
        counts = np.zeros((len(prompts), n_cands), dtype=np.float64)
        fast: list[tuple[int, list[int], list[int], list[int]]] = []  # (prompt index, *one_forward_plan)
        slow: list[tuple[int, list[tuple[int, list[int]]]]] = []
        for i, (prompt, cands) in enumerate(zip(prompts, cand_lists, strict=True)):
            _, parts = self.split_continuations(prompt, cands)
            plan = one_forward_plan(parts) if _fast_path and not self.is_encoder_decoder else None
            if plan is not None:
                fast.append((i, *plan))
            else:
                slow.append((i, parts))
        extra, cache_arg = self.forward_params()
        fast.sort(key=lambda f: len(f[1]))  # similar lengths share a batch: less padding to compute
        for start in range(0, len(fast), batch_size):
            chunk = fast[start:start + batch_size]
            ids, mask = self.left_pad([ctx for _, ctx, _, _ in chunk])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(shared) for _, _, shared, _ in chunk) + 1  # rows end aligned (left padding)
            kw = {**extra, "logits_to_keep": keep} if "logits_to_keep" in extra else extra
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kw,
                                **_adapter_kwargs(adapter_names, [i for i, _, _, _ in chunk])).logits[:, -keep:, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, keep, V)
            for row, (i, _, shared, cand_ids) in enumerate(chunk):
                scores[i], counts[i] = read_one_forward(logprobs[row], shared, cand_ids), len(shared) + 1
        for i, parts in slow:
            if self.is_encoder_decoder:
                s, c = self._score_seq2seq(prompts[i], cand_lists[i], batch_size)
            else:
                s, c = self._score_with_prefix_cache(parts, batch_size, extra, cache_arg,
                                                     adapter=adapter_names[i] if adapter_names else None)
            scores[i], counts[i] = s, c
        if normalize:
            scores = scores / np.maximum(counts, 1)
        return scores

    def _score_with_prefix_cache(self, parts: list[tuple[int, list[int]]], batch_size: int,
                                 extra: dict[str, int], cache_arg: str, adapter: str | None = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
        """Score candidates of one prompt: the prefix shared by all of them runs once, its KV cache is
        copied across a right-padded batch of candidate suffixes (`score_on_prefix_cache`)."""
        shared = min(k for k, _ in parts)
        counts = np.array([len(full) - k for k, full in parts], dtype=np.float64)
        if shared == 0:  # empty prompt and empty candidates: nothing to score
            return np.zeros(len(parts)), counts
        out = self.model(input_ids=torch.tensor([parts[0][1][:shared]], device=self.device), use_cache=True, **extra,
                         **_adapter_kwargs([adapter] if adapter else None, [0]))
        return score_on_prefix_cache(self.model, out, parts, shared, batch_size, pad_id=self.tokenizer.pad_token_id,
                                     cache_arg=cache_arg, device=self.device, adapter=adapter), counts

    def _score_seq2seq(self, prompt: Prompt, cands: Sequence[str], batch_size: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Encoder-decoder scoring: the continuation is the decoder's target sequence."""
        enc_ids = self.encode_prompt(prompt)
        start_id = self.model.config.decoder_start_token_id
        if start_id is None:
            start_id = self.tokenizer.pad_token_id
        scores = np.zeros(len(cands))
        counts = np.zeros(len(cands))
        dev = self.device
        for start in range(0, len(cands), batch_size):
            chunk = list(range(start, min(start + batch_size, len(cands))))
            targets = [list(self.tokenizer(cands[j], add_special_tokens=False)["input_ids"]) for j in chunk]
            width = max(1, max(len(t) for t in targets))
            dec = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
            for r, t in enumerate(targets):
                seq = [start_id, *t][:width]
                dec[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            enc = torch.tensor([enc_ids] * len(chunk), device=dev)
            logits = self.model(input_ids=enc, decoder_input_ids=dec.to(dev)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for r, j in enumerate(chunk):
                t = targets[r]
                scores[j] = sum(float(logprobs[r, pos, tok]) for pos, tok in enumerate(t))
                counts[j] = len(t)
        return scores, counts
