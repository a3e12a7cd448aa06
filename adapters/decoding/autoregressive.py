"""Autoregressive decoding, one token per step: the decoding family's baseline."""

from effbench.kernels_ref.decoding.autoregressive import Autoregressive
from effbench.suite.registry import register


@register(
    name="autoregressive",
    family="decoding",
    summary="One target forward pass per emitted token.",
    lossless=True,
    baseline=True,
    levels=("engine",),
)
def autoregressive() -> Autoregressive:
    return Autoregressive()
