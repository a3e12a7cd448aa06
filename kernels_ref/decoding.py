"""Decoders: how one engine iteration turns scheduled requests into emitted tokens.

- ``Autoregressive``: one token per decoding request per step (the baseline).
- ``Speculative``: a small draft model proposes ``k`` tokens per request, the target scores
  them all in one packed forward pass, and the lossless rejection rule of Leviathan et al.
  (arXiv 2211.17192) / Chen et al. (arXiv 2302.01318) keeps a prefix and adds one token of its
  own, so the output distribution is the target's. Under greedy decoding the rule reduces to
  "keep drafts while they equal the target's argmax", and the output equals the baseline's
  token for token.

Both share the prefill path: prompt chunks go through the target (and the draft, which must
keep its own cache in step); the step that completes a prompt emits the first token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from effbench.kernels_ref.engine import Feed, StepBatch, StepContext, layout_of
from effbench.kernels_ref.kvcache import FullKVCacheFactory
from effbench.kernels_ref.protocols import KVCacheFactory
from effbench.kernels_ref.requests import Request


def _prefill_feeds(batch: StepBatch) -> list[tuple[Request, Feed]]:
    out = []
    for req, n in batch.prefills:
        done = req.computed + n >= len(req.prompt)
        chunk = req.prompt[req.computed : req.computed + n]
        out.append((req, Feed(req.cache, chunk, req.computed, "last" if done else "none")))
    return out


@dataclass
class Autoregressive:
    """One token per request per step: the baseline every decoding technique is compared to."""

    steps: int = 0
    tokens: int = 0

    def prepare(self, ctx: StepContext) -> None:
        self.steps = self.tokens = 0

    def step(self, ctx: StepContext, batch: StepBatch) -> None:
        pre = _prefill_feeds(batch)
        dec_reqs = batch.decodes
        dec_before = [len(r.output) for r in dec_reqs]
        dec = [(r, Feed(r.cache, r.tokens[r.computed :], r.computed)) for r in dec_reqs]
        pairs = pre + dec
        logits = ctx.forward([f for _, f in pairs])
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


@dataclass
class Speculative:
    """Draft-then-verify with ``k`` draft tokens per step and the lossless acceptance rule."""

    k: int = 4
    draft_cache_factory: KVCacheFactory = field(default_factory=FullKVCacheFactory)
    proposed: int = 0
    accepted: int = 0
    verify_steps: int = 0
    committed: int = 0
    per_step: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k (draft tokens per step) must be >= 1")

    def prepare(self, ctx: StepContext) -> None:
        if ctx.draft is None:
            raise ValueError("speculative decoding needs a draft model (engine draft=...)")
        if ctx.draft.config.vocab_size != ctx.model.config.vocab_size:
            raise ValueError("draft and target must share a vocabulary")
        self._draft_layout = layout_of(ctx.draft)
        self.proposed = self.accepted = self.verify_steps = self.committed = 0
        self.per_step = []

    def _draft_forward(self, ctx: StepContext, feeds: list[Feed]) -> list[torch.Tensor | None]:
        from effbench.kernels_ref.engine import run_forward

        return run_forward(ctx.draft, ctx.extras["draft_attention"], feeds)

    def step(self, ctx: StepContext, batch: StepBatch) -> None:
        if "draft_attention" not in ctx.extras:
            from effbench.kernels_ref.attention import DenseAttention

            ctx.extras["draft_attention"] = DenseAttention()
        pre = _prefill_feeds(batch)
        for r, _ in pre:
            if r.draft_cache is None:
                r.draft_cache = self.draft_cache_factory.new_cache(self._draft_layout)
        decodes = batch.decodes
        # Draft phase: each decoding request proposes up to k tokens (fewer near its budget).
        ks = {r.rid: min(self.k, r.budget_left - 1) for r in decodes}
        drafts: dict[int, list[int]] = {r.rid: [] for r in decodes}
        qprobs: dict[int, list[torch.Tensor]] = {r.rid: [] for r in decodes}
        # The draft also consumes prompt chunks so its cache stays aligned with the target's.
        draft_feeds = [Feed(r.draft_cache, f.tokens, f.start, "none") for r, f in pre]
        for j in range(max(ks.values(), default=0)):
            active = [r for r in decodes if ks[r.rid] > j]
            feeds = []
            for r in active:
                seq = r.tokens + drafts[r.rid]
                have = r.draft_cache.length()
                feeds.append(Feed(r.draft_cache, seq[have:], have))
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
            (r, Feed(r.cache, r.tokens[r.computed :] + drafts[r.rid], r.computed, "all"))
            for r in decodes
        ]
        pairs = pre + verify
        logits = ctx.forward([f for _, f in pairs])
        now = None
        for (r, f), lg in zip(pairs, logits):
            if r.prompt_left > 0:  # a prompt chunk
                r.computed += len(f.tokens)
                if lg is not None:
                    now = now or ctx.now()
                    r.emit(ctx.pick(lg[-1:]), now)
                continue
            new = self._accept(ctx, drafts[r.rid], qprobs[r.rid], lg)
            n_acc = len(new) - 1
            keep = r.computed + 1 + n_acc
            r.cache.truncate(keep)
            r.computed = keep
            if r.draft_cache.length() > keep:
                r.draft_cache.truncate(keep)
            now = now or ctx.now()
            r.emit(new, now)
            self.proposed += len(drafts[r.rid])
            self.accepted += n_acc
            self.verify_steps += 1
            self.committed += len(new)
            self.per_step.append(len(new))

    def _accept(
        self, ctx: StepContext, drafts: list[int], qprobs: list[torch.Tensor], logits: torch.Tensor
    ) -> list[int]:
        """Accepted drafts plus the target's own next token (correction or bonus)."""
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

    def stats(self) -> dict[str, Any]:
        steps = max(self.verify_steps, 1)
        return {
            "decode_steps": self.verify_steps,
            "drafts_proposed": self.proposed,
            "drafts_accepted": self.accepted,
            "acceptance_rate": self.accepted / self.proposed if self.proposed else float("nan"),
            "tokens_per_step": self.committed / steps if self.verify_steps else float("nan"),
            "per_step_committed": list(self.per_step),
        }
