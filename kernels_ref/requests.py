"""A generation request and its per-token timeline, as the engine tracks it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from effbench.kernels_ref.protocols import KVCache


class Phase(str, Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass
class Request:
    """One prompt to complete. Mutable: the engine advances it step by step.

    ``computed`` counts the tokens (prompt then output) whose keys/values are in the cache.
    ``emissions`` is the timeline: one ``(t_ns, n_tokens)`` entry per step that emitted tokens,
    so multi-token steps (speculative decoding) are recorded as such.
    """

    rid: int
    prompt: list[int]
    max_new_tokens: int
    arrival_ns: int = 0
    eos_id: int | None = None
    output: list[int] = field(default_factory=list)
    computed: int = 0
    phase: Phase = Phase.WAITING
    emissions: list[tuple[int, int]] = field(default_factory=list)
    cache: KVCache | None = None
    draft_cache: KVCache | None = None
    start_ns: int | None = None

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError(f"request {self.rid}: empty prompt")
        if self.max_new_tokens < 1:
            raise ValueError(f"request {self.rid}: max_new_tokens must be >= 1")

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def prompt_left(self) -> int:
        return max(0, len(self.prompt) - self.computed)

    @property
    def budget_left(self) -> int:
        return self.max_new_tokens - len(self.output)

    def emit(self, new: list[int], t_ns: int) -> None:
        """Append emitted tokens (stopping at EOS or the token budget) and timestamp them."""
        accepted: list[int] = []
        for tok in new:
            if self.budget_left - len(accepted) <= 0:
                break
            accepted.append(tok)
            if self.eos_id is not None and tok == self.eos_id:
                break
        if accepted:
            self.output.extend(accepted)
            self.emissions.append((t_ns, len(accepted)))
        done = self.budget_left <= 0 or (self.eos_id is not None and self.output[-1:] == [
            self.eos_id
        ])
        self.phase = Phase.FINISHED if done else Phase.DECODE
