"""Static (request-level) batching: the scheduling family's baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from effbench.kernels_ref.protocols import Budget
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling._common import admit


@dataclass(frozen=True)
class StaticBatching:
    """Admit up to ``max_batch`` requests only when none is running; prefill them whole.

    A batch forms when the engine is idle and runs until every request in it has finished;
    arrivals wait for the whole batch.
    """

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]:
        if running:
            prefilling = [(r, r.prompt_left) for r in running if r.prompt_left > 0]
            return prefilling or [(r, 1) for r in running]
        return admit(waiting, budget.max_batch, budget)
