"""Reference attention backends against a float64 oracle, and their analytic cost model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from effbench.kernels_ref.attention import (
    DenseAttention,
    SlidingWindowAttention,
    causal_mask,
    causal_pairs,
    reference_attention,
    window_keys_touched,
    window_mask,
    window_pairs,
)
from effbench.kernels_ref.protocols import AttentionBackend, AttentionShape

HEAD_DIM = 16


def qkv(q_len, kv_len, heads=4, kv_heads=2, batch=(), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, heads, q_len, HEAD_DIM, generator=g)
    k = torch.randn(*batch, kv_heads, kv_len, HEAD_DIM, generator=g)
    v = torch.randn(*batch, kv_heads, kv_len, HEAD_DIM, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def assert_close_ref(out, q, k, v, mask, atol=1e-5):
    ref = reference_attention(q, k, v, mask)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=atol)


def test_backends_satisfy_protocol():
    assert isinstance(DenseAttention(), AttentionBackend)
    assert isinstance(SlidingWindowAttention(window=4, sinks=2), AttentionBackend)


@pytest.mark.parametrize("q_len,kv_len", [(9, 9), (1, 9), (4, 11), (1, 1)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (2, 2), (6, 1)])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_dense_matches_reference(q_len, kv_len, heads, kv_heads, batch):
    q, k, v = qkv(q_len, kv_len, heads, kv_heads, batch)
    attn = DenseAttention()
    out = attn.forward(q, k, v)
    assert_close_ref(out, q, k, v, causal_mask(q_len, kv_len))
    if q_len == 1:
        torch.testing.assert_close(attn.decode(q, k, v), out)


def test_dense_offset_mask_is_reused_and_bounded():
    attn = DenseAttention()
    q, k, v = qkv(3, 8)
    attn.forward(q, k, v)
    first = attn._masks.get(3, 8, q.device)
    attn.forward(q, k, v)
    assert attn._masks.get(3, 8, q.device) is first
    for kv_len in range(4, 80):
        attn._masks.get(3, kv_len, q.device)
    assert len(attn._masks._masks) <= 32


def test_dense_bfloat16_close_to_reference():
    q, k, v = qkv(5, 13, dtype=torch.bfloat16)
    out = DenseAttention().forward(q, k, v)
    assert out.dtype == torch.bfloat16
    assert_close_ref(out, q, k, v, causal_mask(5, 13), atol=3e-2)


@pytest.mark.parametrize("window,sinks", [(3, 2), (4, 0), (1, 1)])
@pytest.mark.parametrize("q_len", [16, 1, 5])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_window_matches_reference(window, sinks, q_len, batch):
    kv_len = 16
    q, k, v = qkv(q_len, kv_len, batch=batch, seed=q_len)
    attn = SlidingWindowAttention(window=window, sinks=sinks)
    out = attn.forward(q, k, v)
    assert_close_ref(out, q, k, v, window_mask(q_len, kv_len, window, sinks))


@pytest.mark.parametrize("q_len,kv_len", [(6, 6), (1, 6), (3, 6), (2, 4)])
def test_window_equals_dense_when_everything_fits(q_len, kv_len):
    q, k, v = qkv(q_len, kv_len, batch=(2,))
    window = SlidingWindowAttention(window=4, sinks=2)
    assert torch.equal(window.forward(q, k, v), DenseAttention().forward(q, k, v))
    assert torch.equal(window_mask(q_len, kv_len, 4, 2), causal_mask(q_len, kv_len))
    if q_len == 1:
        assert torch.equal(window.decode(q, k, v), DenseAttention().decode(q, k, v))


@pytest.mark.parametrize("kv_len", [7, 8, 30])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_window_decode_fast_path_matches_masked_forward(kv_len, batch):
    q, k, v = qkv(1, kv_len, batch=batch, seed=kv_len)
    attn = SlidingWindowAttention(window=5, sinks=2)
    mask = window_mask(1, kv_len, 5, 2)
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    fast = attn.decode(q, k, v)
    torch.testing.assert_close(fast, masked, atol=1e-6, rtol=1e-5)
    assert_close_ref(fast, q, k, v, mask)


def test_decode_rejects_several_queries_and_bad_shapes():
    q, k, v = qkv(2, 5)
    for attn in (DenseAttention(), SlidingWindowAttention(window=2, sinks=1)):
        with pytest.raises(ValueError):
            attn.decode(q, k, v)
        with pytest.raises(ValueError):
            attn.forward(q, k[..., :1, :], v[..., :1, :])
    with pytest.raises(ValueError):
        SlidingWindowAttention(window=0, sinks=1)
    with pytest.raises(ValueError):
        SlidingWindowAttention(window=2, sinks=-1)


def test_closed_form_counts_match_masks():
    for kv_len in range(1, 13):
        for q_len in range(1, kv_len + 1):
            dense = causal_mask(q_len, kv_len)
            assert causal_pairs(q_len, kv_len) == int(dense.sum())
            for window in range(1, 6):
                for sinks in range(0, 4):
                    mask = window_mask(q_len, kv_len, window, sinks)
                    assert window_pairs(q_len, kv_len, window, sinks) == int(mask.sum())
                    touched = int(mask.any(dim=0).sum())
                    assert window_keys_touched(q_len, kv_len, window, sinks) == touched


@pytest.mark.parametrize("q_len,kv_len", [(1, 40), (8, 40), (40, 40)])
def test_flops_and_bytes_formulas(q_len, kv_len):
    shape = AttentionShape(
        batch=3, heads=8, kv_heads=2, q_len=q_len, kv_len=kv_len, head_dim=64, dtype_bytes=2
    )
    per_pair = 4 * 3 * 8 * 64
    qo_bytes = 2 * 3 * 8 * q_len * 64 * 2
    dense, window = DenseAttention(), SlidingWindowAttention(window=6, sinks=3)

    assert dense.flops(shape) == per_pair * int(causal_mask(q_len, kv_len).sum())
    assert dense.bytes(shape) == qo_bytes + 2 * 3 * 2 * kv_len * 64 * 2

    mask = window_mask(q_len, kv_len, 6, 3)
    assert window.flops(shape) == per_pair * int(mask.sum())
    keys = int(mask.any(dim=0).sum())
    assert window.bytes(shape) == qo_bytes + 2 * 3 * 2 * keys * 64 * 2
    if q_len == 1:
        assert keys == 9  # decode reads only sinks + window keys
    assert window.flops(shape) <= dense.flops(shape)
