"""Value types the engine and every family protocol share: a request and one step's batch.

Nothing here imports the rest of the project (protocols depend on these, never the reverse),
so the protocol, engine and technique modules form no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Phase(str, Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass
class Request:
    """One prompt to complete. Mutable: the engine advances it step by step.

    ``computed`` counts the tokens (prompt then output) whose keys/values are in the cache.
    ``prefill_len`` is how many leading tokens a prefill must compute before decoding: the
    prompt, or after a preemption by recompute the prompt plus the output so far (the step
    that completes that prefill emits the next token, exactly as decode would have).
    ``emissions`` is the timeline: one ``(t_ns, n_tokens)`` entry per step that emitted tokens,
    so multi-token steps (speculative decoding) are recorded as such. ``prefix_group`` names
    requests sharing a prompt prefix (a system prompt) of ``prefix_len`` tokens, for
    shared-prefix attention and prefix-aware scheduling; None when not shared.
    ``cache`` is the request's KV cache (the engine's factory made it); decoders keep any other
    per-request state themselves, keyed by ``rid``.
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
    cache: Any = None
    start_ns: int | None = None
    prefix_group: int | None = None
    prefix_len: int = 0
    prefill_len: int = -1
    preemptions: int = 0

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError(f"request {self.rid}: empty prompt")
        if self.max_new_tokens < 1:
            raise ValueError(f"request {self.rid}: max_new_tokens must be >= 1")
        if self.prefill_len < 0:
            self.prefill_len = len(self.prompt)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def prompt_left(self) -> int:
        """Tokens still to prefill (prompt, or prompt + output after a recompute preemption)."""
        return max(0, self.prefill_len - self.computed)

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

    def preempt(self) -> None:
        """Give up the cache and start over by recompute: prompt and output prefill again."""
        self.cache = None
        self.computed = 0
        self.prefill_len = len(self.prompt) + len(self.output)
        self.phase = Phase.WAITING
        self.preemptions += 1


@dataclass
class StepBatch:
    """The scheduler's choice for one iteration, split by phase for the decoder."""

    entries: list[tuple[Request, int]]

    @property
    def prefills(self) -> list[tuple[Request, int]]:
        return [(r, n) for r, n in self.entries if r.prompt_left > 0]

    @property
    def decodes(self) -> list[Request]:
        return [r for r, _ in self.entries if r.prompt_left == 0]
