"""Reference attention backends: exact dense causal attention and StreamingLLM's sink + window.

Both implement ``effbench.kernels_ref.protocols.AttentionBackend`` with PyTorch's
``scaled_dot_product_attention`` (so they run on any device and pick the fastest fused kernel
the device offers), plus closed-form ``flops``/``bytes`` for the roofline model.

Position rule shared by every call (prefill, chunked prefill, multi-token verification):
with ``q`` of ``q_len`` queries over ``kv_len`` keys, query ``i`` sits at absolute position
``p = kv_len - q_len + i`` and may only see keys ``j <= p``. Layouts are
``q: (..., heads, q_len, head_dim)``, ``k/v: (..., kv_heads, kv_len, head_dim)`` with ``heads``
a multiple of ``kv_heads`` (grouped-query attention; query head ``h`` reads KV head
``h // (heads // kv_heads)``, SDPA's ``enable_gqa`` convention).

``reference_attention`` is a float64, explicit-softmax oracle for tests.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from effbench.kernels_ref.protocols import AttentionShape

_MASK_CACHE_SIZE = 32


def causal_mask(q_len: int, kv_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(q_len, kv_len)`` mask: query i, at ``p = kv_len - q_len + i``, sees ``j <= p``."""
    _check_lengths(q_len, kv_len)
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
    _check_lengths(q_len, kv_len)
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
    _check_lengths(q_len, kv_len)
    offset = kv_len - q_len
    return q_len * offset + q_len * (q_len + 1) // 2


def window_pairs(q_len: int, kv_len: int, window: int, sinks: int) -> int:
    """Attended (query, key) pairs of one head under the sink + window rule, closed form.

    The query at position ``p`` sees ``min(p + 1, window + sinks)`` keys (window keys
    ``max(0, p - window + 1)..p`` plus the sinks below that window). With ``c = window + sinks``
    and ``S(n) = sum_{m=1..n} min(m, c)`` (``n(n+1)/2`` if ``n <= c``, else
    ``c(c+1)/2 + (n - c) c``), the total over ``p = o..kv_len-1`` is ``S(kv_len) - S(o)``.
    """
    _check_lengths(q_len, kv_len)
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
    _check_lengths(q_len, kv_len)
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


