"""The family protocols: what the reference engine asks of a technique, and their value types.

They live here, beside the engine that calls them, because kernels_ref imports nothing of the
rest of the project; effbench.suite.protocols re-exports them for adapter authors. They are
structural (typing.Protocol): an adapter satisfies one by having the methods. The family
packages supply the optional parts (``AttentionBase``, ``KVCacheBase`` and
``CacheFactoryBase``, ``DecoderBase``; for schedulers the memory-aware ``admit`` helper), so
the engine never probes with ``hasattr``. This module depends on value types only
(kernels_ref.requests).

Tensor layout conventions, used by every family:
- attention tensors are ``(..., heads, tokens, head_dim)``; leading batch dims are optional;
- a KV cache holds one sequence and stores ``(kv_heads, tokens, head_dim)`` per layer;
- query heads may be a multiple of KV heads (grouped-query attention).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from effbench.kernels_ref.requests import Request, StepBatch

# An attention-gym style mask: (batch, head, q_pos, kv_pos) index tensors (broadcastable, with
# absolute positions) -> boolean tensor, True where the query may attend the key.
MaskPredicate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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


@dataclass(frozen=True)
class StepInfo:
    """What every attention call of one packed forward shares; built once per engine step.

    Per sequence of the step: its id (request id), its first query's absolute position
    (``starts``), its query count (``q_lens``) and its shared-prefix group (-1: none) with the
    group's prefix length. ``causal`` False means bidirectional attention (diffusion LMs);
    ``mask`` is an optional predicate over (batch, head, q_pos, kv_pos) applied on top;
    ``seq_masks`` (empty, or one per sequence, None for most) adds a sequence's own predicate,
    such as a draft tree's (each node sees the context and its ancestors only).
    """

    seq_ids: tuple[int, ...]
    starts: tuple[int, ...]
    q_lens: tuple[int, ...]
    causal: bool = True
    mask: MaskPredicate | None = None
    prefix_groups: tuple[int, ...] = ()
    prefix_lens: tuple[int, ...] = ()
    seq_masks: tuple[MaskPredicate | None, ...] = ()

    @property
    def all_decode(self) -> bool:
        """True when every sequence feeds one token (the batched decode path)."""
        return len(self.q_lens) > 1 and max(self.q_lens) == 1


@dataclass(frozen=True, slots=True)
class AttentionMeta:
    """One attention call: which layer, which sequence of the step (-1: the whole batch).

    Cheap to make per call: the step-wide part is the shared ``StepInfo``.
    """

    layer: int
    seq: int
    step: StepInfo

    @staticmethod
    def single(q_len: int, kv_len: int, *, layer: int = 0, causal: bool = True,
               mask: MaskPredicate | None = None) -> AttentionMeta:
        """Meta of a lone call under the offset rule (query i at ``kv_len - q_len + i``)."""
        return AttentionMeta(layer, 0, StepInfo((0,), (kv_len - q_len,), (q_len,), causal, mask))

    @property
    def q_start(self) -> int:
        """Absolute position of the call's first query (its sequence's, or the first one's)."""
        return self.step.starts[max(self.seq, 0)]

    @property
    def causal(self) -> bool:
        return self.step.causal

    @property
    def mask(self) -> MaskPredicate | None:
        """The step's predicate and-ed with this call's sequence's own (either may be None)."""
        step = self.step.mask
        own = self.step.seq_masks[self.seq] if self.step.seq_masks and self.seq >= 0 else None
        if own is None or step is None:
            return own or step
        return lambda b, h, q, k: step(b, h, q, k) & own(b, h, q, k)

    @property
    def prefix_group(self) -> int:
        groups = self.step.prefix_groups
        return groups[self.seq] if groups and self.seq >= 0 else -1


