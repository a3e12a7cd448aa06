"""Static (request-level) batching: the scheduling family's baseline."""

from effbench.kernels_ref.scheduling.static_batching import StaticBatching
from effbench.suite.registry import register


@register(
    name="static-batching",
    family="scheduling",
    summary="A batch forms when the engine is idle and runs until all its requests finish.",
    baseline=True,
    levels=("serving",),
)
def static_batching() -> StaticBatching:
    return StaticBatching()
