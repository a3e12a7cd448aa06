"""The full-precision KV cache: the KV-cache family's baseline."""

from kernels_ref.kvcache import FullKVCacheFactory
from suite.registry import register


@register(
    name="full-cache",
    family="kvcache",
    summary="Keys and values kept at the model's precision in growing per-layer buffers.",
    lossless=True,
    baseline=True,
)
def full_cache() -> FullKVCacheFactory:
    return FullKVCacheFactory()
