"""Full-precision and KIVI caches: contents, rollback, measured bytes, quantization helpers."""

from __future__ import annotations

import math

import pytest
import torch

from effbench.kernels_ref.kvcache import (
    FullKVCache,
    FullKVCacheFactory,
    KIVICache,
    KIVICacheFactory,
    dequantize,
    pack_bits,
    quantize_asym,
    unpack_bits,
)
from effbench.kernels_ref.protocols import CacheLayout, KVCache, KVCacheFactory

KV_HEADS, HEAD_DIM, LAYERS = 2, 32, 2


def layout(dtype=torch.float32, layers=LAYERS, head_dim=HEAD_DIM):
    return CacheLayout(
        num_layers=layers,
        kv_heads=KV_HEADS,
        head_dim=head_dim,
        dtype=dtype,
        device=torch.device("cpu"),
    )


def tokens(n, seed=0, head_dim=HEAD_DIM):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(KV_HEADS, n, head_dim, generator=g), torch.randn(
        KV_HEADS, n, head_dim, generator=g
    )


def fill(cache, k, v, chunks=(5, 1, 1, 17, 3)):
    """Append k/v to every layer in chunks of varying size (prefill, decode, verification)."""
    i, c = 0, 0
    while i < k.shape[1]:
        n = chunks[c % len(chunks)]
        for layer in range(cache.layout.num_layers):
            cache.append(layer, k[:, i : i + n], v[:, i : i + n])
        i, c = i + n, c + 1


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------------- protocols


def test_caches_and_factories_satisfy_protocols():
    assert isinstance(FullKVCacheFactory(), KVCacheFactory)
    assert isinstance(KIVICacheFactory(2, 32, 32), KVCacheFactory)
    assert isinstance(FullKVCacheFactory().new_cache(layout()), KVCache)
    assert isinstance(KIVICacheFactory(4, 32, 32).new_cache(layout()), KVCache)


@pytest.mark.parametrize("factory", [FullKVCacheFactory(), KIVICacheFactory(2, 4, 4)])
def test_shape_and_layer_validation(factory):
    cache = factory.new_cache(layout())
    k, v = tokens(3)
    with pytest.raises(ValueError):
        cache.append(0, k, v[:, :2])
    with pytest.raises(ValueError):
        cache.append(0, k[:1], v[:1])
    with pytest.raises(IndexError):
        cache.append(LAYERS, k, v)
    with pytest.raises(ValueError):
        cache.truncate(-1)


# ----------------------------------------------------------------------------- full cache


def test_full_cache_append_read_nbytes():
    cache = FullKVCache(layout())
    k, v = tokens(100)
    fill(cache, k, v)
    for layer in range(LAYERS):
        rk, rv = cache.read(layer)
        assert torch.equal(rk, k) and torch.equal(rv, v)
        assert cache.length(layer) == 100
    assert cache.nbytes() == 2 * LAYERS * KV_HEADS * 100 * HEAD_DIM * 4
    assert cache.allocated_nbytes() >= cache.nbytes()


def test_full_cache_growth_keeps_contents_and_doubles():
    cache = FullKVCache(layout(layers=1))
    k, v = tokens(200)
    capacities = []
    for i in range(200):
        cache.append(0, k[:, i : i + 1], v[:, i : i + 1])
        capacities.append(cache._k[0].data.shape[1])
        assert torch.equal(cache.read(0)[0], k[:, : i + 1])
    assert sorted(set(capacities)) == [16, 32, 64, 128, 256]
    assert torch.equal(cache.read(0)[1], v)


def test_full_cache_truncate_then_append():
    cache = FullKVCache(layout())
    k, v = tokens(40)
    fill(cache, k[:, :30], v[:, :30])
    cache.truncate(12)
    assert cache.length(0) == cache.length(1) == 12
    assert cache.nbytes() == 2 * LAYERS * KV_HEADS * 12 * HEAD_DIM * 4
    for layer in range(LAYERS):
        cache.append(layer, k[:, 30:], v[:, 30:])
        rk, rv = cache.read(layer)
        assert torch.equal(rk, torch.cat((k[:, :12], k[:, 30:]), dim=1))
        assert torch.equal(rv, torch.cat((v[:, :12], v[:, 30:]), dim=1))
    cache.truncate(100)  # longer than the cache: nothing to drop
    assert cache.length() == 22


