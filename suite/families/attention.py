"""The attention family: backends measured on synthetic tensors and inside the engine."""

from __future__ import annotations

from typing import Any

from effbench.kernels_ref.protocols import AttentionBackend
from effbench.suite.family import Family, register_family


def _workloads(preset: Any) -> list[str]:
    return [s.name for s in preset.kernel.attention_shapes]


def _run(case: Any, ctx: Any) -> list[Any]:
    from effbench.suite.levels.kernel import attention_case

    return attention_case(case, ctx)


def _timed(case: Any, ctx: Any, impl: Any) -> Any:
    from effbench.suite.levels.kernel import attention_timed

    return attention_timed(case, ctx, impl)


FAMILY = register_family(Family(
    name="attention",
    summary="attention backends: exact, sparse, windowed, real kernels",
    protocol=AttentionBackend,
    levels=("kernel", "engine"),
    engine_slot="attention",
    kernel_workloads=_workloads,
    kernel_run=_run,
    kernel_timed=_timed,
    kernel_needs_model=True,
    order=0,
))
