"""What decoders share: the prefill feeds of a step, the lossless acceptance rule of drafted
tokens, and ``DecoderBase`` (the protocol's optional parts: no per-request state to release, no
statistics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


def finish_prompt(ctx: EngineOps, r: Request, f: Feed, lg: torch.Tensor | None,
                  now: int | None) -> int | None:  # fmt: skip
    """A prompt chunk of ``r`` ran: advance it, and emit the first token when the chunk ended
    the prompt (``lg``: its logits rows). Returns the step's timestamp, taken once.
    """
    r.computed += len(f.tokens)
    if lg is not None:
        now = now or ctx.now()
        r.emit(ctx.pick(lg[-1:]), now)
    return now


def take_drafts(
    ctx: EngineOps, active: list[Request], logits: list[torch.Tensor],
    drafts: dict[int, list[int]], qprobs: dict[int, list[torch.Tensor]],
) -> None:  # fmt: skip
    """Append each active request's next draft token, picked from the last row of its logits
    (and, when sampling, the drafter's distribution for the rejection rule).
    """
    rows = torch.cat([lg[-1:] for lg in logits])
    picks = ctx.pick(rows)
    probs = ctx.probs(rows) if ctx.temperature > 0 else None
    for i, (r, tok) in enumerate(zip(active, picks)):
        drafts[r.rid].append(tok)
        if probs is not None:
            qprobs[r.rid].append(probs[i])


class DecoderBase:
    """Defaults for the optional parts of the decoder protocol."""

    lookahead: int = 0
    """Tokens written into a request's cache per step beyond one (drafts under verification)."""

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


@dataclass
class DraftVerifyBase(DecoderBase):
    """What draft-then-verify decoders share, whatever drafts (a model, a lookup): one packed
    target pass over the step's prompt chunks and each decoding request's ``[last, d1..dk]``,
    the acceptance rule, the rollback of rejected tokens, and the counters behind ``stats``.
    """

    proposed: int = 0
    accepted: int = 0
    verify_steps: int = 0
    committed: int = 0
    rejections: int = 0
    per_step: list[int] = field(default_factory=list)
    accept_ns: int = 0
    """Time after each verify pass's forward: acceptance, rollback of the caches, emission
    (what batched speculation calls realignment, here per request and without padding)."""

    def reset_counters(self) -> None:
        self.proposed = self.accepted = self.verify_steps = self.committed = 0
        self.rejections = self.accept_ns = 0
        self.per_step = []

    def rolled_back(self, req: Request, keep: int) -> None:
        """``req`` keeps its first ``keep`` tokens: drop per-request state past them."""

    def observed(self, tokens: list[int], logits: torch.Tensor) -> None:
        """The target's logits rows for ``tokens`` of a verify pass (nothing by default;
        drafters that learn from the target's outputs use it).
        """

    def run_verify(
        self, ctx: EngineOps, pre: list[tuple[Request, Feed]],
        verify: list[tuple[Request, Feed]],
        accept: Callable[[Request, Feed, torch.Tensor], tuple[list[int], int, int, bool]],
    ) -> None:  # fmt: skip
        """One packed target pass over the prompt chunks ``pre`` and the ``verify`` feeds.

        ``accept(r, f, logits)`` keeps what the target agrees with, rolls ``r``'s cache and
        ``r.computed`` back to it, and returns (tokens to emit, drafted, accepted, rejected);
        this runs the prompt chunks, emits, and keeps the counters.
        """
        pairs = pre + verify
        logits = ctx.forward([f for _, f in pairs]).logits
        t0 = time.perf_counter_ns()
        now = None
        for (r, f), lg in zip(pairs, logits):
            if r.prompt_left > 0:  # a prompt chunk
                if lg is not None:
                    self.observed(f.tokens[-1:], lg[-1:])
                now = finish_prompt(ctx, r, f, lg, now)
                continue
            self.observed(f.tokens, lg)
            out, drafted, kept, rejected = accept(r, f, lg)
            self.rolled_back(r, r.computed)
            now = now or ctx.now()
            r.emit(out, now)
            self.proposed += drafted
            self.accepted += kept
            self.verify_steps += 1
            self.committed += len(out)
            self.per_step.append(len(out))
            self.rejections += rejected
        self.accept_ns += time.perf_counter_ns() - t0

    def verify(
        self, ctx: EngineOps, pre: list[tuple[Request, Feed]], decodes: list[Request],
        drafts: dict[int, list[int]], qprobs: dict[int, list[torch.Tensor]],
    ) -> None:  # fmt: skip
        """Verify every decoding request's drafts (and run the prompt chunks) in one pass."""
        verify = [(r, Feed(r.cache, r.tokens[r.computed :] + drafts[r.rid], r.computed, "all",
                           seq_id=r.rid)) for r in decodes]  # fmt: skip

        def accept(r: Request, f: Feed, lg: torch.Tensor) -> tuple[list[int], int, int, bool]:
            d = drafts[r.rid]
            new = accept_drafts(ctx, d, qprobs[r.rid], lg)
            n_acc = len(new) - 1
            r.computed += 1 + n_acc
            r.cache.truncate(r.computed)
            return new, len(d), n_acc, n_acc < len(d)

        self.run_verify(ctx, pre, verify, accept)

    def stats(self) -> dict[str, Any]:
        """Counts, plus ``acceptance_alpha``: the per-token acceptance probability a under the
        iid model of Leviathan et al., estimated by maximum likelihood from the accepted run
        lengths (accepted / (accepted + rejections); a step that accepts every draft is
        censored, not a rejection). ``acceptance_rate`` is accepted / proposed.
        """
        steps = max(self.verify_steps, 1)
        seen = self.accepted + self.rejections
        return {
            "acceptance_alpha": self.accepted / seen if seen else float("nan"),
            "decode_steps": self.verify_steps,
            "drafts_proposed": self.proposed,
            "drafts_accepted": self.accepted,
            "acceptance_rate": self.accepted / self.proposed if self.proposed else float("nan"),
            "tokens_per_step": self.committed / steps if self.verify_steps else float("nan"),
            "per_step_committed": list(self.per_step),
            "accept_rollback_s": self.accept_ns / 1e9,
        }


@dataclass
class ChainDraftBase(DraftVerifyBase):
    """Draft-then-verify with a chain of up to ``k`` drafted tokens per request and step."""

    k: int = 4

    @property
    def lookahead(self) -> int:
        """Draft tokens a verify pass writes into each request's cache beyond its own."""
        return self.k

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k (draft tokens per step) must be >= 1, got {self.k}")
