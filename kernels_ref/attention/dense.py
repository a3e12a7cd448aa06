"""Dense causal attention: the attention family's exact baseline (torch SDPA underneath)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from effbench.kernels_ref.attention._common import (
    AttentionBase,
    MaskCache,
    attention_bytes,
    attention_flops,
    causal_mask,
    causal_pairs,
    check_qkv,
    grouped_decode,
    length_mask,
)
from effbench.kernels_ref.protocols import AttentionMeta, AttentionShape


class DenseAttention(AttentionBase):
    """Exact attention with the offset rule (the baseline every technique is scored against).

    Dispatch: ``q_len == kv_len`` uses SDPA's ``is_causal`` (plain prefill); ``q_len == 1`` needs
    no mask (the last position sees every key); otherwise an offset causal mask, cached by shape.
    Metadata with a mask predicate or bidirectional attention gets an explicit mask.
    """

    graph_params = ()  # runs in the compiled decode step, plain causal

    def __init__(self) -> None:
        self._masks = MaskCache(causal_mask)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                meta: AttentionMeta | None = None) -> torch.Tensor:
        q_len, kv_len = check_qkv(q, k, v)
        explicit = self.meta_mask(meta, q_len, kv_len, q.device)
        if explicit is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=explicit, enable_gqa=True)
        if q_len == kv_len:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if q_len == 1:
            return grouped_decode(q, k, v)
        mask = self._masks.get(q_len, kv_len, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               meta: AttentionMeta | None = None) -> torch.Tensor:
        """One query at the last position: unmasked attention over all keys."""
        q_len, kv_len = check_qkv(q, k, v)
        if q_len != 1:
            raise ValueError(f"decode takes one query, got q_len={q_len}; use forward")
        explicit = self.meta_mask(meta, 1, kv_len, q.device)
        if explicit is not None:  # (1, kv_len), broadcast over the folded heads and any batch
            explicit = explicit.reshape(*([1] * (q.dim() - 2)), kv_len)
        return grouped_decode(q, k, v, explicit)

    def decode_padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      lengths: Sequence[int], meta: AttentionMeta | None = None
                      ) -> torch.Tensor:
        """One GQA call over the padded ``(batch, kv_heads, longest, head_dim)`` keys/values,
        each sequence masked to its own length. A mask predicate in ``meta`` is applied per
        sequence (the shared default path).
        """
        if meta is not None and meta.mask is not None:
            return AttentionBase.decode_padded(self, q, k, v, lengths, meta)
        return grouped_decode(q, k, v, length_mask(lengths, k.shape[-2], q.device))

    def flops(self, shape: AttentionShape) -> float:
        """``4 * batch * heads * head_dim * causal_pairs(q_len, kv_len)`` (see ``causal_pairs``)."""
        return attention_flops(shape, causal_pairs(shape.q_len, shape.kv_len))

    def bytes(self, shape: AttentionShape) -> float:
        """q, o once per query head and all ``kv_len`` keys/values once (``attention_bytes``)."""
        return attention_bytes(shape, shape.kv_len)
