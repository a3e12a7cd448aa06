"""Self-speculative decoding by layer skipping: the target's first layers are the draft.

LayerSkip (Elhoushi et al. 2024, arXiv 2404.16710) and Draft & Verify (Zhang et al. 2023,
arXiv 2309.08168): no second model. The draft is the target cut after ``exit_layer`` of its
layers, followed by the target's own final norm and LM head (an early exit, the engine's
``forward(layers=...)``), so drafting costs ``exit_layer / num_layers`` of a target step and
needs no extra weights. The draft writes its keys and values into the request's own cache
(layers below the exit only), which is the cache the target's first layers would fill with
the same values; before the verify pass the cache is cut back to the committed tokens and the
target runs its usual packed verify over ``[last, d1..dk]``, so the acceptance rule, rollback
and counters are the shared ones (``DraftVerifyBase``) and the output is the target's (greedy:
token for token). LayerSkip trains the model with early-exit losses so that shallow exits
predict well; the tiny target was not, so its early exits are what an untrained model gives
(the figures say how far that goes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effbench.kernels_ref.decoding._common import ChainDraftBase, prefill_feeds, take_drafts
from effbench.kernels_ref.protocols import EngineOps, Feed
from effbench.kernels_ref.requests import StepBatch


@dataclass
class LayerSkip(ChainDraftBase):
    """Draft ``k`` tokens with the target's first ``exit_layer`` layers, verify with all."""

    exit_layer: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exit_layer < 1:
            raise ValueError(f"exit_layer must be >= 1, got {self.exit_layer}")

    def prepare(self, ctx: EngineOps) -> None:
        layers = ctx.model.config.num_hidden_layers
        if self.exit_layer >= layers:
            raise ValueError(f"exit_layer {self.exit_layer} must be below the target's "
                             f"{layers} layers (the draft is the target cut after it)")  # fmt: skip
        self.reset_counters()

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        decodes = batch.decodes
        ks = {r.rid: min(self.k, r.budget_left - 1) for r in decodes}
        drafts: dict[int, list[int]] = {r.rid: [] for r in decodes}
        qprobs: dict[int, list[torch.Tensor]] = {r.rid: [] for r in decodes}
        for j in range(max(ks.values(), default=0)):
            active = [r for r in decodes if ks[r.rid] > j]
            feeds = []
            for r in active:
                seq = r.tokens + drafts[r.rid]
                have = r.cache.length()  # layer 0's: the draft extends the layers below the exit
                feeds.append(Feed(r.cache, seq[have:], have, seq_id=r.rid))
            take_drafts(ctx, active, ctx.forward(feeds, layers=self.exit_layer).logits,
                        drafts, qprobs)  # fmt: skip
        for r in decodes:  # the early exit's keys go: the verify pass writes every layer
            r.cache.truncate(r.computed)
        self.verify(ctx, pre, decodes, drafts, qprobs)
