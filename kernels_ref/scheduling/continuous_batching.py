"""Continuous (iteration-level) batching, as introduced by Orca (OSDI'22)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from effbench.kernels_ref.protocols import Budget
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling._common import admit


@dataclass(frozen=True)
class ContinuousBatching:
    """Iteration-level batching, prefill first: new requests prefill whole, then all decode.

    Requests join and leave at every iteration; an iteration that admits requests is
    prefill-only, which pauses the running decodes for that iteration (vLLM's default before
    chunking).
    """

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]:
        admitted = admit(waiting, budget.max_batch - len(running), budget, budget.max_tokens)
        if admitted:
            return admitted
        return [(r, 1) for r in running]
