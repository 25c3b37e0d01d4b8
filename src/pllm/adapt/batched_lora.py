"""Batched LoRA for mixed batches: each row's adapter gathered by index and applied with two batched matmuls.

peft's mixed-batch path (`adapter_names=` per row) loops over the distinct adapters inside every LoRA layer,
one sub-batch each: 8 users cost 8 small matmul pairs per layer per decoding step. Here each LoRA layer's
adapters live stacked (A: (C+1, R, in), B: (C+1, out, R), slot 0 an all-zero adapter for base rows, ranks
zero-padded to the largest R, which is exact), and a batch gathers its rows' pairs and runs
`x @ A.T @ B.T * scale` as two `torch.bmm` calls.

The stacks are the storage: an adapter added to a `BatchedLoRA` takes one slot (the same in every layer) and
peft's own `lora_A` / `lora_B` weights become views of that slot, so the weights are held once. A removed
adapter's slot is zeroed and reused by the next one; a stack grows (copied once, the views re-pointed) only
when more adapters are resident at once than it has slots, or a larger rank arrives.

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

    a: torch.Tensor  # (C+1, R, in)
    b: torch.Tensor  # (C+1, out, R)
    scale: torch.Tensor  # (C+1,) alpha / r per adapter (peft's `scaling`), 0 for a free slot
    slot: dict[str, int] = field(default_factory=dict)  # the adapters on this layer -> their slot
    rank: dict[str, int] = field(default_factory=dict)
    _names: Sequence[str] | None = field(default=None, repr=False)
    _index: torch.Tensor | None = field(default=None, repr=False)

    def index(self, names: Sequence[str]) -> torch.Tensor:
        """Row -> slot; peft passes the same list to every layer of a forward, so it is converted once."""
        if names is not self._names or self._index is None:
            self._names = names
            self._index = torch.tensor([self.slot.get(n, 0) for n in names], dtype=torch.long, device=self.a.device)
        return self._index

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.a, self.b, self.scale))


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


def _is_lora_layer(module: object) -> bool:
    from peft.tuners.lora.layer import LoraLayer

    return isinstance(module, LoraLayer)


def _view(layer: Any, name: str, stack: _Stack) -> None:
    """Point peft's weights of adapter `name` at its slot (a view: the stack holds the only copy)."""
    slot, r = stack.slot[name], stack.rank[name]
    layer.lora_A[name].weight = torch.nn.Parameter(stack.a[slot, :r], requires_grad=False)  # (r, in)
    layer.lora_B[name].weight = torch.nn.Parameter(stack.b[slot, :, :r], requires_grad=False)  # (out, r)


def _grown(layer: Any, stack: _Stack | None, slots: int, rank: int) -> _Stack:
    """`stack` with room for `slots` adapters of rank `rank` (a new one when None); re-pointed views."""
    if stack is not None and stack.a.shape[0] > slots and stack.a.shape[1] >= rank:
        return stack
    ref = layer.lora_A[next(iter(layer.lora_A))].weight
    n_in, n_out = ref.shape[1], layer.lora_B[next(iter(layer.lora_B))].weight.shape[0]
    old_slots, old_rank = (stack.a.shape[0], stack.a.shape[1]) if stack is not None else (1, 0)
    if slots >= old_slots:  # 1.5x at a time (1, 2, 3, 4, 6, 9, ...): a few copies, at most 1.5x the peak
        slots = max(slots, old_slots - 1 + max(1, (old_slots - 1) // 2))
    size, rank = max(slots + 1, old_slots), max(rank, old_rank)
    grown = _Stack(torch.zeros(size, rank, n_in, dtype=ref.dtype, device=ref.device),
                   torch.zeros(size, n_out, rank, dtype=ref.dtype, device=ref.device),
                   torch.zeros(size, dtype=ref.dtype, device=ref.device))
    if stack is not None:
        grown.a[:old_slots, :old_rank] = stack.a
        grown.b[:old_slots, :, :old_rank] = stack.b
        grown.scale[:old_slots] = stack.scale
        grown.slot, grown.rank = stack.slot, stack.rank
        for name in stack.slot:
            _view(layer, name, grown)
    return grown


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
    """The stacked LoRA layers of one peft model, kept in step with its adapters by `add` and `remove`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.layers: dict[torch.nn.Module, _Stack] = {}
        self.unserved: dict[str, str] = {}  # module name -> why peft's loop serves it
        self.slots: dict[str, int] = {}  # adapter -> its slot in every stack
        self._free: list[int] = []
        for name in getattr(model, "peft_config", {}):
            self.add(name)

    @property
    def nbytes(self) -> int:
        """Bytes of every stack (the adapters' LoRA weights themselves, padded to the stacks' ranks)."""
        return sum(stack.nbytes for stack in self.layers.values())

    @property
    def capacity(self) -> int:
        """Slots per stack (the most adapters resident at once so far)."""
        return max((stack.a.shape[0] - 1 for stack in self.layers.values()), default=0)

    def add(self, adapter: str) -> None:
        """Copy a loaded adapter's LoRA weights into a free slot of every layer it targets; peft's weights
        become views of that slot."""
        if adapter in self.slots:
            return
        slot = min(self._free) if self._free else len(self.slots) + 1
        if slot in self._free:
            self._free.remove(slot)
        self.slots[adapter] = slot
        for name, module in self.model.named_modules():
            layer: Any = module  # a peft LoRA layer (an nn.Module), once the check below passed
            if not _is_lora_layer(layer) or adapter not in layer.lora_A:
                continue
            reason = _servable(layer)
            if reason is not None:
                self.unserved[name] = reason
                self._release(module)
                continue
            wa, wb = layer.lora_A[adapter].weight.detach(), layer.lora_B[adapter].weight.detach()
            stack = _grown(layer, self.layers.get(module), slot, wa.shape[0])
            self.layers[module] = stack
            stack.slot[adapter], stack.rank[adapter] = slot, wa.shape[0]
            with torch.no_grad():
                stack.a[slot].zero_()
                stack.b[slot].zero_()
                stack.a[slot, :wa.shape[0]] = wa  # zero rows past this adapter's rank add nothing
                stack.b[slot, :, :wb.shape[1]] = wb
                stack.scale[slot] = float(layer.scaling[adapter])
            stack._names = None
            _view(layer, adapter, stack)

    def remove(self, adapter: str) -> None:
        """Zero the adapter's slot in every stack and free it for the next adapter (call before peft deletes
        the adapter); a stack left empty is dropped."""
        slot = self.slots.pop(adapter, None)
        if slot is None:
            return
        self._free.append(slot)
        for module, stack in list(self.layers.items()):
            if stack.slot.pop(adapter, None) is None:
                continue
            stack.rank.pop(adapter)
            with torch.no_grad():
                stack.a[slot].zero_()
                stack.b[slot].zero_()
                stack.scale[slot] = 0
            stack._names = None
            if not stack.slot:
                del self.layers[module]
        if not self.slots:
            self._free.clear()

    def _release(self, module: torch.nn.Module) -> None:
        """A layer peft's loop serves from now on: its adapters get their own copies back."""
        stack = self.layers.pop(module, None)
        layer: Any = module
        for name in stack.slot if stack is not None else ():
            layer.lora_A[name].weight = torch.nn.Parameter(layer.lora_A[name].weight.detach().clone(),
                                                           requires_grad=False)
            layer.lora_B[name].weight = torch.nn.Parameter(layer.lora_B[name].weight.detach().clone(),
                                                           requires_grad=False)

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
