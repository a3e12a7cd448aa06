"""Dense causal scaled-dot-product attention: the attention family's exact baseline."""

from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.suite.registry import register


@register(
    name="dense",
    family="attention",
    summary="Exact causal attention (torch scaled_dot_product_attention); the family baseline.",
    lossless=True,
    baseline=True,
)
def dense() -> DenseAttention:
    return DenseAttention()
