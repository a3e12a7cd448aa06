"""Prompt lookup decoding: drafts copied from the sequence itself, verified by the target.

Saxena (2023), "Prompt Lookup Decoding", and the input-guided drafting of Aggressive Decoding
(Ge et al. 2022, arXiv 2205.10350): in copy-heavy generation (edits, summaries, code that
repeats names) the next tokens often already appear in the context. The drafter finds the
latest earlier occurrence of the sequence's last ``n`` tokens (``max_ngram`` down to
``min_ngram``) and proposes the up to ``k`` tokens that followed it; no draft model. The target
verifies ``[last, d1..dk]`` in one pass, and the shared acceptance rule
(``accept_drafts``, a deterministic drafter's rows being one-hot) keeps its output exactly the
autoregressive one under greedy decoding and its distribution under sampling. A step without a
match proposes nothing and is a plain decode step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from effbench.kernels_ref.decoding._common import DecoderBase, accept_drafts, prefill_feeds
from effbench.kernels_ref.protocols import EngineOps, Feed
from effbench.kernels_ref.requests import StepBatch


def lookup(tokens: list[int], k: int, max_ngram: int, min_ngram: int = 1) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the last n-gram of
    ``tokens``, trying ``n = max_ngram`` down to ``min_ngram``; [] when none recurs.
    """
    end = len(tokens)
    for n in range(min(max_ngram, end - 1), min_ngram - 1, -1):
        pattern = tokens[end - n :]
        for start in range(end - n - 1, -1, -1):  # latest first; the match must end before
            if tokens[start : start + n] == pattern:  # the last n-gram itself starts
                return tokens[start + n : start + n + k]
    return []


@dataclass
class PromptLookup(DecoderBase):
    """Draft ``k`` tokens by n-gram lookup in the request's own tokens, verify in one pass."""

    k: int = 4
    max_ngram: int = 3
    min_ngram: int = 1
    proposed: int = 0
    accepted: int = 0
    verify_steps: int = 0
    committed: int = 0
    rejections: int = 0
    matched_steps: int = 0
    per_step: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k (draft tokens per step) must be >= 1, got {self.k}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram} and "
                             f"{self.max_ngram}")  # fmt: skip

    def prepare(self, ctx: EngineOps) -> None:
        self.proposed = self.accepted = self.verify_steps = self.committed = 0
        self.rejections = self.matched_steps = 0
        self.per_step = []

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        drafts = {
            r.rid: lookup(r.tokens, min(self.k, r.budget_left - 1), self.max_ngram,
                          self.min_ngram) if r.budget_left > 1 else []
            for r in batch.decodes
        }  # fmt: skip
        verify = [(r, Feed(r.cache, r.tokens[r.computed :] + drafts[r.rid], r.computed, "all",
                           seq_id=r.rid)) for r in batch.decodes]  # fmt: skip
        pairs = pre + verify
        logits = ctx.forward([f for _, f in pairs]).logits
        now = None
        vocab = None
        for (r, f), lg in zip(pairs, logits):
            if r.prompt_left > 0:  # a prompt chunk
                r.computed += len(f.tokens)
                if lg is not None:
                    now = now or ctx.now()
                    r.emit(ctx.pick(lg[-1:]), now)
                continue
            d = drafts[r.rid]
            vocab = vocab or lg.shape[-1]
            onehot = [torch.nn.functional.one_hot(torch.tensor(t, device=lg.device), vocab)
                      .float() for t in d] if ctx.temperature > 0 else []  # fmt: skip
            new = accept_drafts(ctx, d, onehot, lg)
            n_acc = len(new) - 1
            keep = r.computed + 1 + n_acc
            r.cache.truncate(keep)
            r.computed = keep
            now = now or ctx.now()
            r.emit(new, now)
            self.proposed += len(d)
            self.accepted += n_acc
            self.matched_steps += bool(d)
            self.verify_steps += 1
            self.committed += len(new)
            self.per_step.append(len(new))
            self.rejections += n_acc < len(d)

    def stats(self) -> dict[str, Any]:
        """As the speculative decoder's, plus ``match_rate``: the share of steps whose lookup
        found a draft (``acceptance_rate`` counts only proposed tokens).
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
            "match_rate": self.matched_steps / steps if self.verify_steps else float("nan"),
            "per_step_committed": list(self.per_step),
        }
