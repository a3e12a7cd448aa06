"""Scheduling reference kernels, one policy per module; shared admission in ``_common``."""

from effbench.kernels_ref.scheduling.chunked_prefill import ChunkedPrefill
from effbench.kernels_ref.scheduling.continuous_batching import ContinuousBatching
from effbench.kernels_ref.scheduling.static_batching import StaticBatching

__all__ = ["ChunkedPrefill", "ContinuousBatching", "StaticBatching"]
