"""What attention techniques share: masks, closed-form work counts, the GQA decode kernel,
and ``AttentionBase``, which gives every backend the protocol's batched decode path.

Position rule shared by every call (prefill, chunked prefill, multi-token verification):
with ``q`` of ``q_len`` queries over ``kv_len`` keys, query ``i`` sits at absolute position
``p = kv_len - q_len + i`` and may only see keys ``j <= p``. Layouts are
``q: (..., heads, q_len, head_dim)``, ``k/v: (..., kv_heads, kv_len, head_dim)`` with ``heads``
a multiple of ``kv_heads`` (grouped-query attention; query head ``h`` reads KV head
``h // (heads // kv_heads)``, SDPA's ``enable_gqa`` convention).

Masks are small predicates kept apart from the kernels, as attention-gym does: ``causal_mask``,
``window_mask`` and ``predicate_mask`` (any ``MaskPredicate`` over absolute positions).
``reference_attention`` is a float64, explicit-softmax oracle for tests.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from effbench.kernels_ref.protocols import AttentionMeta, AttentionShape, MaskPredicate

MASK_CACHE_SIZE = 32


def causal_mask(q_len: int, kv_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(q_len, kv_len)`` mask: query i, at ``p = kv_len - q_len + i``, sees ``j <= p``."""
    check_lengths(q_len, kv_len)
    pos = torch.arange(q_len, device=device).unsqueeze(1) + (kv_len - q_len)
    keys = torch.arange(kv_len, device=device).unsqueeze(0)
    return keys <= pos


