"""KV-cache reference kernels, one technique per module; shared pieces in ``_common`` and
``quant``; the pool-level block manager (paged blocks, prefix sharing) in ``paged``.

The names most callers need are re-exported here.
"""

from effbench.kernels_ref.kvcache._common import (
    CacheFactoryBase,
    FullKVCache,
    FullKVCacheFactory,
    KVCacheBase,
)
from effbench.kernels_ref.kvcache.full_cache import (
    KVPool,
    PooledKVCache,
    PooledKVCacheFactory,
    append_and_gather,
)
from effbench.kernels_ref.kvcache.kivi import KIVI_BITS, KIVICache, KIVICacheFactory, validate_kivi
from effbench.kernels_ref.kvcache.quant import dequantize, pack_bits, quantize_asym, unpack_bits

__all__ = [
    "KIVI_BITS",
    "CacheFactoryBase",
    "FullKVCache",
    "FullKVCacheFactory",
    "KIVICache",
    "KIVICacheFactory",
    "KVCacheBase",
    "KVPool",
    "PooledKVCache",
    "PooledKVCacheFactory",
    "append_and_gather",
    "dequantize",
    "pack_bits",
    "quantize_asym",
    "unpack_bits",
    "validate_kivi",
]
