"""The four family protocols: what the reference engine asks of a technique.

They live here, beside the engine that calls them, because kernels_ref imports nothing of the
rest of the project; effbench.suite.protocols re-exports them for adapter authors. They are
structural
(typing.Protocol): an adapter satisfies one by having the methods, not by inheriting.

Tensor layout conventions, used by every family:
- attention tensors are ``(..., heads, tokens, head_dim)``; leading batch dims are optional;
- a KV cache holds one sequence and stores ``(kv_heads, tokens, head_dim)`` per layer;
- query heads may be a multiple of KV heads (grouped-query attention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    from effbench.kernels_ref.engine import StepBatch, StepContext
    from effbench.kernels_ref.requests import Request


@dataclass(frozen=True)
class AttentionShape:
    """One attention call: ``batch`` sequences of ``q_len`` queries over ``kv_len`` keys."""

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    dtype_bytes: int = 4

    def __post_init__(self) -> None:
        if min(self.batch, self.heads, self.kv_heads, self.q_len, self.kv_len, self.head_dim) < 1:
            raise ValueError(f"attention shape dims must be >= 1, got {self}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})"
            )
        if self.q_len > self.kv_len:
            raise ValueError(f"q_len ({self.q_len}) cannot exceed kv_len ({self.kv_len})")


@runtime_checkable
class AttentionBackend(Protocol):
    """Causal attention of the last ``q_len`` positions over ``kv_len`` keys.

    ``forward`` serves prefill, chunked prefill and multi-token verification: query i sits at
    absolute position ``kv_len - q_len + i`` and sees keys ``0..kv_len - q_len + i`` (subject to
    the technique's own sparsity). ``decode`` is the one-query case, kept separate so that a
    technique can use a cheaper path. ``flops``/``bytes`` are analytic, for the roofline.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...

    def flops(self, shape: AttentionShape) -> float: ...

    def bytes(self, shape: AttentionShape) -> float: ...


@runtime_checkable
class KVCache(Protocol):
    """The keys and values of one sequence, every layer.

    ``read`` returns full-precision tensors (dequantized where the cache compresses), so any
    attention backend can consume any cache. ``truncate`` rolls back rejected speculative tokens.
    ``nbytes`` is measured from the tensors the cache really holds, never computed from a formula.
    Optionally a cache offers ``read_cost() -> (bytes, flops)``, the analytic traffic and work
    of reading every layer, which places the kernel-level read on the roofline.
    """

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None: ...

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def length(self, layer: int = 0) -> int: ...

    def truncate(self, length: int) -> None: ...

    def nbytes(self) -> int: ...


@dataclass(frozen=True)
class CacheLayout:
    """What a cache factory needs to know about the model it serves."""

    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device


@runtime_checkable
class KVCacheFactory(Protocol):
    """Makes one empty cache per sequence; the technique's parameters live on the factory."""

    def new_cache(self, layout: CacheLayout) -> KVCache: ...


@dataclass(frozen=True)
class Budget:
    """Per-iteration limits a scheduler must respect."""

    max_batch: int
    max_tokens: int


@runtime_checkable
class Scheduler(Protocol):
    """Chooses the next iteration's work: which requests run, and how many tokens each feeds.

    ``waiting`` are arrived requests not yet started, in arrival order; ``running`` have started
    (some prompt tokens computed). Returns ``(request, n_tokens)`` pairs: for a request still in
    prefill, ``n_tokens`` prompt tokens are fed (a chunk if fewer than remain); for a request in
    decode, ``n_tokens`` must be 1 (the decoder decides how many tokens a decode step emits).
    """

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]: ...


@runtime_checkable
class Decoder(Protocol):
    """Turns a scheduled batch into forward passes and emitted tokens.

    ``step`` runs one engine iteration: it feeds prefill chunks, and for each decoding request
    emits one or more tokens (speculative and parallel decoders emit several per step), writing
    them to the request and its timeline through ``ctx``.
    """

    def prepare(self, ctx: StepContext) -> None: ...

    def step(self, ctx: StepContext, batch: StepBatch) -> None: ...

    def stats(self) -> dict[str, Any]: ...
