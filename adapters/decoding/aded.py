"""ADED: draft chains from an adaptive tri-gram table with UCB exploration, no draft model."""

from effbench.kernels_ref.decoding.aded import ADED
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="aded",
    family="decoding",
    summary="Counts the tri-grams of the prompt and of everything committed, drafts the best "
    "continuations of the last two tokens (a UCB score trades frequency for exploration) as "
    "a small tree, verified in one tree-masked pass (output unchanged).",
    paper=Paper("Adaptive Draft-Verification for Efficient Large Language Model Decoding",
                "2407.12021"),
    lossless=True,
    params=from_kernel(
        ADED,
        Param("width", "int", help="draft chains (best continuations of the last two tokens)",
              min=1, max=8, sweep=(1, 2, 4)),
        Param("depth", "int", help="tokens per chain", min=1, max=16),
        Param("explore", "float", help="UCB exploration weight (0: most frequent only)",
              min=0.0, max=4.0),
    ),
    levels=("engine",),
)
def aded(width: int, depth: int, explore: float) -> ADED:
    return ADED(width=width, depth=depth, explore=explore)
