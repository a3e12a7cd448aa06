"""Autoregressive decoding, one token per request per step: the decoding family's baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from effbench.kernels_ref.decoding._common import DecoderBase, prefill_feeds
from effbench.kernels_ref.protocols import EngineOps, Feed
from effbench.kernels_ref.requests import StepBatch


@dataclass
class Autoregressive(DecoderBase):
    """One token per request per step: the baseline every decoding technique is compared to."""

    steps: int = 0
    tokens: int = 0

    def prepare(self, ctx: EngineOps) -> None:
        self.steps = self.tokens = 0

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        dec_reqs = batch.decodes
        dec_before = [len(r.output) for r in dec_reqs]
        dec = [(r, Feed(r.cache, r.tokens[r.computed :], r.computed, seq_id=r.rid))
               for r in dec_reqs]
        pairs = pre + dec
        logits = ctx.forward([f for _, f in pairs]).logits
        emit_reqs = [(r, lg) for (r, _), lg in zip(pairs, logits) if lg is not None]
        for (r, f) in pairs:
            r.computed += len(f.tokens)
        if not emit_reqs:
            return
        picks = ctx.pick(torch.cat([lg[-1:] for _, lg in emit_reqs]))
        now = ctx.now()
        for (r, _), tok in zip(emit_reqs, picks):
            r.emit([tok], now)
        self.steps += len(dec)
        self.tokens += sum(len(r.output) - before for r, before in zip(dec_reqs, dec_before))

    def stats(self) -> dict[str, Any]:
        """``decode_steps`` counts (request, step) pairs, as the speculative decoder does."""
        per_step = self.tokens / self.steps if self.steps else float("nan")
        return {"decode_steps": self.steps, "tokens_per_step": per_step}
