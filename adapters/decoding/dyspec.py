"""DySpec: a draft tree grown greedily by the draft model's path probabilities."""

from effbench.kernels_ref.decoding.dyspec import DySpec
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="dyspec",
    family="decoding",
    summary="The draft model adds the most probable continuations (by path probability) to a "
    "draft tree, a few per draft pass, up to a node budget; one tree-masked target pass "
    "verifies it (output unchanged).",
    paper=Paper("DySpec: Faster Speculative Decoding with Dynamic Token Tree Structure",
                "2410.11744"),
    lossless=True,
    requires=("draft-model",),
    params=from_kernel(
        DySpec,
        Param("nodes", "int", help="draft tree nodes per request and step", min=1, max=64,
              sweep=(4, 8, 16)),
        Param("per_round", "int", help="nodes added per draft pass", min=1, max=16),
        Param("top", "int", help="children considered per node", min=1, max=16),
    ),
    levels=("engine",),
)
def dyspec(nodes: int, per_round: int, top: int) -> DySpec:
    return DySpec(nodes=nodes, per_round=per_round, top=top)
