"""The full-precision KV cache: the KV-cache family's baseline."""

from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.suite.registry import register


@register(
    name="full-cache",
    family="kvcache",
    summary="Keys and values at the model's precision, each sequence a slot of one shared "
    "per-layer buffer (batched decode reads it without copies).",
    lossless=True,
    baseline=True,
)
def full_cache() -> PooledKVCacheFactory:
    return PooledKVCacheFactory()
