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

from dataclasses import dataclass, field
from typing import Any

import torch

from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.kernels_ref.decoding._common import DecoderBase, accept_drafts, prefill_feeds
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.protocols import EngineOps, Feed, KVCache, KVCacheFactory
from effbench.kernels_ref.requests import Request, StepBatch


@dataclass
class Speculative(DecoderBase):
    """Draft-then-verify with ``k`` draft tokens per step and the lossless acceptance rule."""

    k: int = 4
    draft_cache_factory: KVCacheFactory = field(default_factory=PooledKVCacheFactory)
    proposed: int = 0
    accepted: int = 0
    verify_steps: int = 0
    committed: int = 0
    per_step: list[int] = field(default_factory=list)
    rejections: int = 0
    _draft_caches: dict[int, KVCache] = field(default_factory=dict, repr=False)
    _draft_attention: DenseAttention = field(default_factory=DenseAttention, repr=False)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k (draft tokens per step) must be >= 1")

    def prepare(self, ctx: EngineOps) -> None:
        if ctx.draft is None:
            raise ValueError("speculative decoding needs a draft model (engine draft=...)")
        if ctx.draft.config.vocab_size != ctx.model.config.vocab_size:
            raise ValueError("draft and target must share a vocabulary")
        self.proposed = self.accepted = self.verify_steps = self.committed = 0
        self.per_step = []
        self.rejections = 0
        self._draft_caches = {}

    def release(self, req: Request) -> None:
        """The request finished or was preempted: its draft cache goes."""
        self._draft_caches.pop(req.rid, None)

    def _draft_forward(self, ctx: EngineOps, feeds: list[Feed]) -> list[torch.Tensor | None]:
        return ctx.forward(feeds, model=ctx.draft, attention=self._draft_attention).logits

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        for r, _ in pre:
            if r.rid not in self._draft_caches:
                self._draft_caches[r.rid] = ctx.new_cache(ctx.draft, self.draft_cache_factory)
        dc = self._draft_caches
        decodes = batch.decodes
        # Draft phase: each decoding request proposes up to k tokens (fewer near its budget).
        ks = {r.rid: min(self.k, r.budget_left - 1) for r in decodes}
        drafts: dict[int, list[int]] = {r.rid: [] for r in decodes}
        qprobs: dict[int, list[torch.Tensor]] = {r.rid: [] for r in decodes}
        # The draft also consumes prompt chunks so its cache stays aligned with the target's.
        draft_feeds = [Feed(dc[r.rid], f.tokens, f.start, "none", seq_id=r.rid) for r, f in pre]
        for j in range(max(ks.values(), default=0)):
            active = [r for r in decodes if ks[r.rid] > j]
            feeds = []
            for r in active:
                seq = r.tokens + drafts[r.rid]
                have = dc[r.rid].length()
                feeds.append(Feed(dc[r.rid], seq[have:], have, seq_id=r.rid))
            out = self._draft_forward(ctx, (draft_feeds if j == 0 else []) + feeds)
            out = out[len(draft_feeds) :] if j == 0 else out
            rows = torch.cat([lg[-1:] for lg in out]) if out else None
            if rows is None:
                continue
            picks = ctx.pick(rows)
            probs = ctx.probs(rows) if ctx.temperature > 0 else None
            for i, (r, tok) in enumerate(zip(active, picks)):
                drafts[r.rid].append(tok)
                if probs is not None:
                    qprobs[r.rid].append(probs[i])
        if draft_feeds and not any(ks.values()):
            self._draft_forward(ctx, draft_feeds)
        # Verify phase: one packed target pass over prompt chunks and [last, d1..dk] runs.
        verify = [
            (r, Feed(r.cache, r.tokens[r.computed :] + drafts[r.rid], r.computed, "all",
                     seq_id=r.rid))
            for r in decodes
        ]
        pairs = pre + verify
        logits = ctx.forward([f for _, f in pairs]).logits
        now = None
        for (r, f), lg in zip(pairs, logits):
            if r.prompt_left > 0:  # a prompt chunk
                r.computed += len(f.tokens)
                if lg is not None:
                    now = now or ctx.now()
                    r.emit(ctx.pick(lg[-1:]), now)
                continue
            new = self.accept(ctx, drafts[r.rid], qprobs[r.rid], lg)
            n_acc = len(new) - 1
            keep = r.computed + 1 + n_acc
            r.cache.truncate(keep)
            r.computed = keep
            if dc[r.rid].length() > keep:
                dc[r.rid].truncate(keep)
            now = now or ctx.now()
            r.emit(new, now)
            self.proposed += len(drafts[r.rid])
            self.accepted += n_acc
            self.verify_steps += 1
            self.committed += len(new)
            self.per_step.append(len(new))
            self.rejections += n_acc < len(drafts[r.rid])

    def accept(
        self, ctx: EngineOps, drafts: list[int], qprobs: list[torch.Tensor], logits: torch.Tensor
    ) -> list[int]:
        """Accepted drafts plus the target's own next token (correction or bonus)."""
        return accept_drafts(ctx, drafts, qprobs, logits)

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
        }
