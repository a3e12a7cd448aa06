"""StreamingLLM attention (Xiao et al. 2023, arXiv 2309.17453): attention sinks + recent window."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from effbench.kernels_ref.attention._common import (
    AttentionBase,
    MaskCache,
    attention_bytes,
    attention_flops,
    check_qkv,
    grouped_decode,
    length_mask,
    window_keys_touched,
    window_mask,
    window_pairs,
)
from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.kernels_ref.protocols import AttentionMeta, AttentionShape


class SlidingWindowAttention(AttentionBase):
    """Sink tokens + a recent window: the query at ``p`` sees keys ``0..sinks-1`` and
    ``p-window+1..p`` (causal).

    While ``kv_len <= sinks + window`` this is exactly dense causal attention, and the dense path
    is used. ``decode`` gathers only the ``sinks + window`` attended keys, so its cost is
    O(sinks + window) however long the cache grows; ``decode_padded`` does the same for a whole
    batch with one gather over the padded keys. The cache itself is not evicted here: this
    backend sparsifies attention over whatever cache it is handed.
    """

    def __init__(self, window: int = 64, sinks: int = 4) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (a query must see itself), got {window}")
        if sinks < 0:
            raise ValueError(f"sinks must be >= 0, got {sinks}")
        self.window = window
        self.sinks = sinks
        self.graph_params = (window, sinks)
        self._dense = DenseAttention()
        self._masks = MaskCache(self._build_mask)

    def graph_mask(self, keys: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Sinks and the last ``window`` positions, as a mask: in the compiled step the
        window is masked over the whole key bucket rather than gathered.
        """
        keys = keys[None, None, :]
        return (keys < self.sinks) | (keys > pos[:, :, None] - self.window)

    def _build_mask(self, q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
        return window_mask(q_len, kv_len, self.window, self.sinks, device)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                meta: AttentionMeta | None = None) -> torch.Tensor:
        q_len, kv_len = check_qkv(q, k, v)
        explicit = self.meta_mask(meta, q_len, kv_len, q.device)
        if explicit is not None:
            mask = explicit & self._masks.get(q_len, kv_len, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        if kv_len <= self.sinks + self.window:
            return self._dense.forward(q, k, v)
        if q_len == 1:
            return self.decode(q, k, v)
        mask = self._masks.get(q_len, kv_len, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               meta: AttentionMeta | None = None) -> torch.Tensor:
        """Attend to the gathered sinks and last ``window`` keys only, without a mask (with a
        mask predicate in ``meta``: over every key, the predicate and the window both applied).
        """
        q_len, kv_len = check_qkv(q, k, v)
        if q_len != 1:
            raise ValueError(f"decode takes one query, got q_len={q_len}; use forward")
        explicit = self.meta_mask(meta, 1, kv_len, q.device)
        if explicit is not None:
            mask = explicit & self._masks.get(1, kv_len, q.device)
            return grouped_decode(q, k, v, mask[None, None])
        if kv_len > self.sinks + self.window:
            start = kv_len - self.window
            k = torch.cat((k[..., : self.sinks, :], k[..., start:, :]), dim=-2)
            v = torch.cat((v[..., : self.sinks, :], v[..., start:, :]), dim=-2)
        return grouped_decode(q, k, v)

    def decode_padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      lengths: Sequence[int], meta: AttentionMeta | None = None
                      ) -> torch.Tensor:
        """Batched decode over each sequence's sinks and window only: one gather of
        ``sinks + window`` keys per sequence from the padded tensor, then one GQA call.
        """
        if meta is not None and meta.mask is not None:
            return AttentionBase.decode_padded(self, q, k, v, lengths, meta)
        keep = self.sinks + self.window
        longest = k.shape[-2]
        if longest <= keep:
            return grouped_decode(q, k, v, length_mask(lengths, longest, q.device))
        n = torch.tensor(list(lengths), device=q.device)[:, None]
        j = torch.arange(keep, device=q.device)[None, :]
        # sinks first, then the last `window` keys; a sequence shorter than `keep` takes its
        # first n keys and masks the rest.
        long_idx = torch.where(j < self.sinks, j, n - keep + j)
        idx = torch.where(n > keep, long_idx, j.clamp(max=longest - 1))
        b, h, _, d = k.shape
        gather = idx[:, None, :, None].expand(b, h, keep, d)
        kg, vg = k.gather(2, gather), v.gather(2, gather)
        valid = (j < n) if min(lengths) < keep else None
        return grouped_decode(q, kg, vg, None if valid is None else valid[:, None, None, :])

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