@runtime_checkable
class AttentionBackend(Protocol):
    """Attention of ``q_len`` queries over ``kv_len`` keys, causal by default.

    ``forward`` serves prefill, chunked prefill and multi-token verification: query i sits at
    absolute position ``kv_len - q_len + i`` and sees keys ``0..kv_len - q_len + i`` (subject to
    the technique's own sparsity, ``meta.mask`` and ``meta.causal``). ``decode`` is the
    one-query case, kept separate so that a technique can use a cheaper path.
    ``decode_padded`` is one query per sequence for a whole batch over keys padded to the
    longest sequence (``(batch, kv_heads, longest, head_dim)``, each sequence's real length in
    ``lengths``): the engine's batched decode path, the same for every backend.
    ``meta`` is None for a lone call (kernel level), meaning ``AttentionMeta.single``.
    ``flops``/``bytes`` are analytic, for the roofline.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                meta: AttentionMeta | None = None) -> torch.Tensor: ...

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               meta: AttentionMeta | None = None) -> torch.Tensor: ...

    def decode_padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      lengths: Sequence[int], meta: AttentionMeta | None = None
                      ) -> torch.Tensor: ...

    def flops(self, shape: AttentionShape) -> float: ...

    def bytes(self, shape: AttentionShape) -> float: ...


@dataclass(frozen=True)
class CacheLayout:
    """What a cache factory needs to know about the model it serves."""

    num_layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device

    @property
    def full_bytes_per_token(self) -> int:
        """Bytes one token's keys and values take at the model dtype, every layer."""
        elem = torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.kv_heads * self.head_dim * elem


@runtime_checkable
class KVCache(Protocol):
    """The keys and values of one sequence, every layer.

    ``read`` returns full-precision tensors (dequantized where the cache compresses), so any
    attention backend can consume any cache. ``truncate`` rolls back rejected speculative tokens;
    ``keep(indices)`` keeps an arbitrary ordered index set of tokens (eviction, tree rollback).
    ``nbytes`` is measured from the tensors the cache really holds, never from a formula.
    ``read_cost`` is the analytic (bytes, FLOPs) of reading every layer (views cost nothing),
    which places the kernel-level read on the roofline. ``observes`` says whether the cache
    wants ``observe(layer, q)`` after each attention call (score-based eviction such as H2O or
    SnapKV scores keys from the queries). ``gather_decode`` (a classmethod) appends one token
    to each cache of a decode batch and returns the batch's keys/values padded to the longest
    sequence, with the lengths: the batched decode path every cache shares.
    """

    observes: bool

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None: ...

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def length(self, layer: int = 0) -> int: ...

    def truncate(self, length: int) -> None: ...

    def keep(self, indices: Sequence[int] | torch.Tensor, layer: int | None = None) -> None: ...

    def observe(self, layer: int, q: torch.Tensor) -> None: ...

    def nbytes(self) -> int: ...

    def read_cost(self) -> tuple[float, float]: ...

    @classmethod
    def gather_decode(
        cls, caches: Sequence[Any], layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]: ...


@dataclass(frozen=True)
class MemoryState:
    """KV memory of one factory: bytes in use and the capacity (None: unbounded)."""

    used_bytes: int
    capacity_bytes: int | None = None

    @property
    def free_bytes(self) -> float:
        return math.inf if self.capacity_bytes is None else self.capacity_bytes - self.used_bytes


@runtime_checkable
class KVCacheFactory(Protocol):
    """Makes one empty cache per sequence; the technique's parameters live on the factory.

    ``memory()`` reports the bytes its live caches hold and the pool's capacity if it has one
    (a paged pool); the engine turns it into the scheduler's ``Budget.free_kv_bytes``.
    ``bounded`` says whether the factory has a capacity of its own (a pool): when neither it
    nor the engine caps memory, the engine skips ``memory()`` (summing every live cache's bytes
    each step would cost the decode loop for nothing).
    """

    bounded: bool

    def new_cache(self, layout: CacheLayout) -> KVCache: ...

    def memory(self) -> MemoryState: ...


