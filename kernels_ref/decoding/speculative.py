"""Speculative decoding with a draft model and the lossless rejection rule.

A small draft model proposes ``k`` tokens per request, the target scores them all in one packed
forward pass, and the rule of Leviathan et al. (arXiv 2211.17192) / Chen et al. (arXiv
2302.01318) keeps a prefix and adds one token of its own, so the output distribution is the
target's. Under greedy decoding the rule reduces to "keep drafts while they equal the target's
argmax", and the output equals the baseline's token for token. Prompt chunks go through the
target and the draft (which must keep its own cache in step); the draft caches are this
decoder's per-request state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effbench.kernels_ref.decoding._common import ChainDraftBase, prefill_feeds, take_drafts
from effbench.kernels_ref.decoding._draft_model import DraftModelState
from effbench.kernels_ref.protocols import EngineOps, Feed
from effbench.kernels_ref.requests import Request, StepBatch


@dataclass
class Speculative(DraftModelState, ChainDraftBase):
    """Draft-then-verify with ``k`` draft tokens per step and the lossless acceptance rule."""

    def prepare(self, ctx: EngineOps) -> None:
        self.prepare_draft(ctx, "speculative decoding")
        self.reset_counters()

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        # The draft also consumes prompt chunks so its cache stays aligned with the target's.
        draft_feeds = self.draft_prompt_feeds(ctx, pre)
        dc = self._draft_caches
        decodes = batch.decodes
        # Draft phase: each decoding request proposes up to k tokens (fewer near its budget).
        ks = {r.rid: min(self.k, r.budget_left - 1) for r in decodes}
        drafts: dict[int, list[int]] = {r.rid: [] for r in decodes}
        qprobs: dict[int, list[torch.Tensor]] = {r.rid: [] for r in decodes}
        for j in range(max(ks.values(), default=0)):
            active = [r for r in decodes if ks[r.rid] > j]
            feeds = []
            for r in active:
                seq = r.tokens + drafts[r.rid]
                have = dc[r.rid].length()
                feeds.append(Feed(dc[r.rid], seq[have:], have, seq_id=r.rid))
            out = self.draft_forward(ctx, (draft_feeds if j == 0 else []) + feeds)
            out = out[len(draft_feeds) :] if j == 0 else out
            if out:
                take_drafts(ctx, active, out, drafts, qprobs)
        if draft_feeds and not any(ks.values()):
            self.draft_forward(ctx, draft_feeds)
        # Verify phase: one packed target pass over prompt chunks and [last, d1..dk] runs.
        self.verify(ctx, pre, decodes, drafts, qprobs)

    def rolled_back(self, req: Request, keep: int) -> None:
        """The draft's cache drops what the target rejected."""
        if self._draft_caches[req.rid].length() > keep:
            self._draft_caches[req.rid].truncate(keep)
