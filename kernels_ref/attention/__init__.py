"""Attention reference kernels, one technique per module; shared pieces in ``_common``.

The names most callers need are re-exported here.
"""

from effbench.kernels_ref.attention._common import (
    AttentionBase,
    attention_bytes,
    attention_flops,
    causal_mask,
    causal_pairs,
    grouped_decode,
    length_mask,
    predicate_mask,
    reference_attention,
    window_keys_touched,
    window_mask,
    window_pairs,
)
from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.kernels_ref.attention.streaming_llm import SlidingWindowAttention

__all__ = [
    "AttentionBase",
    "DenseAttention",
    "SlidingWindowAttention",
    "attention_bytes",
    "attention_flops",
    "causal_mask",
    "causal_pairs",
    "grouped_decode",
    "length_mask",
    "predicate_mask",
    "reference_attention",
    "window_keys_touched",
    "window_mask",
    "window_pairs",
]
