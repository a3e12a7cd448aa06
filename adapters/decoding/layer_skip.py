"""Self-speculative decoding by layer skipping: the target's early exit drafts, no draft model."""

from effbench.kernels_ref.decoding.layer_skip import LayerSkip
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="layer-skip",
    family="decoding",
    summary="Drafts k tokens with the target's first exit_layer layers plus its own head (an "
    "early exit), then verifies them with the whole target in one pass (output unchanged).",
    paper=Paper("LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding",
                "2404.16710"),
    lossless=True,
    params=from_kernel(
        LayerSkip,
        Param("k", "int", help="draft tokens per step", min=1, max=16, sweep=(2, 4)),
        Param("exit_layer", "int", help="layers the draft runs (below the target's count)",
              min=1, max=64, sweep=(1, 2, 3)),
    ),
    levels=("engine",),
)
def layer_skip(k: int, exit_layer: int) -> LayerSkip:
    return LayerSkip(k=k, exit_layer=exit_layer)
