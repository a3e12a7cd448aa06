"""What decoders that run a draft model share: its per-request caches and its forward pass.

The draft keeps a cache per request, fed the same prompt chunks as the target so the two stay
in step, opened when the request's prompt starts and dropped when the request finishes or is
preempted (``release``). Speculative decoding (a chain) and DySpec (a tree) mix it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.protocols import EngineOps, Feed, KVCache, KVCacheFactory
from effbench.kernels_ref.requests import Request


@dataclass
class DraftModelState:
    """A draft model's per-request caches (``draft_cache_factory``) and dense attention."""

    draft_cache_factory: KVCacheFactory = field(default_factory=PooledKVCacheFactory)
    _draft_caches: dict[int, KVCache] = field(default_factory=dict, repr=False)
    _draft_attention: DenseAttention = field(default_factory=DenseAttention, repr=False)

    def prepare_draft(self, ctx: EngineOps, who: str) -> None:
        """Refuse a missing draft or one with another vocabulary; start with no caches."""
        if ctx.draft is None:
            raise ValueError(f"{who} needs a draft model (engine draft=...)")
        if ctx.draft.config.vocab_size != ctx.model.config.vocab_size:
            raise ValueError("draft and target must share a vocabulary")
        self._draft_caches = {}

    def release(self, req: Request) -> None:
        """The request finished or was preempted: its draft cache goes."""
        self._draft_caches.pop(req.rid, None)

    def draft_forward(self, ctx: EngineOps, feeds: list[Feed]) -> list[torch.Tensor | None]:
        return ctx.forward(feeds, model=ctx.draft, attention=self._draft_attention).logits

    def draft_prompt_feeds(self, ctx: EngineOps, pre: list[tuple[Request, Feed]]) -> list[Feed]:
        """The step's prompt chunks as draft feeds, opening the caches of new prompts."""
        for r, _ in pre:
            if r.rid not in self._draft_caches:
                self._draft_caches[r.rid] = ctx.new_cache(ctx.draft, self.draft_cache_factory)
        dc = self._draft_caches
        return [Feed(dc[r.rid], f.tokens, f.start, "none", seq_id=r.rid) for r, f in pre]
