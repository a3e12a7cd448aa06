"""The family protocols, re-exported for adapter authors (defined beside the engine)."""

from effbench.kernels_ref.protocols import (
    AttentionBackend,
    AttentionShape,
    Budget,
    CacheLayout,
    Decoder,
    KVCache,
    KVCacheFactory,
    Scheduler,
)

__all__ = [
    "AttentionBackend",
    "AttentionShape",
    "Budget",
    "CacheLayout",
    "Decoder",
    "KVCache",
    "KVCacheFactory",
    "Scheduler",
]
