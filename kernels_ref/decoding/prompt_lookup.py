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

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from effbench.kernels_ref.decoding._common import ChainDraftBase, prefill_feeds
from effbench.kernels_ref.protocols import EngineOps
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
class PromptLookup(ChainDraftBase):
    """Draft ``k`` tokens by n-gram lookup in the request's own tokens, verify in one pass."""

    max_ngram: int = 3
    min_ngram: int = 1
    matched_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram} and "
                             f"{self.max_ngram}")  # fmt: skip

    def prepare(self, ctx: EngineOps) -> None:
        self.reset_counters()
        self.matched_steps = 0

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        drafts = {
            r.rid: lookup(r.tokens, min(self.k, r.budget_left - 1), self.max_ngram,
                          self.min_ngram) if r.budget_left > 1 else []
            for r in batch.decodes
        }  # fmt: skip
        self.matched_steps += sum(bool(d) for d in drafts.values())
        if ctx.temperature > 0:  # a deterministic drafter: its distributions are one-hot
            vocab = ctx.model.config.vocab_size
            dev = ctx.model.device
            qprobs = {rid: list(F.one_hot(torch.tensor(d, dtype=torch.long, device=dev), vocab)
                                .float()) for rid, d in drafts.items()}  # fmt: skip
        else:
            qprobs = {rid: [] for rid in drafts}
        self.verify(ctx, pre, batch.decodes, drafts, qprobs)

    def stats(self) -> dict[str, Any]:
        """As the speculative decoder's, plus ``match_rate``: the share of steps whose lookup
        found a draft (``acceptance_rate`` counts only proposed tokens).
        """
        steps = self.verify_steps
        return {**super().stats(),
                "match_rate": self.matched_steps / steps if steps else float("nan")}