def window_mask(
    q_len: int,
    kv_len: int,
    window: int,
    sinks: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean StreamingLLM mask: causal, and key j is a sink (``j < sinks``) or recent.

    Recent means ``p - window < j <= p`` for the query at absolute position ``p``, i.e. the last
    ``window`` positions including the query itself.
    """
    check_lengths(q_len, kv_len)
    pos = torch.arange(q_len, device=device).unsqueeze(1) + (kv_len - q_len)
    keys = torch.arange(kv_len, device=device).unsqueeze(0)
    return (keys <= pos) & ((keys < sinks) | (keys > pos - window))


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked attention in float64 with an explicit, max-subtracted softmax (a test oracle).

    ``allowed_mask`` is boolean and broadcasts to ``(..., heads, q_len, kv_len)``; every query
    must be allowed at least one key. ``None`` means the causal-offset mask (dense attention).
    Returns float64 ``(..., heads, q_len, head_dim)``.
    """
    if allowed_mask is None:
        allowed_mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[-3] // k.shape[-3]
    k = k.repeat_interleave(group, dim=-3)
    v = v.repeat_interleave(group, dim=-3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed_mask.to(scores.device), float("-inf"))
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v


def causal_pairs(q_len: int, kv_len: int) -> int:
    """Attended (query, key) pairs of one head under the causal-offset rule, closed form.

    Query i sees ``o + i + 1`` keys with ``o = kv_len - q_len``, so the total is
    ``q_len * o + q_len * (q_len + 1) / 2``.
    """
    check_lengths(q_len, kv_len)
    offset = kv_len - q_len
    return q_len * offset + q_len * (q_len + 1) // 2


def window_pairs(q_len: int, kv_len: int, window: int, sinks: int) -> int:
    """Attended (query, key) pairs of one head under the sink + window rule, closed form.

    The query at position ``p`` sees ``min(p + 1, window + sinks)`` keys (window keys
    ``max(0, p - window + 1)..p`` plus the sinks below that window). With ``c = window + sinks``
    and ``S(n) = sum_{m=1..n} min(m, c)`` (``n(n+1)/2`` if ``n <= c``, else
    ``c(c+1)/2 + (n - c) c``), the total over ``p = o..kv_len-1`` is ``S(kv_len) - S(o)``.
    """
    check_lengths(q_len, kv_len)
    cap = window + sinks

    def prefix(n: int) -> int:
        if n <= cap:
            return n * (n + 1) // 2
        return cap * (cap + 1) // 2 + (n - cap) * cap

    return prefix(kv_len) - prefix(kv_len - q_len)


def window_keys_touched(q_len: int, kv_len: int, window: int, sinks: int) -> int:
    """Keys attended by at least one query under the sink + window rule, closed form.

    The windows of queries ``o..kv_len-1`` cover ``[max(0, o - window + 1), kv_len)``; only the
    keys in ``[sinks, o - window + 1)`` are skipped, so the count is
    ``kv_len - max(0, o - window + 1 - sinks)`` (``min(kv_len, sinks + window)`` for decode).
    """
    check_lengths(q_len, kv_len)
    offset = kv_len - q_len
    return kv_len - max(0, offset - window + 1 - sinks)


def attention_bytes(shape: AttentionShape, keys_read: int) -> float:
    """Bytes moved by one call that reads q, ``keys_read`` keys and values, and writes o once.

    ``dtype_bytes * batch * head_dim * (2 * heads * q_len + 2 * kv_heads * keys_read)``: q and o
    are per query head, k and v per KV head (GQA shares them across a group).
    """
    per_query = 2 * shape.heads * shape.q_len
    per_kv = 2 * shape.kv_heads * keys_read
    return float(shape.dtype_bytes * shape.batch * shape.head_dim * (per_query + per_kv))


def attention_flops(shape: AttentionShape, pairs: int) -> float:
    """FLOPs of QK^T and PV over ``pairs`` attended pairs: ``4 * batch * heads * head_dim * pairs``.

    Each attended pair costs one ``head_dim`` dot product in QK^T and one ``head_dim`` axpy in PV,
    2 FLOPs per multiply-accumulate; softmax is ignored (it is O(pairs), not O(pairs * d)).
    """
    return float(4 * shape.batch * shape.heads * shape.head_dim * pairs)


class MaskCache:
    """A small LRU of boolean masks keyed by ``(q_len, kv_len, device)``.

    Chunked prefill and verification repeat the same few shapes; the LRU bound keeps memory flat
    when shapes keep changing (each prefill chunk has a new ``kv_len``).
    """

    def __init__(
        self,
        build: Callable[[int, int, torch.device], torch.Tensor],
        size: int = MASK_CACHE_SIZE,
    ) -> None:
        self._build = build
        self._size = size
        self._masks: OrderedDict[tuple[int, int, str], torch.Tensor] = OrderedDict()

    def get(self, q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
        key = (q_len, kv_len, str(device))
        mask = self._masks.get(key)
        if mask is None:
            mask = self._build(q_len, kv_len, device)
            self._masks[key] = mask
            if len(self._masks) > self._size:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask


def check_lengths(q_len: int, kv_len: int) -> None:
    if q_len < 1 or q_len > kv_len:
        raise ValueError(f"need 1 <= q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
    """Validate layouts and return ``(q_len, kv_len)``."""
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if q.dim() < 3 or q.dim() != k.dim():
        raise ValueError(
            f"expected (..., heads, tokens, head_dim), got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or q.shape[-3] % k.shape[-3]:
        raise ValueError(f"incompatible q {tuple(q.shape)} and k {tuple(k.shape)}")
    q_len, kv_len = q.shape[-2], k.shape[-2]
    check_lengths(q_len, kv_len)
    return q_len, kv_len


def length_mask(
    lengths: Sequence[int], longest: int, device: torch.device
) -> torch.Tensor | None:
    """``(batch, 1, 1, longest)`` mask of each sequence's real keys; None if all are full."""
    if min(lengths) == longest:
        return None
    idx = torch.arange(longest, device=device)
    return (idx[None, :] < torch.tensor(list(lengths), device=device)[:, None])[:, None, None]


def grouped_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One-query GQA attention with the query heads folded onto their KV head.

    ``q`` ``(..., heads, 1, head_dim)`` becomes ``(..., kv_heads, group, head_dim)``: with a
    single query position there is no causal structure, so the ``group`` query heads sharing a
    KV head are just rows of one attention over that head's keys. This avoids expanding K and V
    per query head (SDPA's GQA path on CPU is several times slower). ``mask`` broadcasts as
    ``(..., 1, 1, kv_len)``.
    """
    *lead, heads, _, d = q.shape
    kv_heads = k.shape[-3]
    qg = q.reshape(*lead, kv_heads, heads // kv_heads, d)
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
    return out.reshape(*lead, heads, 1, d)




def predicate_mask(
    predicate: MaskPredicate, q_start: int, q_len: int, kv_len: int, causal: bool,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean ``(q_len, kv_len)`` mask of a predicate over absolute positions (head 0, batch 0
    broadcast), and-ed with causality when ``causal``; refuses a row that attends to nothing.

    Key j sits at absolute position j (caches that evict must pass their own positions through
    the predicate instead). A query row with no allowed key would make softmax undefined, so it
    raises ``ValueError`` naming the first such row.
    """
    qpos = torch.arange(q_start, q_start + q_len, device=device)[:, None]
    kpos = torch.arange(kv_len, device=device)[None, :]
    zero = torch.zeros((), dtype=torch.long, device=device)
    allowed = predicate(zero, zero, qpos, kpos).to(torch.bool).expand(q_len, kv_len)
    if causal:
        allowed = allowed & (kpos <= qpos)
    empty = (~allowed.any(dim=-1)).nonzero()
    if empty.numel():
        row = int(empty[0, 0])
        raise ValueError(
            f"mask leaves query row {row} (absolute position {q_start + row}) with no key to "
            "attend to"
        )
    return allowed


class AttentionBase:
    """Shared behaviour of the reference backends (subclasses give ``forward``/``decode``).

    ``decode_padded`` is the protocol's batched decode path: by default each sequence's real
    keys are sliced out of the padded tensor (views, no copies) and ``decode`` runs per
    sequence; backends with a one-call batched kernel override it. ``meta_mask`` turns a
    call's metadata into an explicit mask when it needs one (a predicate, or bidirectional).
    """

    graph_params: tuple | None = None
    """Capability of the compiled decode step (effbench.kernels_ref.compiled): None when the
    backend cannot run inside its graph; else the values its :meth:`graph_mask` depends on
    (part of the graph's compile key)."""

    def graph_mask(self, keys: torch.Tensor, pos: torch.Tensor) -> torch.Tensor | None:
        """Which keys each query may see besides causality, as tensor code the compiled step
        traces: ``keys`` ``(kv_len,)`` key positions, ``pos`` ``(B, T)`` query positions, a
        result broadcastable to ``(B, T, kv_len)``; None: every earlier key (dense).
        """
        return None

    def decode_padded(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: Sequence[int],
        meta: AttentionMeta | None = None,
    ) -> torch.Tensor:
        outs = [
            self.decode(q[i : i + 1], k[i : i + 1, :, :n], v[i : i + 1, :, :n], meta)
            for i, n in enumerate(lengths)
        ]
        return torch.cat(outs, dim=0)

    @staticmethod
    def meta_mask(meta: AttentionMeta | None, q_len: int, kv_len: int,
                  device: torch.device) -> torch.Tensor | None:
        """An explicit ``(q_len, kv_len)`` mask if the call's metadata asks for more than the
        offset-causal rule (a predicate, or bidirectional attention); None otherwise.
        """
        if meta is None or (meta.mask is None and meta.causal):
            return None
        if meta.mask is None:
            return torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
        return predicate_mask(meta.mask, kv_len - q_len, q_len, kv_len, meta.causal, device)
