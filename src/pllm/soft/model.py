"""Soft-fused prompting (PPlug-style): a user's whole history becomes a few vectors that the frozen LLM
reads as input embeddings, instead of pasted text.

Each profile item is embedded once (all-MiniLM-L6-v2 by default, persisted through the store's
`EmbeddingCache`); the question's retrieval query attends over the item vectors (input-aware pooling,
or plain mean pooling as an ablation); a small MLP maps the pooled vector to `n_tokens` vectors of
the generator's hidden size, optionally after one learned task-level "instruction" vector. Those
vectors go right after the left padding and before the prompt's token embeddings (`inputs_embeds`).
The generator never changes; one small encoder serves every user, so inference needs no long prompts.

`SoftPromptGenerator` is a `Generator`, so the pipeline, `pllm eval --soft` and the server use it like
any backend, and it combines with retrieval (soft tokens + retrieved text). It reads the structured
`Prompt.question` to find the user's history and query; it never parses the prompt text.
Training lives in `pllm.soft.train`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pllm.errors import ArtifactError, InputError
from pllm.io import atomic_dir, atomic_write_json, save_config
from pllm.models.base import (
    DelegatingGenerator,
    Generation,
    Generator,
    Prompt,
    normalize_continuations,
    trim_at_stop,
)
from pllm.models.hf import HFGenerator, one_forward_plan, read_one_forward, score_on_prefix_cache, through_eos
from pllm.retrieval.embedders import Embedder, EmbeddingCache, embed_with_cache, l2_normalize, load_embedder
from pllm.tasks.spec import TaskSpec, spec_from_dict
from pllm.types import ProfileItem, Question

log = logging.getLogger(__name__)

POOLINGS = ("attention", "mean")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.safetensors"
SPEC_FILE = "task_spec.json"


@dataclass
class SoftConfig:
    """Shape of one user encoder and the generator it was trained for; saved beside its weights."""

    generator_model_id: str = field(metadata={"help": "model_id of the frozen generator (checked on load)."})
    generator_hidden_size: int = field(metadata={"help": "Hidden size of that generator (checked on load)."})
    task: str = field(default="", metadata={"help": "Task the encoder was trained on (spec saved beside it)."})
    embedder: str = field(default="minilm", metadata={"help": "Item/query embedder name (EMBEDDERS)."})
    embed_dim: int = field(default=384, metadata={"help": "Dimension of the embedder's vectors."})
    n_tokens: int = field(default=4, metadata={"help": "User soft tokens prepended to the prompt."})
    pooling: str = field(default="attention", metadata={
        "help": "attention: the query attends over the history items; mean: plain average (ablation)."})
    instruction: bool = field(default=True, metadata={
        "help": "Prepend one learned task-level instruction vector before the user tokens (PPlug)."})
    attn_dim: int = field(default=128, metadata={"help": "Query/key projection size of the attention pooling."})
    mlp_hidden: int = field(default=512, metadata={"help": "Hidden width of the projector MLP."})
    max_items: int = field(default=256, metadata={"help": "Most recent profile items the encoder reads."})
    init_std: float = field(default=0.02, metadata={
        "help": "Target std of the initial soft vectors (set to the generator's token-embedding std)."})

    def __post_init__(self) -> None:
        if self.n_tokens < 1:
            raise InputError(f"n_tokens must be >= 1, got {self.n_tokens}", field="n_tokens")
        if self.pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}", field="pooling")
        for name in ("generator_hidden_size", "embed_dim", "attn_dim", "mlp_hidden", "max_items"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if not self.init_std > 0:
            raise InputError(f"init_std must be > 0, got {self.init_std}", field="init_std")

    @property
    def n_soft(self) -> int:
        """Input positions the encoder adds to every prompt (user tokens + instruction vector)."""
        return self.n_tokens + int(self.instruction)


class UserEncoder(nn.Module):
    """Item vectors + query vector -> (B, n_soft, hidden) soft tokens.

    Attention pooling: w = softmax((W_q q) . (W_k x_i) / sqrt(d)) over the user's items, pooled = sum w_i x_i;
    mean pooling ignores the query. The pooled vector goes through a 2-layer MLP to n_tokens * hidden.
    """

    def __init__(self, config: SoftConfig) -> None:
        super().__init__()
        self.config = config
        e, h = config.embed_dim, config.generator_hidden_size
        if config.pooling == "attention":
            self.query_proj: nn.Linear | None = nn.Linear(e, config.attn_dim)
            self.key_proj: nn.Linear | None = nn.Linear(e, config.attn_dim)
        else:
            self.query_proj = self.key_proj = None
        self.mlp = nn.Sequential(nn.Linear(e, config.mlp_hidden), nn.GELU(),
                                 nn.Linear(config.mlp_hidden, config.n_tokens * h))
        # Start the soft vectors at the scale of real token embeddings, so the frozen LLM reads them as
        # plausible inputs from step 0 (GELU outputs are O(0.5), hence the sqrt(hidden) / 0.5 factor).
        last = self.mlp[2]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=2.0 * config.init_std / math.sqrt(config.mlp_hidden))
        nn.init.zeros_(last.bias)
        self.instruction = nn.Parameter(torch.randn(1, h) * config.init_std) if config.instruction else None

    def pool(self, items: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """items (B, L, E), mask (B, L) bool, query (B, E) -> pooled (B, E); rows without items pool to 0."""
        m = mask.to(items.dtype)  # (B, L)
        if self.query_proj is None or self.key_proj is None:
            return (items * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)
        q = self.query_proj(query)  # (B, A)
        k = self.key_proj(items)  # (B, L, A)
        scores = torch.einsum("ba,bla->bl", q, k) / math.sqrt(q.shape[-1])  # (B, L)
        # A finite fill (not -inf) keeps all-empty rows NaN-free; the mask product zeroes them.
        weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1) * m  # (B, L)
        return torch.einsum("bl,ble->be", weights, items)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """items (B, L, E), mask (B, L) bool, query (B, E) -> soft tokens (B, n_soft, H)."""
        pooled = self.pool(items, mask, query)  # (B, E)
        b = pooled.shape[0]
        tokens = self.mlp(pooled).view(b, self.config.n_tokens, self.config.generator_hidden_size)
        if self.instruction is not None:
            tokens = torch.cat([self.instruction.unsqueeze(0).expand(b, -1, -1), tokens], dim=1)
        return tokens


def soft_item_text(spec: TaskSpec, item: ProfileItem) -> str:
    """What is embedded for one history item: its retrieval text plus its own output (the rating, the
    tag), because the user's answers are the signal; labelled with the task's output prefix."""
    text = spec.retrieval_text(item)
    output = spec.output_of(item)
    return f"{text}\n{spec.demo_output_prefix} {output}" if output else text


def generator_hidden_size(base: HFGenerator) -> int:
    return int(base.model.get_input_embeddings().weight.shape[-1])


def soft_label(method_label: str) -> str:
    """Report name of a method run through a soft generator: 'soft', or 'soft+bm25@4'."""
    return "soft" if method_label == "none" else f"soft+{method_label}"


class SoftPromptGenerator(DelegatingGenerator):
    """A frozen `HFGenerator` reading `n_soft` user vectors before each prompt (label scoring and generation).

    `cache` persists item embeddings (pass the user store); recent users' item matrices and query
    vectors are also kept in small in-process LRUs, so a user's history is looked up once per burst.
    """

    base: HFGenerator
    name = "soft"
    supports_scoring = True
    TEXT_LRU = 16384  # item-text vectors kept in process (384-d float32: about 25 MB)

    def __init__(self, base: HFGenerator, encoder: UserEncoder, spec: TaskSpec, *,
                 embedder: Embedder | None = None, cache: EmbeddingCache | None = None,
                 lru_size: int = 256) -> None:
        if not isinstance(base, HFGenerator):
            raise InputError(f"soft prompting needs a local transformers generator ('hf'), got {base.name!r}")
        if base.is_encoder_decoder:
            raise InputError(f"soft prompting supports decoder-only models; {base.model_id!r} is encoder-decoder")
        cfg = encoder.config
        hidden = generator_hidden_size(base)
        if hidden != cfg.generator_hidden_size:
            raise ArtifactError(f"soft encoder outputs hidden size {cfg.generator_hidden_size} but generator "
                                f"{base.model_id!r} has {hidden}")
        self.base, self.encoder, self.spec, self.config = base, encoder, spec, cfg
        self.embedder = embedder if embedder is not None else load_embedder(cfg.embedder)
        if self.embedder.dim != cfg.embed_dim:
            raise ArtifactError(f"soft encoder expects {cfg.embed_dim}-d embeddings but embedder "
                                f"{self.embedder.name!r} gives {self.embedder.dim}")
        self.cache = cache
        self.model_id = f"{base.model_id}+soft"
        self.encoder.to(base.device)
        self._items_lru: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._query_lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lru_size = lru_size
        self._lock = threading.Lock()  # the server may call from several threads

    # -------------------------------------------------------------------------------- tokens, text
    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Input positions the model reads: the soft vectors plus the rendered prompt's tokens."""
        return self.base.count_prompt_tokens(prompt) + self.config.n_soft

    # ------------------------------------------------------------------------------- user features
    def _remember(self, lru: OrderedDict, key: Any, value: np.ndarray, size: int | None = None) -> None:
        with self._lock:
            lru[key] = value
            while len(lru) > (size or self._lru_size):
                lru.popitem(last=False)

    def _recall(self, lru: OrderedDict, key: Any) -> np.ndarray | None:
        with self._lock:
            hit = lru.get(key)
            if hit is not None:
                lru.move_to_end(key)
            return hit

    def forget_user(self, user_id: str) -> int:
        """Drop what the LRUs hold from a user (the server calls this when the user is forgotten): their item
        matrices, and every cached query and item-text vector, since those are not keyed by user."""
        with self._lock:
            keys = [k for k in self._items_lru if k[0] == user_id]
            for k in keys:
                del self._items_lru[k]
            self._query_lru.clear()
            self._text_lru.clear()
        return len(keys)

    def _item_matrix(self, question: Question) -> np.ndarray:
        """(L, E) embeddings of the question's most recent `max_items` history items (cached)."""
        items = question.profile[-self.config.max_items:]
        key = (question.user_id, tuple(p.id for p in items))
        hit = self._recall(self._items_lru, key)
        if hit is not None:
            return hit
        texts = [soft_item_text(self.spec, p) for p in items]
        # item texts repeat across users (the same movie, the same rating): each is embedded once per process
        known = {t: v for t in dict.fromkeys(texts) if (v := self._recall(self._text_lru, t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            vectors = embed_with_cache(self.embedder, missing, self.cache, user_id=question.user_id)
            for t, vec in zip(missing, vectors, strict=True):
                self._remember(self._text_lru, t, vec, size=self.TEXT_LRU)
                known[t] = vec
        matrix = (np.stack([known[t] for t in texts]).astype(np.float32, copy=False) if texts
                  else np.zeros((0, self.config.embed_dim), dtype=np.float32))
        self._remember(self._items_lru, key, matrix)
        return matrix

    def _query_vectors(self, questions: Sequence[Question]) -> np.ndarray:
        """(B, E) embeddings of each question's retrieval query, new ones encoded in one batch."""
        texts = [self.spec.retrieval_query(q) for q in questions]
        found = {t: v for t in dict.fromkeys(texts) if (v := self._recall(self._query_lru, t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for t, vec in zip(missing, l2_normalize(self.embedder.encode(missing)), strict=True):
                self._remember(self._query_lru, t, vec)
                found[t] = vec
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self.config.embed_dim), dtype=np.float32)

    def features(self, questions: Sequence[Question]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder inputs: items (B, L, E) zero-padded, mask (B, L) bool, query (B, E), on the model's device."""
        mats = [self._item_matrix(q) for q in questions]
        width = max([m.shape[0] for m in mats] + [1])
        items = np.zeros((len(mats), width, self.config.embed_dim), dtype=np.float32)
        mask = np.zeros((len(mats), width), dtype=bool)
        for i, m in enumerate(mats):
            items[i, :m.shape[0]] = m
            mask[i, :m.shape[0]] = True
        dev = self.base.device
        return (torch.from_numpy(items).to(dev), torch.from_numpy(mask).to(dev),
                torch.from_numpy(self._query_vectors(questions)).to(dev))

    def soft_tokens(self, questions: Sequence[Question]) -> torch.Tensor:
        """(B, n_soft, H) soft tokens in the generator's dtype; differentiable w.r.t. the encoder."""
        items, mask, query = self.features(questions)
        dtype = self.base.model.get_input_embeddings().weight.dtype
        return self.encoder(items, mask, query).to(dtype)

    @staticmethod
    def questions_of(prompts: Sequence[Prompt]) -> list[Question]:
        out = []
        for i, p in enumerate(prompts):
            if p.question is None:
                raise InputError("soft prompting needs the structured question on each prompt (Prompt.question); "
                                 "build prompts with PromptBuilder/Personalizer", index=i, field="question")
            out.append(p.question)
        return out

    # ------------------------------------------------------------------------------ model inputs
    def build_inputs(self, soft: torch.Tensor, seqs: Sequence[Sequence[int]]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded [pad | soft | prompt tokens] rows.

        soft (B, S, H) -> inputs_embeds (B, T, H), attention_mask (B, T), position_ids (B, T), where
        T = S + longest sequence; positions count from the first soft token, as if it were the first token.
        """
        b, s, _ = soft.shape
        dev = soft.device
        table = self.base.model.get_input_embeddings()
        width = s + max([len(x) for x in seqs] + [0])
        rows, mask = [], torch.zeros((b, width), dtype=torch.long, device=dev)
        for i, seq in enumerate(seqs):
            pad = width - s - len(seq)
            ids = torch.tensor(list(seq), dtype=torch.long, device=dev)
            parts = [soft.new_zeros((pad, soft.shape[-1])), soft[i], table(ids).to(soft.dtype)]
            rows.append(torch.cat(parts, dim=0))  # (T, H)
            mask[i, pad:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return torch.stack(rows), mask, pos

    def forward_logits(self, soft: torch.Tensor, seqs: Sequence[Sequence[int]], keep: int) -> torch.Tensor:
        """Logits (B, keep, V) of the last `keep` positions of [pad | soft | seq] rows."""
        embeds, mask, pos = self.build_inputs(soft, seqs)
        extra, _ = self.base.forward_params()
        kwargs = {"logits_to_keep": keep} if extra else {}
        logits = self.base.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False,
                                 **kwargs).logits
        return logits[:, -keep:, :]

    # ----------------------------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[str]] | Sequence[str], *,
              batch_size: int = 8, normalize: bool = False) -> np.ndarray:
        """(N, C) summed (or mean, normalize=True) log-probs of each continuation after soft tokens + prompt.

        Single-token candidates (rating labels): one forward per batch of prompts. Otherwise (genre names of
        several tokens) soft tokens + the prompt run once and the candidates continue that KV cache.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        questions = self.questions_of(prompts)
        cand_lists = normalize_continuations(len(prompts), continuations)
        n_cands = len(cand_lists[0]) if cand_lists else 0
        scores = np.zeros((len(prompts), n_cands), dtype=np.float64)
        counts = np.zeros((len(prompts), n_cands), dtype=np.float64)
        fast: list[tuple[int, list[int], list[int], list[int]]] = []  # (prompt index, *one_forward_plan)
        slow: list[tuple[int, list[tuple[int, list[int]]]]] = []  # (prompt index, [(context len, ids)])
        for i, (prompt, cands) in enumerate(zip(prompts, cand_lists, strict=True)):
            _, parts = self.base.split_continuations(prompt, cands)
            plan = one_forward_plan(parts)
            if plan is not None:
                fast.append((i, *plan))
            else:
                slow.append((i, parts))
        for start in range(0, len(fast), batch_size):
            chunk = fast[start:start + batch_size]
            soft = self.soft_tokens([questions[i] for i, _, _, _ in chunk])
            keep = max(len(shared) for _, _, shared, _ in chunk) + 1
            logprobs = torch.log_softmax(self.forward_logits(soft, [c for _, c, _, _ in chunk], keep).float(), -1)
            for r, (i, _, shared, cand_ids) in enumerate(chunk):
                scores[i], counts[i] = read_one_forward(logprobs[r], shared, cand_ids), len(shared) + 1
        for i, parts in slow:
            scores[i], counts[i] = self._score_with_prefix_cache(self.soft_tokens([questions[i]]), parts, batch_size)
        if normalize:
            scores = scores / np.maximum(counts, 1)
        return scores

    def _score_with_prefix_cache(self, soft: torch.Tensor, parts: list[tuple[int, list[int]]], batch_size: int
                                 ) -> tuple[np.ndarray, np.ndarray]:
        """One prompt's candidates: [soft | shared prefix] runs once; its KV cache is copied across a
        right-padded batch of candidate suffixes (`score_on_prefix_cache`). soft (1, S, H); parts as in
        HFGenerator.score."""
        shared = min(k for k, _ in parts)
        counts = np.array([len(full) - k for k, full in parts], dtype=np.float64)
        extra, cache_arg = self.base.forward_params()
        embeds, mask, pos = self.build_inputs(soft, [parts[0][1][:shared]])  # (1, S + shared, H), no padding
        out = self.base.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
        return score_on_prefix_cache(self.base.model, out, parts, embeds.shape[1], batch_size,
                                     pad_id=self.base.tokenizer.pad_token_id, cache_arg=cache_arg,
                                     device=embeds.device), counts

    # -------------------------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, batch_size: int = 8) -> list[Generation]:
        """Batched generation from inputs_embeds (soft tokens + prompt), grouped by length, input order kept.

        prompt_tokens counts the soft positions too (they occupy the context like tokens).
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        from pllm.models.hf import _StopOnStrings

        questions = self.questions_of(prompts)
        encoded = [self.base.encode_prompt(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        eos_ids = self.base._eos_ids()
        stop_list = [s for s in (stop or []) if s]
        tok = self.base.tokenizer
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            soft = self.soft_tokens([questions[i] for i in idx])
            embeds, mask, _ = self.build_inputs(soft, [encoded[i] for i in idx])
            kwargs = self.base._gen_kwargs(max_new_tokens, temperature)
            if stop_list:
                from transformers import StoppingCriteriaList

                # With inputs_embeds only, generate's ids hold just the new tokens: offset 0.
                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(tok, stop_list, 0)])
            new = self.base.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
            for row, i in enumerate(idx):
                toks = through_eos(new[row].tolist(), eos_ids, tok.pad_token_id if stop_list else None)
                text = tok.decode([t for t in toks if t not in eos_ids], skip_special_tokens=True)
                text, _ = trim_at_stop(text, stop_list)
                results[i] = Generation(text=text, prompt_tokens=len(encoded[i]) + self.config.n_soft,
                                        completion_tokens=len(toks))
        return [r for r in results if r is not None]


# ------------------------------------------------------------------------------------ save / load
def save_soft_encoder(encoder: UserEncoder, spec: TaskSpec, path: str | Path, *,
                      extra: dict[str, Any] | None = None) -> Path:
    """Write weights (safetensors), config.json, the task spec and `extra` (training log) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_dir(path) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        save_config(encoder.config, tmp, CONFIG_FILE)
        atomic_write_json(tmp / SPEC_FILE, spec.to_dict())
        if extra:
            atomic_write_json(tmp / "train_log.json", extra)
    return path


def load_soft_encoder(path: str | Path) -> tuple[UserEncoder, TaskSpec]:
    """Read an encoder saved by `save_soft_encoder`; anything missing or malformed is an ArtifactError."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, SPEC_FILE):
        if not (path / name).is_file():
            raise ArtifactError(f"{path} is not a soft-prompt encoder: {name} is missing")
    try:
        data = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(SoftConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArtifactError(f"{path / CONFIG_FILE}: unknown fields {unknown}")
        config = SoftConfig(**data)
        spec = spec_from_dict(json.loads((path / SPEC_FILE).read_text(encoding="utf-8")), source=str(path / SPEC_FILE))
    except (json.JSONDecodeError, TypeError, InputError) as exc:
        raise ArtifactError(f"{path}: unreadable soft encoder config: {exc}") from None
    encoder = UserEncoder(config)
    try:
        encoder.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"{path / WEIGHTS_FILE}: weights do not match the config: {exc}") from None
    encoder.eval()
    return encoder, spec


def load_soft_generator(path: str | Path, base: Generator, *, store: EmbeddingCache | None = None,
                        embedder: Embedder | None = None) -> SoftPromptGenerator:
    """The entry point for eval and the server: wrap a loaded generator with a saved user encoder.

    The encoder only fits the generator it was trained with: a different model id or hidden size is an
    ArtifactError naming both. `store` (the user store) persists item embeddings across requests.
    """
    encoder, spec = load_soft_encoder(path)
    cfg = encoder.config
    if not isinstance(base, HFGenerator):
        raise ArtifactError(f"soft encoder {path} needs a local transformers generator ('hf'); got {base.name!r}")
    hidden = generator_hidden_size(base)
    if base.model_id != cfg.generator_model_id or hidden != cfg.generator_hidden_size:
        raise ArtifactError(f"soft encoder {path} was trained for generator {cfg.generator_model_id!r} "
                            f"(hidden size {cfg.generator_hidden_size}) but the loaded generator is "
                            f"{base.model_id!r} (hidden size {hidden})")
    return SoftPromptGenerator(base, encoder, spec, embedder=embedder, cache=store)
