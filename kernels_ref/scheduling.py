"""Batch schedulers: which requests run in the next iteration, and with how many tokens.

Three policies, from the oldest to the one current servers use:
- static batching: a batch is formed when the engine is idle and runs until every request in
  it has finished; arrivals wait for the whole batch (request-level batching).
- continuous batching (Orca, OSDI'22; vLLM's default before chunking): requests join and leave
  at every iteration; new requests are prefilled whole in a prefill-only iteration, which pauses
  the running decodes for that iteration.
- chunked prefill with decode-maximal batches (Sarathi / Sarathi-Serve, arXiv 2308.16369 and
  2403.02310): every iteration carries all running decodes and fills the rest of a fixed token
  budget with prefill chunks, so arrivals never stall ongoing decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from effbench.kernels_ref.protocols import Budget
from effbench.kernels_ref.requests import Request


@dataclass(frozen=True)
class StaticBatching:
    """Admit up to ``max_batch`` requests only when none is running; prefill them whole."""

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]:
        if running:
            prefilling = [(r, r.prompt_left) for r in running if r.prompt_left > 0]
            return prefilling or [(r, 1) for r in running]
        return [(r, r.prompt_left) for r in waiting[: budget.max_batch]]


@dataclass(frozen=True)
class ContinuousBatching:
    """Iteration-level batching, prefill first: new requests prefill whole, then all decode."""

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]:
        room = budget.max_batch - len(running)
        admitted: list[tuple[Request, int]] = []
        tokens = 0
        for r in waiting[: max(0, room)]:
            if admitted and tokens + r.prompt_left > budget.max_tokens:
                break
            admitted.append((r, r.prompt_left))
            tokens += r.prompt_left
        if admitted:
            return admitted
        return [(r, 1) for r in running]


@dataclass(frozen=True)
class ChunkedPrefill:
    """Decode-maximal batches: all decodes, then prefill chunks up to the token budget.

    ``token_budget`` is Sarathi's per-iteration token count (decode tokens included); the engine's
    ``max_tokens`` caps it too. Decodes are never dropped, even when they alone exceed the
    budget; prefill chunks take whatever is left, oldest request first, at least one token.
    """

    token_budget: int = 128

    def __post_init__(self) -> None:
        if self.token_budget < 1:
            raise ValueError("token_budget must be >= 1")

    def schedule(
        self, waiting: Sequence[Request], running: Sequence[Request], budget: Budget
    ) -> list[tuple[Request, int]]:
        out: list[tuple[Request, int]] = [(r, 1) for r in running if r.prompt_left == 0]
        left = min(self.token_budget, budget.max_tokens) - len(out)
        candidates = [r for r in running if r.prompt_left > 0]
        candidates += list(waiting[: max(0, budget.max_batch - len(running))])
        for r in candidates:
            if left <= 0:
                break
            n = min(r.prompt_left, left)
            out.append((r, n))
            left -= n
        return out
