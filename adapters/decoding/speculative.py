"""Speculative decoding with a small draft model and the lossless rejection-sampling rule."""

from effbench.kernels_ref.decoding.speculative import Speculative
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="speculative",
    family="decoding",
    summary="A draft model proposes k tokens; the target verifies them in one pass and keeps "
    "a prefix by the rejection rule (output distribution unchanged).",
    paper=Paper("Fast Inference from Transformers via Speculative Decoding", "2211.17192"),
    lossless=True,
    requires=("draft-model",),
    params=from_kernel(
        Speculative,
        Param("k", "int", help="draft tokens proposed per step", min=1, max=16,
              sweep=(2, 4, 6)),
    ),
    levels=("engine",),
)
def speculative(k: int) -> Speculative:
    return Speculative(k=k)
