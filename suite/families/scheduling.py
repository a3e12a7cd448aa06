"""The scheduling family: batch schedulers measured at the serving level."""

from __future__ import annotations

from effbench.kernels_ref.protocols import Scheduler
from effbench.suite.family import Family, register_family

FAMILY = register_family(Family(
    name="scheduling",
    summary="batch schedulers: static, continuous, chunked prefill",
    protocol=Scheduler,
    levels=("serving",),
    engine_slot="scheduler",
    order=2,
))
