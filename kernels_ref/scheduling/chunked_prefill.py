"""Chunked prefill with decode-maximal batches (Sarathi / Sarathi-Serve, arXiv 2308.16369 and
2403.02310): every iteration carries all running decodes and fills the rest of a fixed token
budget with prefill chunks, so arrivals never stall ongoing decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from effbench.kernels_ref.protocols import Budget
from effbench.kernels_ref.requests import Request


@dataclass(frozen=True)
class ChunkedPrefill:
    """Decode-maximal batches: all decodes, then prefill chunks up to the token budget.

    ``token_budget`` is Sarathi's per-iteration token count (decode tokens included); the engine's
    ``max_tokens`` caps it too. Decodes are never dropped, even when they alone exceed the
    budget; prefill chunks take whatever is left, oldest request first, at least one token.
    A waiting request starts only if its whole prompt fits in free KV memory.
    """

    token_budget: int = 64

    def __post_init__(self) -> None:
        if self.token_budget < 1:
            raise ValueError("token_budget must be >= 1")

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]:
        out: list[tuple[Request, int]] = [(r, 1) for r in running if r.prompt_left == 0]
        left = min(self.token_budget, budget.max_tokens) - len(out)
        candidates = [r for r in running if r.prompt_left > 0]
        reserved = 0
        for r in waiting[: max(0, budget.max_batch - len(running))]:
            if not budget.fits(r.prompt_left, reserved):
                break
            candidates.append(r)
            reserved += r.prompt_left
        for r in candidates:
            if left <= 0:
                break
            n = min(r.prompt_left, left)
            out.append((r, n))
            left -= n
        return out