def test_full_cache_factory_dtype():
    cache = FullKVCacheFactory(torch.float16).new_cache(layout())
    k, v = tokens(5)
    cache.append(0, k, v)
    rk, rv = cache.read(0)
    assert rk.dtype == torch.float32  # read at the model dtype, stored at float16
    assert torch.equal(rk, k.half().float()) and torch.equal(rv, v.half().float())
    assert cache.nbytes() == 2 * KV_HEADS * 5 * HEAD_DIM * 2
    assert FullKVCacheFactory().new_cache(layout(torch.bfloat16)).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 32, 33])
def test_pack_unpack_round_trip(bits, n):
    codes = torch.randint(0, 1 << bits, (3, 5, n), dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (3, 5, math.ceil(n * bits / 8))
    assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_pack_rejects_unsupported_bits():
    with pytest.raises(ValueError):
        pack_bits(torch.zeros(4, dtype=torch.uint8), 3)


@pytest.mark.parametrize("bits", [2, 4])
def test_quantize_dequantize_round_trip(bits):
    x = torch.randn(4, 64, 8) * 3 + 1
    codes, scale, zero = quantize_asym(x, bits, dim=1)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= (1 << bits) - 1
    assert scale.shape == zero.shape == (4, 1, 8) and scale.dtype == torch.float16
    x_hat = dequantize(codes, scale, zero, torch.float32)
    # Half a step of rounding, plus slack for the float16 zero point and scale.
    bound = scale.float() / 2 + 2e-3 * (x.abs().amax(dim=1, keepdim=True) + 1)
    assert bool(((x_hat - x).abs() <= bound).all())
    const = torch.full((2, 5), 0.75)
    codes, scale, zero = quantize_asym(const, bits, dim=-1)
    assert torch.equal(dequantize(codes, scale, zero, torch.float32), const)


# ----------------------------------------------------------------------------- KIVI


def kivi_bytes(bits, group, residual_tokens, quantized, head_dim=HEAD_DIM, elem=4, layers=1):
    """Expected ``nbytes`` from the layout: packed codes, fp16 scale+zero, fp residual."""
    groups = quantized // group
    value_groups = head_dim // group if head_dim % group == 0 else 1
    key_codes = KV_HEADS * groups * math.ceil(group * head_dim * bits / 8)
    key_params = 2 * KV_HEADS * groups * head_dim * 2
    value_codes = KV_HEADS * quantized * math.ceil(head_dim * bits / 8)
    value_params = 2 * KV_HEADS * quantized * value_groups * 2
    resid = 2 * KV_HEADS * residual_tokens * head_dim * elem
    return layers * (key_codes + key_params + value_codes + value_params + resid)


@pytest.mark.parametrize("bits,bound", [(4, 0.1), (2, 0.45)])
def test_kivi_reconstruction_error(bits, bound):
    cache = KIVICache(layout(layers=1), bits=bits, group_size=32, residual=32, materialize=True)
    k, v = tokens(512)
    fill(cache, k, v)
    q = cache.quantized_length()
    rk, rv = cache.read(0)
    err_k, err_v = rel_err(rk[:, :q], k[:, :q]), rel_err(rv[:, :q], v[:, :q])
    # Gaussian data, 32-sample ranges: ~0.079 at 4 bits, ~0.39 at 2 bits.
    assert 0.02 < err_k < bound and 0.02 < err_v < bound
    assert torch.equal(rk[:, q:], k[:, q:]) and torch.equal(rv[:, q:], v[:, q:])


def test_kivi_keys_per_channel_values_per_token():
    """Channel offsets on keys and token offsets on values cost nothing: they set the zeros."""
    k, v = tokens(256, seed=3)
    k_off = k + torch.linspace(-6, 6, HEAD_DIM)
    v_off = v + torch.linspace(-6, 6, 256).unsqueeze(-1)
    errors = []
    for kk, vv in ((k, v), (k_off, v_off)):
        cache = KIVICache(layout(layers=1), bits=2, group_size=32, residual=0)
        cache.append(0, kk, vv)
        rk, rv = cache.read(0)
        errors.append((float((rk - kk).norm()), float((rv - vv).norm())))
    (k_plain, v_plain), (k_shift, v_shift) = errors
    assert k_shift == pytest.approx(k_plain, rel=0.05)
    assert v_shift == pytest.approx(v_plain, rel=0.05)


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("group,residual", [(32, 32), (8, 20), (32, 0), (5, 3)])
def test_kivi_residual_bounds_and_exact_bytes(group, residual, materialize):
    cache = KIVICache(layout(), 2, group, residual, materialize=materialize)
    k, v = tokens(150)
    seen = 0
    for n in (1, 9, 1, 40, 1, 1, 60, 37):
        for layer in range(LAYERS):
            cache.append(layer, k[:, seen : seen + n], v[:, seen : seen + n])
        seen += n
        q = cache.quantized_length()
        tail = seen - q
        assert q % group == 0
        assert (residual <= tail < residual + group) or (q == 0 and tail < residual + group)
        for layer in range(LAYERS):
            rk, rv = cache.read(layer)
            assert rk.shape == (KV_HEADS, seen, HEAD_DIM)
            assert torch.equal(rk[:, q:], k[:, q:seen]) and torch.equal(rv[:, q:], v[:, q:seen])
            dk, dv = cache.decode_store(layer)
            assert torch.equal(dk, rk) and torch.equal(dv, rv)
        assert cache.nbytes() == kivi_bytes(2, group, tail, q, layers=LAYERS)


@pytest.mark.parametrize("bits", [2, 4])
def test_kivi_bytes_per_token_vs_full(bits):
    lay = layout(layers=1)
    kivi = KIVICache(lay, bits=bits, group_size=32, residual=32, materialize=True)
    full = FullKVCache(lay)
    k, v = tokens(1024)
    kivi.append(0, k, v)
    full.append(0, k, v)
    q = kivi.quantized_length()
    assert q == 992
    assert kivi.nbytes() == kivi_bytes(bits, 32, 1024 - q, q)
    # Quantized tokens: codes 2 * 2 * 32 * bits / 8 bytes + fp16 params 8 + 8 bytes per token.
    per_quantized_token = 2 * KV_HEADS * HEAD_DIM * bits / 8 + 16
    assert per_quantized_token == {2: 48, 4: 80}[bits]
    fp32_per_token = 2 * KV_HEADS * HEAD_DIM * 4
    assert full.nbytes() == 1024 * fp32_per_token
    assert kivi.nbytes() < full.nbytes() * {2: 0.13, 4: 0.19}[bits]
    assert kivi.scratch_nbytes() == q * fp32_per_token


def test_kivi_value_channel_groups():
    cache = KIVICache(layout(layers=1), bits=4, group_size=8, residual=0)
    assert cache.value_groups == HEAD_DIM // 8
    k, v = tokens(40)
    cache.append(0, k, v)
    assert cache.nbytes() == kivi_bytes(4, 8, 0, 40)
    assert rel_err(cache.read(0)[1], v) < 0.1
    odd = KIVICache(layout(layers=1, head_dim=24), bits=4, group_size=16, residual=0)
    assert odd.value_groups == 1  # 16 does not divide 24: one group per token


def test_kivi_repeated_reads_reuse_dequantized_prefix():
    cache = KIVICache(layout(layers=1), bits=2, group_size=8, residual=8, materialize=True)
    k, v = tokens(64)
    cache.append(0, k, v)
    a, b = cache.read(0), cache.read(0)
    assert a[0].data_ptr() == b[0].data_ptr() and torch.equal(a[0], b[0])


@pytest.mark.parametrize("materialize", [True, False])
def test_kivi_truncate_inside_residual_is_exact(materialize):
    cache = KIVICache(layout(), bits=2, group_size=8, residual=16, materialize=materialize)
    k, v = tokens(80)
    fill(cache, k[:, :60], v[:, :60])
    q = cache.quantized_length()
    before = [tuple(t.clone() for t in cache.read(layer)) for layer in range(LAYERS)]
    cache.truncate(q + 3)
    assert cache.quantized_length() == q and cache.length(1) == q + 3
    for layer in range(LAYERS):
        rk, rv = cache.read(layer)
        assert torch.equal(rk, before[layer][0][:, : q + 3])
        assert torch.equal(rv, before[layer][1][:, : q + 3])
    fill(cache, k[:, 60:], v[:, 60:])
    assert cache.length() == q + 3 + 20
    rk, _ = cache.read(0)
    fresh = min(20, cache.length() - cache.quantized_length())
    assert torch.equal(rk[:, -fresh:], k[:, 80 - fresh :])


@pytest.mark.parametrize("materialize", [True, False])
def test_kivi_truncate_inside_quantized_region(materialize):
    group = 8
    cache = KIVICache(layout(), bits=4, group_size=group, residual=4, materialize=materialize)
    k, v = tokens(100)
    fill(cache, k[:, :70], v[:, :70])
    before = cache.read(0)[0].clone()
    assert cache.quantized_length() == 64
    cache.truncate(21)  # cuts group 2 ([16, 24)) after 5 tokens
    assert cache.length(0) == cache.length(1) == 21
    assert cache.quantized_length() == 16
    rk, _ = cache.read(0)
    assert torch.equal(rk, before[:, :21])  # surviving tokens keep their dequantized values
    assert cache.nbytes() == kivi_bytes(4, group, 5, 16, layers=LAYERS)
    fill(cache, k[:, 70:], v[:, 70:])
    assert cache.length() == 51
    rk, rv = cache.read(1)
    q = cache.quantized_length()
    assert rk.shape == (KV_HEADS, 51, HEAD_DIM)
    assert torch.equal(rk[:, q:], k[:, 70 + q - 21 :])
    dk, dv = cache.decode_store(1)
    assert torch.equal(dk, rk) and torch.equal(dv, rv)
    cache.truncate(0)
    assert cache.length() == 0 and cache.nbytes() == 0


def test_kivi_compact_mode_reads_like_materialized_mode():
    """Same packed store either way: reads agree bit for bit through appends and rollbacks."""
    caches = [KIVICache(layout(layers=1), 2, 8, 6, materialize=m) for m in (True, False)]
    k, v = tokens(400, seed=5)
    seen, gen = 0, torch.Generator().manual_seed(1)
    for _ in range(40):
        n = int(torch.randint(1, 12, (1,), generator=gen))
        for cache in caches:
            cache.append(0, k[:, seen : seen + n], v[:, seen : seen + n])
        seen += n
        if int(torch.randint(0, 4, (1,), generator=gen)) == 0:
            seen = max(0, seen - int(torch.randint(1, 15, (1,), generator=gen)))
            for cache in caches:
                cache.truncate(seen)
        (mk, mv), (ck, cv) = (cache.read(0) for cache in caches)
        assert torch.equal(mk, ck) and torch.equal(mv, cv) and mk.shape[1] == seen
        assert caches[0].nbytes() == caches[1].nbytes()
    assert caches[1].scratch_nbytes() == 0
    assert caches[0].scratch_nbytes() == caches[0].quantized_length() * 2 * KV_HEADS * HEAD_DIM * 4


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bits=3, group_size=32, residual=8),
        dict(bits=8, group_size=32, residual=8),
        dict(bits=2, group_size=0, residual=8),
        dict(bits=2, group_size=32, residual=-1),
    ],
)
def test_kivi_factory_validation(kwargs):
    with pytest.raises(ValueError):
        KIVICacheFactory(**kwargs)
