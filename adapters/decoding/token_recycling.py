"""Token Recycling: a draft tree from the target's recycled top-k candidates, no draft model."""

from effbench.kernels_ref.decoding.token_recycling import TokenRecycling
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="token-recycling",
    family="decoding",
    summary="Keeps each verified token's top-k next candidates in a vocab x k matrix and drafts "
    "a tree from it by breadth-first search; one tree-masked target pass verifies it (output "
    "unchanged).",
    paper=Paper("Turning Trash into Treasure: Accelerating Inference of Large Language Models "
                "with Token Recycling", "2408.08696"),
    lossless=True,
    params=from_kernel(
        TokenRecycling,
        Param("top", "int", help="candidates kept per token (matrix width)", min=1, max=32),
        Param("width", "int", help="children of the root; halved per level, at least 1",
              min=1, max=16, sweep=(1, 2, 4)),
        Param("depth", "int", help="levels of the draft tree", min=1, max=12),
    ),
    levels=("engine",),
)
def token_recycling(top: int, width: int, depth: int) -> TokenRecycling:
    return TokenRecycling(top=top, width=width, depth=depth)
