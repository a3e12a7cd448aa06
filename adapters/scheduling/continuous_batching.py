"""Continuous (iteration-level) batching, as introduced by Orca."""

from effbench.kernels_ref.scheduling.continuous_batching import ContinuousBatching
from effbench.suite.registry import register
from effbench.suite.technique import Paper


@register(
    name="continuous-batching",
    family="scheduling",
    summary="Requests join and leave every iteration; new prompts prefill whole, pausing "
    "decodes for that iteration.",
    paper=Paper("Orca: A Distributed Serving System for Transformer-Based Generative Models"),
    levels=("serving",),
)
def continuous_batching() -> ContinuousBatching:
    return ContinuousBatching()
