"""What KV caches share: growable storage, checks, the ``KVCacheBase`` and
``CacheFactoryBase`` defaults of the protocol, and the plain full-precision ``FullKVCache``
(per-sequence doubling buffers; drafts and reference paths use it, the registered baseline is
the pooled ``full_cache``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from effbench.kernels_ref.protocols import CacheLayout, MemoryState

MIN_CAPACITY = 16

class GrowingBuffer:
    """A tensor ``(rows, capacity, *tail)`` whose dim 1 is filled up to ``length``.

    Capacity doubles when full (amortised O(1) append, old contents copied once per doubling).
    ``view`` is the used part, a view of the storage: it stays valid after later appends but
    sees overwrites after a ``truncate`` and re-append.
    """

    def __init__(
        self, rows: int, tail: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> None:
        self.data = torch.empty((rows, 0, *tail), dtype=dtype, device=device)
        self.length = 0

    def reserve(self, n: int) -> None:
        cap = self.data.shape[1]
        if n <= cap:
            return
        new_cap = max(n, 2 * cap, MIN_CAPACITY)
        data = self.data.new_empty((self.data.shape[0], new_cap, *self.data.shape[2:]))
        data[:, : self.length] = self.data[:, : self.length]
        self.data = data

    def append(self, x: torch.Tensor) -> None:
        n = x.shape[1]
        self.reserve(self.length + n)
        self.data[:, self.length : self.length + n] = x
        self.length += n

    def view(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = self.length if stop is None else stop
        return self.data[:, start:stop]

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)

    def used_nbytes(self, start: int = 0) -> int:
        used = self.view(start)
        return used.numel() * used.element_size()

    def allocated_nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def check_layer(layout: CacheLayout, layer: int) -> None:
    if not 0 <= layer < layout.num_layers:
        raise IndexError(f"layer {layer} out of range for {layout.num_layers} layers")


def check_kv(layout: CacheLayout, k: torch.Tensor, v: torch.Tensor) -> None:
    if k.shape != v.shape or k.dim() != 3:
        raise ValueError(
            f"k and v must both be (kv_heads, tokens, head_dim), got "
            f"{tuple(k.shape)} and {tuple(v.shape)}"
        )
    if k.shape[0] != layout.kv_heads or k.shape[2] != layout.head_dim:
        raise ValueError(
            f"expected ({layout.kv_heads}, tokens, {layout.head_dim}), got {tuple(k.shape)}"
        )


def check_truncate(length: int) -> None:
    if length < 0:
        raise ValueError(f"truncate length must be >= 0, got {length}")




class KVCacheBase:
    """Shared behaviour of the reference caches (subclasses give append/read/length/truncate/
    nbytes and a ``layout``).

    Defaults: no score observation; ``read_cost`` of views (nothing moves); ``keep`` by reading
    every layer, selecting the kept tokens and rebuilding (correct for any cache; caches with a
    cheaper in-place path override it); ``gather_decode`` by appending to each cache, reading
    it and copying into one padded tensor (one copy per sequence; the pooled full cache
    overrides it with a copy-free view).
    """

    observes: bool = False
    layout: CacheLayout

    def observe(self, layer: int, q: torch.Tensor) -> None:
        """Called after each attention call when ``observes`` is True; no-op by default."""

    def read_cost(self) -> tuple[float, float]:
        return 0.0, 0.0

    def keep(self, indices: Sequence[int] | torch.Tensor, layer: int | None = None) -> None:
        """Keep only tokens ``indices`` (ascending positions) of every layer, or of ``layer``."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.layout.device)
        layers = range(self.layout.num_layers)
        for li in layers:
            check_indices(idx, self.length(li))
        kept = []
        for li in layers:
            k, v = self.read(li)
            if layer is None or li == layer:
                k, v = k.index_select(1, idx), v.index_select(1, idx)
            kept.append((k.clone(), v.clone()))
        self.truncate(0)
        for li, (k, v) in enumerate(kept):
            self.append(li, k, v)

    @classmethod
    def gather_decode(
        cls, caches: Sequence[Any], layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Append token i (``k``/``v`` ``(kv_heads, batch, head_dim)``) to cache i, then return
        the batch's keys/values as ``(batch, kv_heads, longest, head_dim)`` and the lengths
        (padding past a length is zeros, for the caller to mask).
        """
        reads = []
        for i, cache in enumerate(caches):
            cache.append(layer, k[:, i : i + 1], v[:, i : i + 1])
            reads.append(cache.read(layer))
        lengths = [kc.shape[-2] for kc, _ in reads]
        longest = max(lengths)
        h, d = k.shape[0], k.shape[-1]
        dtype = reads[0][0].dtype
        kp = k.new_zeros((len(caches), h, longest, d), dtype=dtype)
        vp = v.new_zeros((len(caches), h, longest, d), dtype=dtype)
        for i, (kc, vc) in enumerate(reads):
            kp[i, :, : lengths[i]] = kc
            vp[i, :, : lengths[i]] = vc
        return kp, vp, lengths


class CacheFactoryBase:
    """Shared behaviour of cache factories: ``memory()`` sums ``nbytes`` over the live caches
    it made (weakly held, so a finished request's cache stops counting when it is dropped).
    """

    capacity_bytes: int | None = None
    bounded: bool = False

    def __init__(self) -> None:
        self._live: weakref.WeakSet = weakref.WeakSet()

    def track(self, cache: Any) -> Any:
        self._live.add(cache)
        return cache

    def memory(self) -> MemoryState:
        return MemoryState(sum(c.nbytes() for c in list(self._live)), self.capacity_bytes)


def check_indices(idx: torch.Tensor, length: int) -> None:
    """Indices to keep must be unique, ascending and inside ``[0, length)``."""
    if idx.dim() != 1:
        raise ValueError(f"keep indices must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= length):
        raise IndexError(f"keep indices must be in [0, {length}), got {idx.tolist()[:8]}...")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError("keep indices must be strictly ascending (token order is kept)")


class FullKVCache(KVCacheBase):
    """Keys and values kept as they come, at one dtype, in doubling per-layer buffers.

    ``dtype`` (default: the layout's model dtype) is the storage dtype. ``read`` returns views
    ``[:, :length]`` of the buffers (no copy) when it equals the model dtype, and otherwise a
    copy cast to the model dtype, so that attention always gets the dtype of its queries.
    ``nbytes`` counts the stored tokens only (``2 * layers * kv_heads * tokens * head_dim *
    element_size`` as measured from the used slices); ``allocated_nbytes`` counts the reserved
    capacity as well.
    """

    def __init__(self, layout: CacheLayout, dtype: torch.dtype | None = None) -> None:
        self.layout = layout
        self.dtype = layout.dtype if dtype is None else dtype
        shape = (layout.kv_heads, (layout.head_dim,), self.dtype, layout.device)
        self._k = [GrowingBuffer(*shape) for _ in range(layout.num_layers)]
        self._v = [GrowingBuffer(*shape) for _ in range(layout.num_layers)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append ``(kv_heads, t, head_dim)`` keys/values to ``layer`` (cast to the cache dtype)."""
        check_layer(self.layout, layer)
        check_kv(self.layout, k, v)
        self._k[layer].append(k)
        self._v[layer].append(v)

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        check_layer(self.layout, layer)
        dtype = self.layout.dtype
        return self._k[layer].view().to(dtype), self._v[layer].view().to(dtype)

    def length(self, layer: int = 0) -> int:
        check_layer(self.layout, layer)
        return self._k[layer].length

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` tokens of every layer (layers already shorter are kept)."""
        check_truncate(length)
        for buf in (*self._k, *self._v):
            buf.truncate(length)

    def nbytes(self) -> int:
        """Bytes of the stored tokens (used part of the buffers, not their capacity)."""
        return sum(buf.used_nbytes() for buf in (*self._k, *self._v))

    def allocated_nbytes(self) -> int:
        """Bytes reserved by the buffers, including unused capacity."""
        return sum(buf.allocated_nbytes() for buf in (*self._k, *self._v))

    def read_cost(self) -> tuple[float, float]:
        """Analytic (bytes moved, FLOPs) of reading every layer: views move nothing; a storage
        dtype other than the model's is cast, reading the store and writing the copy.
        """
        if self.dtype == self.layout.dtype:
            return 0.0, 0.0
        elem = torch.tensor([], dtype=self.layout.dtype).element_size()
        stored = self.nbytes()
        per_elem = torch.tensor([], dtype=self.dtype).element_size()
        return float(stored + stored // per_elem * elem), 0.0


class FullKVCacheFactory(CacheFactoryBase):
    """Makes ``FullKVCache``s; ``dtype=None`` stores at the model dtype from the layout."""

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.dtype = dtype

    def new_cache(self, layout: CacheLayout) -> FullKVCache:
        return self.track(FullKVCache(layout, self.dtype))


