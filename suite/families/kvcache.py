"""The KV-cache family: caches measured on synthetic keys/values and inside the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effbench.kernels_ref.protocols import KVCacheFactory
from effbench.suite.errors import ConfigError
from effbench.suite.family import Family, register_family
from effbench.suite.preset_checks import Section


@dataclass(frozen=True)
class KVCacheKernelSettings:
    """``[kernel.kvcache]``: sequence lengths kernel cases fill a cache to (workload ``kv-N``)."""

    tokens: tuple[int, ...] = (512,)


def _kernel_section(got: Mapping[str, Any], sec: Section) -> KVCacheKernelSettings:
    """Validate ``[kernel.kvcache] tokens = [N, ...]`` (a non-empty list of ints >= 1)."""
    sec.check_keys(got, ["tokens"])
    toks = got.get("tokens", list(KVCacheKernelSettings.tokens))
    if not isinstance(toks, list) or not toks:
        raise ConfigError("'tokens' must be a non-empty list", sec.at("tokens"))
    for t in toks:
        sec.typed(t, int, "tokens", 1)
    return KVCacheKernelSettings(tuple(toks))


def _workloads(preset: Any) -> list[str]:
    return [f"kv-{t}" for t in preset.kernel["kvcache"].tokens]


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
    kernel_section=_kernel_section,
    order=1,
))
