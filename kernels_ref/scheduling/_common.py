"""What schedulers share: memory-aware admission of waiting requests.

A scheduler admits a waiting request only while its prompt's KV fits in the budget's free
memory (``Budget.fits``); with no memory cap every request fits and the policies behave as
they always did. Running requests that outgrow memory are the engine's to preempt.
"""

from __future__ import annotations

from collections.abc import Sequence

from effbench.kernels_ref.protocols import Budget
from effbench.kernels_ref.requests import Request


def admit(
    waiting: Sequence[Request], room: int, budget: Budget, tokens_cap: int | None = None,
    first_always: bool = True,
) -> list[tuple[Request, int]]:
    """Waiting requests, oldest first, prefilled whole: at most ``room`` of them, their prompts
    within ``tokens_cap`` tokens (the first one always, if ``first_always``) and within KV
    memory. Stops at the first that does not fit (arrival order is kept).
    """
    out: list[tuple[Request, int]] = []
    tokens = 0
    for r in waiting[: max(0, room)]:
        n = r.prompt_left
        if tokens_cap is not None and tokens + n > tokens_cap and (out or not first_always):
            break
        if not budget.fits(n, tokens):
            break
        out.append((r, n))
        tokens += n
    return out
