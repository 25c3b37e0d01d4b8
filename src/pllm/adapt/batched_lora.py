"""Batched LoRA for mixed batches: each row's adapter gathered by index and applied with two batched matmuls.

peft's mixed-batch path (`adapter_names=` per row) loops over the distinct adapters inside every LoRA layer,
one sub-batch each: 8 users cost 8 small matmul pairs per layer per decoding step. Here each LoRA layer's
adapters are stacked once (A: (N+1, R, in), B: (N+1, out, R), slot 0 an all-zero adapter for base rows,
ranks zero-padded to the largest R, which is exact), and a batch gathers its rows' pairs and runs
`x @ A.T @ B.T * scale` as two `torch.bmm` calls.

peft stays the format, the loader and the routing: peft's forward hooks still hand every LoRA layer the
per-row `adapter_names`; `BatchedLoRA.active()` only swaps the layer's `_mixed_batch_forward` for the
duration of a call. Layers it cannot serve keep peft's own loop (per layer, correct either way): LoRA
variants (DoRA, aLoRA: `lora_variant`), LoRA with a bias on B, non-`Linear` targets (embeddings, convs), and
a layer in training mode with dropout.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class _Stack:
    """One LoRA layer's adapters, stacked; slot 0 is the zero adapter (base rows, adapters not on this layer)."""

    a: torch.Tensor  # (N+1, R, in)
    b: torch.Tensor  # (N+1, out, R)
    scale: torch.Tensor  # (N+1,) alpha / r per adapter (peft's `scaling`), 0 for slot 0
    slot: dict[str, int]
    _names: Sequence[str] | None = field(default=None, repr=False)
    _index: torch.Tensor | None = field(default=None, repr=False)

    def index(self, names: Sequence[str]) -> torch.Tensor:
        """Row -> slot; peft passes the same list to every layer of a forward, so it is converted once."""
        if names is not self._names or self._index is None:
            self._names = names
            self._index = torch.tensor([self.slot.get(n, 0) for n in names], dtype=torch.long, device=self.a.device)
        return self._index


def _servable(layer: Any) -> str | None:
    """Why this peft LoRA layer stays on peft's per-adapter loop, or None when it can be stacked."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(layer) is not LoraLinear:
        return f"{type(layer).__name__} target (only Linear LoRA layers are stacked)"
    if any(name in layer.lora_variant for name in layer.lora_A):
        return "LoRA variant (DoRA/aLoRA)"
    if any(layer.lora_B[name].bias is not None for name in layer.lora_A):
        return "LoRA with bias"
    return None


def _stack(layer: Any) -> _Stack:
    names = list(layer.lora_A)
    first = layer.lora_A[names[0]].weight
    rank = max(layer.lora_A[n].weight.shape[0] for n in names)
    n_in, n_out = first.shape[1], layer.lora_B[names[0]].weight.shape[0]
    a = torch.zeros(len(names) + 1, rank, n_in, dtype=first.dtype, device=first.device)
    b = torch.zeros(len(names) + 1, n_out, rank, dtype=first.dtype, device=first.device)
    scale = torch.zeros(len(names) + 1, dtype=first.dtype, device=first.device)
    for slot, name in enumerate(names, start=1):
        wa, wb = layer.lora_A[name].weight.detach(), layer.lora_B[name].weight.detach()
        a[slot, :wa.shape[0]] = wa  # zero rows past this adapter's rank add nothing
        b[slot, :, :wb.shape[1]] = wb
        scale[slot] = float(layer.scaling[name])
    return _Stack(a, b, scale, {name: slot for slot, name in enumerate(names, start=1)})


def _batched_forward(layer: Any, x: torch.Tensor, *args: object, adapter_names: Sequence[str],
                     **kwargs: object) -> torch.Tensor:
    """Drop-in for peft's `LoraLayer._mixed_batch_forward` (bound per layer by `BatchedLoRA.active`)."""
    stack: _Stack = layer._pllm_stack
    if layer.training and any(d.p > 0 for d in layer.lora_dropout.values() if isinstance(d, torch.nn.Dropout)):
        return type(layer)._mixed_batch_forward(layer, x, *args, adapter_names=adapter_names, **kwargs)
    from peft.tuners.lora.layer import VARIANT_KWARG_KEYS

    for key in VARIANT_KWARG_KEYS:  # for LoRA variants only; never passed to the base layer
        kwargs.pop(key, None)
    result = layer.base_layer(x, *args, **kwargs)  # (B, T, out)
    index = stack.index(adapter_names)  # (B,)
    rows = index.nonzero().squeeze(-1)
    if rows.numel() == 0:
        return result
    if rows.numel() < index.numel():  # only rows with an adapter on this layer
        index = index[rows]
    xs = (x if rows.numel() == x.shape[0] else x[rows]).to(stack.a.dtype)
    shape = xs.shape
    xs = xs.reshape(shape[0], -1, shape[-1])  # (b, T, in)
    low = torch.bmm(xs, stack.a[index].transpose(1, 2))  # (b, T, R)
    delta = torch.bmm(low, stack.b[index].transpose(1, 2)) * stack.scale[index].view(-1, 1, 1)  # (b, T, out)
    delta = delta.reshape(*shape[:-1], delta.shape[-1]).to(result.dtype)
    if rows.numel() == x.shape[0]:
        return result + delta
    return result.index_add(0, rows, delta)


class BatchedLoRA:
    """The stacked LoRA layers of one peft model, built once per set of loaded adapters."""

    def __init__(self, model: torch.nn.Module) -> None:
        from peft.tuners.lora.layer import LoraLayer

        self.layers: dict[torch.nn.Module, _Stack] = {}
        self.unserved: dict[str, str] = {}  # module name -> why peft's loop serves it
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer) or not isinstance(module, torch.nn.Module) or not module.lora_A:
                continue
            reason = _servable(module)
            if reason is None:
                self.layers[module] = _stack(module)
            else:
                self.unserved[name] = reason

    @contextmanager
    def active(self) -> Iterator[None]:
        """peft's mixed-batch calls (`adapter_names=`) inside this block run the stacked path."""
        layer: Any  # a peft LoRA layer, patched on this instance only (its class keeps peft's method)
        for layer, stack in self.layers.items():
            layer._pllm_stack = stack
            layer._mixed_batch_forward = types.MethodType(_batched_forward, layer)
        try:
            yield
        finally:
            for layer in self.layers:  # tolerant of a nested block that already restored peft's method
                layer.__dict__.pop("_mixed_batch_forward", None)
                layer.__dict__.pop("_pllm_stack", None)
