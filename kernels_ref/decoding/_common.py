"""What decoders share: the prefill feeds of a step, and ``DecoderBase`` (the protocol's
optional parts: no per-request state to release, no statistics).
"""

from __future__ import annotations

from typing import Any

from effbench.kernels_ref.protocols import Feed
from effbench.kernels_ref.requests import Request, StepBatch


def prefill_feeds(batch: StepBatch) -> list[tuple[Request, Feed]]:
    """One feed per prefilling request: its next chunk, with logits only when the chunk
    completes the prefill (that step emits the first token).
    """
    out = []
    for req, n in batch.prefills:
        done = req.computed + n >= req.prefill_len
        chunk = req.tokens[req.computed : req.computed + n]
        out.append((req, Feed(req.cache, chunk, req.computed, "last" if done else "none",
                              seq_id=req.rid)))
    return out


class DecoderBase:
    """Defaults for the optional parts of the decoder protocol."""

    def release(self, req: Request) -> None:
        """Drop per-request state when ``req`` finishes or is preempted (none by default)."""

    def stats(self) -> dict[str, Any]:
        return {}
