"""The decoding family: decoders measured end to end in the engine."""

from __future__ import annotations

from effbench.kernels_ref.protocols import Decoder
from effbench.suite.family import Family, register_family

FAMILY = register_family(Family(
    name="decoding",
    summary="decoders: autoregressive, speculative, prompt lookup",
    protocol=Decoder,
    levels=("engine",),
    engine_slot="decoder",
    order=3,
))