@dataclass(frozen=True)
class Budget:
    """Per-iteration limits a scheduler must respect.

    ``free_kv_bytes`` is the KV memory left (inf: no cap) and ``kv_bytes_per_token`` what one
    more token costs, so ``fits`` tells whether feeding n more tokens stays within memory.
    """

    max_batch: int
    max_tokens: int
    free_kv_bytes: float = math.inf
    kv_bytes_per_token: float = 0.0

    def fits(self, tokens: int, already: int = 0) -> bool:
        """Whether ``tokens`` more tokens (after ``already`` admitted this step) fit in memory."""
        return (already + tokens) * self.kv_bytes_per_token <= self.free_kv_bytes


@runtime_checkable
class Scheduler(Protocol):
    """Chooses the next iteration's work: which requests run, and how many tokens each feeds.

    ``waiting`` are arrived requests not yet started (or preempted), in arrival order;
    ``running`` have started (some prompt tokens computed). Returns ``(request, n_tokens)``
    pairs: for a request still in prefill, ``n_tokens`` prompt tokens are fed (a chunk if fewer
    than remain); for a request in decode, ``n_tokens`` must be 1 (the decoder decides how many
    tokens a decode step emits). Admission must respect ``budget.fits`` (KV memory); if running
    requests outgrow memory the engine preempts the newest by recompute.
    """

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]: ...


@dataclass
class Feed:
    """Tokens of one sequence to push through a model: ``tokens`` start at ``start``.

    ``logits`` selects the rows that get logits (and hidden states, when asked): ``"none"``,
    ``"last"`` or ``"all"``.
    """

    cache: Any
    tokens: list[int]
    start: int
    logits: str = "last"
    seq_id: int = 0
    prefix_group: int = -1
    prefix_len: int = 0
    positions: tuple[int, ...] | None = None
    """Rotary positions of the tokens when they are not ``start, start + 1, ...`` (a draft
    tree's nodes sit at their depth); the keys still fill the cache slots in order."""
    mask: MaskPredicate | None = None
    """This sequence's own attention predicate over cache slots (a draft tree's)."""


@dataclass(frozen=True)
class ForwardOut:
    """Per feed: logits rows (None where the feed asked for none) and, if asked, the final
    hidden states of the same rows (after the last run layer, before the final norm).
    """

    logits: list[torch.Tensor | None]
    hidden: list[torch.Tensor | None] | None = None


class EngineOps(Protocol):
    """What a decoder may use during a step (the engine's ``StepContext`` satisfies it).

    ``forward`` runs the target (or ``model``/``attention`` given, e.g. a draft) over packed
    feeds; ``hidden`` also returns hidden states; ``layers`` runs only the first ``layers``
    layers before the norm and head (self-speculation, early exit).
    """

    model: Any
    draft: Any
    temperature: float
    generator: torch.Generator | None

    def now(self) -> int: ...

    def forward(self, feeds: Sequence[Feed], *, hidden: bool = False, layers: int | None = None,
                model: Any = None, attention: AttentionBackend | None = None) -> ForwardOut: ...

    def new_cache(self, model: Any = None, factory: KVCacheFactory | None = None) -> KVCache: ...

    def pick(self, logits: torch.Tensor) -> list[int]: ...

    def probs(self, logits: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Decoder(Protocol):
    """Turns a scheduled batch into forward passes and emitted tokens.

    ``step`` runs one engine iteration: it feeds prefill chunks, and for each decoding request
    emits one or more tokens (speculative and parallel decoders emit several per step), writing
    them to the request and its timeline. A decoder owns its per-request state (a draft cache,
    a tree) keyed by request id; ``release(req)`` is called when a request finishes or is
    preempted, so that state can go. ``lookahead`` is how many more tokens than one per
    decoding request the decoder writes into the cache within a step (drafts under
    verification; 0 for plain decoding): the engine's KV memory check reserves them.
    """

    @property
    def lookahead(self) -> int: ...

    def prepare(self, ctx: EngineOps) -> None: ...

    def step(self, ctx: EngineOps, batch: StepBatch) -> None: ...

    def release(self, req: Request) -> None: ...

    def stats(self) -> dict[str, Any]: ...