class _MaskCache:
    """A small LRU of boolean masks keyed by ``(q_len, kv_len, device)``.

    Chunked prefill and verification repeat the same few shapes; the LRU bound keeps memory flat
    when shapes keep changing (each prefill chunk has a new ``kv_len``).
    """

    def __init__(
        self,
        build: Callable[[int, int, torch.device], torch.Tensor],
        size: int = _MASK_CACHE_SIZE,
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


def _check_lengths(q_len: int, kv_len: int) -> None:
    if q_len < 1 or q_len > kv_len:
        raise ValueError(f"need 1 <= q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
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
    _check_lengths(q_len, kv_len)
    return q_len, kv_len


def padded_decode(
    q: torch.Tensor, ks: Sequence[torch.Tensor], vs: Sequence[torch.Tensor]
) -> torch.Tensor:
    """One-query attention for many sequences of different lengths in one SDPA call.

    ``q`` is ``(batch, heads, 1, head_dim)``; ``ks[i]``/``vs[i]`` are ``(kv_heads, T_i,
    head_dim)``. Keys are zero-padded to the longest sequence and masked, so the packed call
    gives each sequence exactly its own softmax; equal lengths need no mask at all.
    """
    lengths = [k.shape[-2] for k in ks]
    longest = max(lengths)
    if min(lengths) == longest:
        return grouped_decode(q, torch.stack(list(ks)), torch.stack(list(vs)))
    b, (h, _, d) = len(ks), ks[0].shape
    kp = q.new_zeros(b, h, longest, d)
    vp = q.new_zeros(b, h, longest, d)
    for i, (k, v) in enumerate(zip(ks, vs)):
        kp[i, :, : lengths[i]] = k
        vp[i, :, : lengths[i]] = v
    idx = torch.arange(longest, device=q.device)
    mask = idx[None, :] < torch.tensor(lengths, device=q.device)[:, None]
    return grouped_decode(q, kp, vp, mask[:, None, None, :])


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


class DenseAttention:
    """Exact causal attention with the offset rule (the baseline every technique is scored against).

    Dispatch: ``q_len == kv_len`` uses SDPA's ``is_causal`` (plain prefill); ``q_len == 1`` needs
    no mask (the last position sees every key); otherwise an offset causal mask, cached by shape.
    """

    def __init__(self) -> None:
        self._masks = _MaskCache(causal_mask)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q_len, kv_len = _check_qkv(q, k, v)
        if q_len == kv_len:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if q_len == 1:
            return grouped_decode(q, k, v)
        mask = self._masks.get(q_len, kv_len, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query at the last position: unmasked attention over all keys."""
        q_len, _ = _check_qkv(q, k, v)
        if q_len != 1:
            raise ValueError(f"decode takes one query, got q_len={q_len}; use forward")
        return grouped_decode(q, k, v)

    def decode_batch(
        self, q: torch.Tensor, ks: Sequence[torch.Tensor], vs: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Decode for a batch of sequences of different lengths (see ``padded_decode``)."""
        return padded_decode(q, ks, vs)

    def decode_padded(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: Sequence[int]
    ) -> torch.Tensor:
        """Decode over already padded ``(batch, kv_heads, longest, head_dim)`` keys/values."""
        return grouped_decode(q, k, v, length_mask(lengths, k.shape[-2], q.device))

    def flops(self, shape: AttentionShape) -> float:
        """``4 * batch * heads * head_dim * causal_pairs(q_len, kv_len)`` (see ``causal_pairs``)."""
        return attention_flops(shape, causal_pairs(shape.q_len, shape.kv_len))

    def bytes(self, shape: AttentionShape) -> float:
        """q, o once per query head and all ``kv_len`` keys/values once (``attention_bytes``)."""
        return attention_bytes(shape, shape.kv_len)


class SlidingWindowAttention:
    """StreamingLLM attention (Xiao et al. 2023, arXiv 2309.17453): sink tokens + recent window.

    The query at position ``p`` sees keys ``0..sinks-1`` and ``p-window+1..p`` (causal). While
    ``kv_len <= sinks + window`` this is exactly dense causal attention, and the dense path is
    used. ``decode`` gathers only the ``sinks + window`` attended keys, so its cost is
    O(sinks + window) however long the cache grows. The cache itself is not evicted here: this
    backend sparsifies attention over whatever cache it is handed.
    """

    def __init__(self, window: int, sinks: int = 4) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (a query must see itself), got {window}")
        if sinks < 0:
            raise ValueError(f"sinks must be >= 0, got {sinks}")
        self.window = window
        self.sinks = sinks
        self._dense = DenseAttention()
        self._masks = _MaskCache(self._build_mask)

    def _build_mask(self, q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
        return window_mask(q_len, kv_len, self.window, self.sinks, device)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q_len, kv_len = _check_qkv(q, k, v)
        if kv_len <= self.sinks + self.window:
            return self._dense.forward(q, k, v)
        if q_len == 1:
            return self.decode(q, k, v)
        mask = self._masks.get(q_len, kv_len, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attend to the gathered sinks and last ``window`` keys only, without a mask."""
        q_len, kv_len = _check_qkv(q, k, v)
        if q_len != 1:
            raise ValueError(f"decode takes one query, got q_len={q_len}; use forward")
        if kv_len > self.sinks + self.window:
            start = kv_len - self.window
            k = torch.cat((k[..., : self.sinks, :], k[..., start:, :]), dim=-2)
            v = torch.cat((v[..., : self.sinks, :], v[..., start:, :]), dim=-2)
        return grouped_decode(q, k, v)

    def decode_batch(
        self, q: torch.Tensor, ks: Sequence[torch.Tensor], vs: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Batched decode over each sequence's sinks and window only."""
        keep = self.sinks + self.window
        ks = [k if k.shape[-2] <= keep else torch.cat(
            (k[..., : self.sinks, :], k[..., k.shape[-2] - self.window :, :]), dim=-2)
            for k in ks]
        vs = [v if v.shape[-2] <= keep else torch.cat(
            (v[..., : self.sinks, :], v[..., v.shape[-2] - self.window :, :]), dim=-2)
            for v in vs]
        return padded_decode(q, ks, vs)

    def flops(self, shape: AttentionShape) -> float:
        """``4 * batch * heads * head_dim * window_pairs(...)`` (see ``window_pairs``)."""
        pairs = window_pairs(shape.q_len, shape.kv_len, self.window, self.sinks)
        return attention_flops(shape, pairs)

    def bytes(self, shape: AttentionShape) -> float:
        """q, o once per query head; k, v only for keys some query attends (ideal block skipping).

        Uses ``window_keys_touched``: for decode that is ``min(kv_len, sinks + window)``, which the
        gathering decode path really reads; for a forward it is the union of the queries' spans.
        """
        keys = window_keys_touched(shape.q_len, shape.kv_len, self.window, self.sinks)
        return attention_bytes(shape, keys)
