"""The full-precision KV cache, the family baseline: sequences share one slotted tensor per layer.

Each sequence owns a slot of ``(slots, kv_heads, capacity, head_dim)`` buffers (one for keys,
one for values, per layer). Per sequence it behaves exactly like ``FullKVCache``; what the
shared layout adds is a batched decode path: the new tokens of a whole decode batch are written
with one indexed store, and attention reads the batch's keys as one padded tensor (a view when
the slots are contiguous) instead of padding each step's copies, which is what a paged or
slotted cache does in a real server. Capacity and slot count double when exceeded.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from effbench.kernels_ref.kvcache._common import (
    CacheFactoryBase,
    KVCacheBase,
    check_indices,
    check_truncate,
)
from effbench.kernels_ref.protocols import CacheLayout


class KVPool:
    """The shared buffers and the free slots of one factory."""

    def __init__(self, layout: CacheLayout, dtype: torch.dtype, slots: int = 8,
                 capacity: int = 256) -> None:
        self.layout = layout
        self.dtype = dtype
        self.capacity = capacity
        self.slots = slots
        self.k = [self._empty(slots, capacity) for _ in range(layout.num_layers)]
        self.v = [self._empty(slots, capacity) for _ in range(layout.num_layers)]
        self.free = list(range(slots))[::-1]

    def _empty(self, slots: int, capacity: int) -> torch.Tensor:
        lay = self.layout
        return torch.zeros(slots, lay.kv_heads, capacity, lay.head_dim, dtype=self.dtype,
                           device=lay.device)

    def _regrow(self, slots: int, capacity: int) -> None:
        for bufs in (self.k, self.v):
            for i, old in enumerate(bufs):
                new = self._empty(slots, capacity)
                new[: old.shape[0], :, : old.shape[2]] = old
                bufs[i] = new
        self.free = list(range(slots - 1, self.slots - 1, -1)) + self.free
        self.slots, self.capacity = slots, capacity

    def ensure(self, length: int) -> None:
        if length > self.capacity:
            cap = self.capacity
            while cap < length:
                cap *= 2
            self._regrow(self.slots, cap)

    def acquire(self) -> int:
        if not self.free:
            self._regrow(self.slots * 2, self.capacity)
        return self.free.pop()

    def release(self, slot: int) -> None:
        self.free.append(slot)


class PooledKVCache(KVCacheBase):
    """One sequence's slot in a ``KVPool``; the ``KVCache`` protocol, full precision."""

    def __init__(self, pool: KVPool) -> None:
        self.pool = pool
        self.slot = pool.acquire()
        self.lengths = [0] * pool.layout.num_layers
        weakref.finalize(self, pool.release, self.slot)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        start, n = self.lengths[layer], k.shape[-2]
        self.pool.ensure(start + n)
        self.pool.k[layer][self.slot, :, start : start + n] = k
        self.pool.v[layer][self.slot, :, start : start + n] = v
        self.lengths[layer] = start + n

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.lengths[layer]
        return self.pool.k[layer][self.slot, :, :n], self.pool.v[layer][self.slot, :, :n]

    def length(self, layer: int = 0) -> int:
        return self.lengths[layer]

    @property
    def layout(self) -> CacheLayout:
        return self.pool.layout

    def truncate(self, length: int) -> None:
        check_truncate(length)
        self.lengths = [min(n, length) for n in self.lengths]

    def keep(self, indices: Sequence[int] | torch.Tensor, layer: int | None = None) -> None:
        """Keep tokens ``indices`` in place: one indexed copy within the slot per layer."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.pool.layout.device)
        layers = range(len(self.lengths)) if layer is None else [layer]
        for li in layers:
            check_indices(idx, self.lengths[li])
            for buf in (self.pool.k[li], self.pool.v[li]):
                buf[self.slot, :, : idx.numel()] = buf[self.slot, :, idx]
            self.lengths[li] = idx.numel()

    @classmethod
    def gather_decode(
        cls, caches: Sequence[Any], layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Copy-free when every cache is a slot of one pool (``append_and_gather``); otherwise
        the shared default.
        """
        pool = caches[0].pool
        if all(isinstance(c, PooledKVCache) and c.pool is pool for c in caches):
            return append_and_gather(caches, layer, k, v)
        return KVCacheBase.gather_decode.__func__(cls, caches, layer, k, v)

    def read_cost(self) -> tuple[float, float]:
        """Analytic (bytes moved, FLOPs) of reading every layer: views of the slot, nothing."""
        return 0.0, 0.0

    def nbytes(self) -> int:
        """Bytes of the stored tokens (the slot's used part, not the pool's capacity)."""
        lay = self.pool.layout
        per_token = 2 * lay.kv_heads * lay.head_dim * self.pool.k[0].element_size()
        return per_token * sum(self.lengths)


def append_and_gather(
    caches: Sequence[PooledKVCache], layer: int, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Append one token per cache (``k``/``v`` ``(kv_heads, batch, head_dim)``) in one store.

    Returns the batch's keys and values as ``(batch, kv_heads, longest, head_dim)`` (padding
    beyond each length is stale data for the caller to mask) and the lengths.
    """
    pool = caches[0].pool
    pos = [c.lengths[layer] for c in caches]
    pool.ensure(max(pos) + 1)
    slots = [c.slot for c in caches]
    dev = pool.layout.device
    s_idx = torch.tensor(slots, device=dev)
    p_idx = torch.tensor(pos, device=dev)
    pool.k[layer][s_idx, :, p_idx] = k.transpose(0, 1).to(pool.dtype)
    pool.v[layer][s_idx, :, p_idx] = v.transpose(0, 1).to(pool.dtype)
    for c in caches:
        c.lengths[layer] += 1
    lengths = [p + 1 for p in pos]
    longest = max(lengths)
    if slots == list(range(slots[0], slots[0] + len(slots))):
        sl = slice(slots[0], slots[0] + len(slots))
        return pool.k[layer][sl, :, :longest], pool.v[layer][sl, :, :longest], lengths
    return pool.k[layer][s_idx, :, :longest], pool.v[layer][s_idx, :, :longest], lengths


class PooledKVCacheFactory(CacheFactoryBase):
    """Makes ``PooledKVCache``s sharing one pool (created on first use from the layout)."""

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.dtype = dtype
        self._pool: KVPool | None = None

    def new_cache(self, layout: CacheLayout) -> PooledKVCache:
        if self._pool is None or self._pool.layout != layout:
            self._pool = KVPool(layout, self.dtype or layout.dtype)
        return self.track(PooledKVCache(self._pool))
