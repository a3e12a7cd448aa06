"""The KV-cache family: caches measured on synthetic keys/values and inside the engine."""

from __future__ import annotations

from typing import Any

from effbench.kernels_ref.protocols import KVCacheFactory
from effbench.suite.family import Family, register_family


def _workloads(preset: Any) -> list[str]:
    return [f"kv-{t}" for t in preset.kernel.kv_tokens]


def _run(case: Any, ctx: Any) -> list[Any]:
    from effbench.suite.levels.kernel import kvcache_case

    return kvcache_case(case, ctx)


def _timed(case: Any, ctx: Any, impl: Any) -> Any:
    from effbench.suite.levels.kernel import kvcache_timed

    return kvcache_timed(case, ctx, impl)


FAMILY = register_family(Family(
    name="kvcache",
    summary="KV caches: full, quantized, evicting, paged",
    protocol=KVCacheFactory,
    levels=("kernel", "engine"),
    engine_slot="cache",
    kernel_workloads=_workloads,
    kernel_run=_run,
    kernel_timed=_timed,
    kernel_needs_model=True,
    order=1,
))
