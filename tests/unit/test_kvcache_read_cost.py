"""Analytic read costs of the KV caches (what places a kernel-level read on the roofline)."""

import torch

from effbench.kernels_ref.kvcache import FullKVCache, KIVICache
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.protocols import CacheLayout

LAYOUT = CacheLayout(num_layers=2, kv_heads=2, head_dim=32, dtype=torch.float32,
                     device=torch.device("cpu"))


def _fill(cache, tokens=100):
    g = torch.Generator().manual_seed(0)
    for layer in range(LAYOUT.num_layers):
        k = torch.randn(2, tokens, 32, generator=g)
        cache.append(layer, k, torch.randn(2, tokens, 32, generator=g))
    return cache


def test_compact_kivi_reads_its_store_and_writes_the_full_sequence():
    cache = _fill(KIVICache(LAYOUT, bits=2, group_size=32, residual=16, materialize=False))
    nbytes, flops = cache.read_cost()
    written = 2 * LAYOUT.num_layers * 2 * 100 * 32 * 4
    assert nbytes == cache.nbytes() + written
    quantized = sum(cache.quantized_length(layer) for layer in range(LAYOUT.num_layers))
    assert quantized == 2 * 64 and flops == 4 * 2 * 32 * quantized


def test_views_move_nothing_and_casts_read_and_write():
    assert _fill(KIVICache(LAYOUT, materialize=True)).read_cost() == (0.0, 0.0)
    assert _fill(PooledKVCacheFactory().new_cache(LAYOUT)).read_cost() == (0.0, 0.0)
    assert _fill(FullKVCache(LAYOUT)).read_cost() == (0.0, 0.0)
    half = _fill(FullKVCache(LAYOUT, dtype=torch.float16))
    stored = half.nbytes()
    assert half.read_cost() == (float(stored + stored * 2), 0.0)
