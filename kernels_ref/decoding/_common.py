"""What decoders share: the prefill feeds of a step, the lossless acceptance rule of drafted
tokens, and ``DecoderBase`` (the protocol's optional parts: no per-request state to release, no
statistics).
"""

from __future__ import annotations

from typing import Any

import torch

from effbench.kernels_ref.protocols import EngineOps, Feed
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


def accept_drafts(
    ctx: EngineOps, drafts: list[int], qprobs: list[torch.Tensor], logits: torch.Tensor
) -> list[int]:
    """Accepted drafts plus the target's own next token (correction or bonus).

    ``logits`` are the target's rows for [last, d1..dk]. Greedy: keep drafts while they equal
    the target's argmax. Sampling: the rejection rule of Leviathan et al. against the drafter's
    distributions ``qprobs`` (a deterministic drafter passes one-hot rows: a draft is then kept
    with the target's probability of it), so the output distribution is the target's.
    """
    if ctx.temperature <= 0:
        target = logits.argmax(-1).tolist()
        out = []
        for d, t in zip(drafts, target):
            if d != t:
                return out + [t]
            out.append(d)
        return out + [target[len(drafts)]]
    p = ctx.probs(logits)
    out = []
    for i, d in enumerate(drafts):
        ratio = (p[i, d] / qprobs[i][d].clamp_min(1e-20)).clamp(max=1.0)
        u = torch.rand((), generator=ctx.generator, device=p.device)
        if u <= ratio:
            out.append(d)
            continue
        residual = (p[i] - qprobs[i]).clamp_min(0)
        total = residual.sum()
        dist = residual / total if total > 0 else p[i]
        return out + [int(torch.multinomial(dist, 1, generator=ctx.generator))]
    last = p[len(drafts)]
    return out + [int(torch.multinomial(last, 1, generator=ctx.generator))]
