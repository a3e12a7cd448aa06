"""The scheduling family: batch schedulers at the serving level, and at the kernel level the
batch-composition cost that chunked prefill relies on (SARATHI's piggybacking decodes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effbench.kernels_ref.protocols import Scheduler
from effbench.suite.errors import ConfigError
from effbench.suite.family import Family, register_family
from effbench.suite.preset_checks import Section

_SHAPE_KEYS = ("chunk", "decodes", "context")


@dataclass(frozen=True)
class SchedulingKernelSettings:
    """``[kernel.scheduling] piggyback = [{ chunk, decodes, context }, ...]``: batch shapes
    whose decode-token cost is measured alone and riding along a prefill chunk.
    """

    piggyback: tuple[tuple[int, int, int], ...] = ()


def _kernel_section(got: Mapping[str, Any], sec: Section) -> SchedulingKernelSettings:
    sec.check_keys(got, ["piggyback"])
    shapes = got.get("piggyback", [])
    if not isinstance(shapes, list):
        raise ConfigError("'piggyback' must be a list of tables", sec.at("piggyback"))
    out = []
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise ConfigError(f"piggyback shape #{i + 1} must be a table", sec.at("piggyback"))
        sec.check_keys(shape, list(_SHAPE_KEYS), f"piggyback shape #{i + 1}")
        missing = [k for k in _SHAPE_KEYS if k not in shape]
        if missing:
            raise ConfigError(f"piggyback shape #{i + 1} needs '{missing[0]}'",
                              sec.at("piggyback"))
        out.append(tuple(sec.typed(shape[k], int, k, 1, sec.at("piggyback"))
                         for k in _SHAPE_KEYS))
    return SchedulingKernelSettings(tuple(out))


def _workloads(preset: Any) -> list[str]:
    return [f"pb-c{c}-d{d}-l{n}" for c, d, n in preset.kernel["scheduling"].piggyback]


def _run(case: Any, ctx: Any) -> list[Any]:
    from effbench.suite.levels import piggyback

    return piggyback.run(case, ctx)


def _timed(case: Any, ctx: Any, impl: Any) -> Any:
    from effbench.suite.levels import piggyback

    chunk, decodes, context = piggyback.parse_workload(case.workload)
    return piggyback.PiggybackBench(ctx.model, chunk, decodes, context).mixed


FAMILY = register_family(Family(
    name="scheduling",
    summary="batch schedulers: static, continuous, chunked prefill",
    protocol=Scheduler,
    levels=("kernel", "serving"),
    engine_slot="scheduler",
    kernel_workloads=_workloads,
    kernel_run=_run,
    kernel_timed=_timed,
    kernel_needs_model=True,
    kernel_section=_kernel_section,
    order=2,
))
