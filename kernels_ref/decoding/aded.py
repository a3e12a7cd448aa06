"""ADED: drafts from a tri-gram table of what the model has produced, chosen with exploration.

Liu et al. (2024), "Adaptive Draft-Verification for Efficient Large Language Model Decoding"
(arXiv 2407.12021): no draft model and no training. A tri-gram table approximates the model's
output distribution: for each pair of tokens, how often each next token followed it. It starts
empty and adapts as decoding goes: every prompt and every committed token is added, so the
table learns the text being generated (for code: its names and idioms). Drafts balance
exploitation and exploration as the paper's search does, here with a UCB1 score per candidate
continuation ``c`` of the last two tokens ``(a, b)``::

    score(c) = n(a, b, c) / n(a, b) + explore * sqrt(ln(1 + n(a, b)) / (1 + tried(a, b, c)))

where ``n`` counts occurrences and ``tried`` how often ``c`` was drafted after ``(a, b)``: a
frequent continuation is exploited, one rarely tried gets a bonus that shrinks as it is
drafted. The root of the draft tree gets the ``width`` best-scoring continuations, every deeper
node its single best one (a tree of ``width`` chains of up to ``depth`` tokens), verified in
one pass (:mod:`effbench.kernels_ref.decoding.tree`): the output is exactly the target's under
greedy decoding. The paper's Monte-Carlo tree search over drafts is reduced to this per-step
UCB choice; its state is the table, reported as ``storage_bytes`` (12 bytes per distinct
tri-gram: the three token ids).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from effbench.kernels_ref.decoding._common import prefill_feeds
from effbench.kernels_ref.decoding.tree import DraftTree, TreeVerifyBase, check_tree_size
from effbench.kernels_ref.protocols import EngineOps
from effbench.kernels_ref.requests import Request, StepBatch

Pair = tuple[int, int]


@dataclass
class TrigramTable:
    """Counts of next tokens per token pair, and how often each was drafted."""

    counts: dict[Pair, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    totals: dict[Pair, int] = field(default_factory=lambda: defaultdict(int))
    tried: dict[tuple[int, int, int], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, tokens: list[int]) -> None:
        """Count every tri-gram of ``tokens``."""
        for a, b, c in zip(tokens, tokens[1:], tokens[2:]):
            nxt = self.counts[(a, b)]
            nxt[c] = nxt.get(c, 0) + 1
            self.totals[(a, b)] += 1

    def best(self, pair: Pair, n: int, explore: float) -> list[int]:
        """The ``n`` continuations of ``pair`` with the highest UCB score (none if unseen)."""
        nxt = self.counts.get(pair)
        if not nxt:
            return []
        total = self.totals[pair]
        bonus = math.log1p(total)

        def score(c: int) -> float:
            tried = self.tried.get((*pair, c), 0)
            return nxt[c] / total + explore * math.sqrt(bonus / (1 + tried))

        return sorted(nxt, key=score, reverse=True)[:n]

    def nbytes(self) -> int:
        return 12 * sum(len(v) for v in self.counts.values())


@dataclass
class ADED(TreeVerifyBase):
    """Draft ``width`` chains of up to ``depth`` tokens from the adaptive tri-gram table."""

    width: int = 2
    depth: int = 4
    explore: float = 0.5
    table: TrigramTable = field(default_factory=TrigramTable)
    _seen: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {self.width} and {self.depth}")
        if self.explore < 0:
            raise ValueError(f"explore must be >= 0, got {self.explore}")
        check_tree_size(self.width * self.depth, f"width {self.width} x depth {self.depth}")

    @property
    def lookahead(self) -> int:
        """Tree nodes a verify pass writes into each request's cache beyond its own token."""
        return self.width * self.depth

    def prepare(self, ctx: EngineOps) -> None:
        self.reset_counters()
        self.table = TrigramTable()
        self._seen = {}

    def release(self, req: Request) -> None:
        self._seen.pop(req.rid, None)

    def _learn(self, req: Request) -> None:
        """Add the tokens ``req`` committed since last time (its prompt, the first time)."""
        start = max(self._seen.get(req.rid, 0) - 2, 0)
        self.table.add(req.tokens[start:])
        self._seen[req.rid] = len(req.tokens)

    def draft(self, tokens: list[int], depth: int) -> DraftTree:
        """``width`` chains under the last token: the root's best continuations, each extended
        by its single best one down to ``depth`` tokens.
        """
        out: list[int] = []
        parents: list[int] = []
        if depth < 1 or len(tokens) < 2:
            return DraftTree()
        pair = (tokens[-2], tokens[-1])
        for first in self.table.best(pair, self.width, self.explore):
            a, b, c, node = *pair, first, -1
            for _ in range(depth):
                out.append(c)
                parents.append(node)
                node = len(out) - 1
                self.table.tried[(a, b, c)] += 1
                nxt = self.table.best((b, c), 1, self.explore)
                if not nxt:
                    break
                a, b, c = b, c, nxt[0]
        return DraftTree(tuple(out), tuple(parents))

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        for r in batch.decodes:
            self._learn(r)
        trees = {r.rid: self.draft(r.tokens, min(self.depth, r.budget_left - 1))
                 for r in batch.decodes}  # fmt: skip
        self.verify_trees(ctx, pre, batch.decodes, trees)

    def stats(self) -> dict[str, Any]:
        """As every tree decoder's, plus ``storage_bytes`` (the tri-gram table)."""
        return {**super().stats(), "storage_bytes": self.table.nbytes()}
