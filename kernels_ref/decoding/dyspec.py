"""DySpec: a draft model grows the draft tree greedily by path probability.

Xiong et al. (2024), "DySpec: Faster Speculative Decoding with Dynamic Token Tree Structure"
(arXiv 2410.11744): a fixed chain wastes the verify pass when the draft is unsure, a fixed tree
wastes it when the draft is sure. DySpec lets the draft's own probabilities shape the tree:
every candidate continuation carries the probability of its whole path under the draft, and
the most probable candidates become nodes first (a draft token's probability approximates its
acceptance). Here each draft pass adds the ``per_round`` best candidates of every request as
nodes, feeds them to the draft in one pass (with the tree mask over the draft's own cache, so
each sees its ancestors) and pushes each new node's ``top`` most likely children as candidates,
until the request's tree holds ``nodes`` nodes. The target verifies the tree in one pass
(:mod:`effbench.kernels_ref.decoding.tree`); the output is the target's (greedy: token for
token). The draft's cache is compacted to the accepted path like the target's.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch

from effbench.kernels_ref.decoding._common import prefill_feeds
from effbench.kernels_ref.decoding._draft_model import DraftModelState
from effbench.kernels_ref.decoding.tree import DraftTree, TreeVerifyBase, check_tree_size, tree_mask
from effbench.kernels_ref.protocols import EngineOps, Feed
from effbench.kernels_ref.requests import Request, StepBatch


@dataclass
class _Growing:
    """One request's tree while the draft grows it."""

    base: int
    max_depth: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    fed: int = 0  # nodes already in the draft's cache
    heap: list[tuple[float, int, int]] = field(default_factory=list)  # (-logp, parent, token)

    def tree(self) -> DraftTree:
        return DraftTree(tuple(self.tokens), tuple(self.parents))

    def push(self, parent: int, logits: torch.Tensor, top: int) -> None:
        """The ``top`` most likely children of ``parent`` (-1: the root) as candidates."""
        depth = 0 if parent < 0 else self.depths[parent]
        if depth >= self.max_depth:
            return
        logp = torch.log_softmax(logits.float(), dim=-1).topk(top)
        base = 0.0 if parent < 0 else self.logps[parent]
        for lp, tok in zip(logp.values.tolist(), logp.indices.tolist()):
            heapq.heappush(self.heap, (-(base + lp), parent, tok))

    def grow(self, n: int) -> int:
        """Add the ``n`` most probable candidates as nodes; how many were added."""
        added = 0
        while self.heap and added < n:
            neg, parent, tok = heapq.heappop(self.heap)
            self.tokens.append(tok)
            self.parents.append(parent)
            self.depths.append(1 if parent < 0 else self.depths[parent] + 1)
            self.logps.append(-neg)
            added += 1
        return added


@dataclass
class DySpec(DraftModelState, TreeVerifyBase):
    """Grow a draft tree of ``nodes`` nodes by draft path probability, verify it in one pass."""

    nodes: int = 8
    per_round: int = 4
    top: int = 4

    def __post_init__(self) -> None:
        if min(self.nodes, self.per_round, self.top) < 1:
            raise ValueError(f"nodes, per_round and top must be >= 1, got {self.nodes}, "
                             f"{self.per_round} and {self.top}")  # fmt: skip
        check_tree_size(self.nodes, f"nodes {self.nodes}")

    @property
    def lookahead(self) -> int:
        """Tree nodes a verify pass writes into each request's cache beyond its own token."""
        return self.nodes

    def prepare(self, ctx: EngineOps) -> None:
        self.prepare_draft(ctx, "DySpec")
        self.reset_counters()

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        # the draft consumes prompt chunks and catches up with the committed tokens
        feeds = self.draft_prompt_feeds(ctx, pre)
        dc = self._draft_caches
        decodes = batch.decodes
        grow = {}
        for r in decodes:
            have = dc[r.rid].length()
            feeds.append(Feed(dc[r.rid], r.tokens[have:], have, seq_id=r.rid))
            grow[r.rid] = _Growing(len(r.tokens), r.budget_left - 1)
        out = self.draft_forward(ctx, feeds) if feeds else []
        for r, lg in zip(decodes, out[len(pre) :]):
            grow[r.rid].push(-1, lg[-1], self.top)
        dev = ctx.model.device
        while True:  # one draft pass per round over every request's new nodes
            active, feeds = [], []
            for r in decodes:
                g = grow[r.rid]
                if g.grow(min(self.per_round, self.nodes - len(g.tokens))):
                    new = g.tokens[g.fed :]
                    positions = tuple(g.base - 1 + d for d in g.depths[g.fed :])
                    mask = tree_mask(g.base, g.tree(), dev)
                    feeds.append(Feed(dc[r.rid], new, g.base + g.fed, "all", seq_id=r.rid,
                                      positions=positions, mask=mask))
                    active.append(r)
            if not feeds:
                break
            for r, lg in zip(active, self.draft_forward(ctx, feeds)):
                g = grow[r.rid]
                for i in range(len(lg)):
                    g.push(g.fed + i, lg[i], self.top)
                g.fed = len(g.tokens)
        self.verify_trees(ctx, pre, decodes, {r.rid: grow[r.rid].tree() for r in decodes})

    def tree_accepted(self, req: Request, base: int, path: list[int]) -> None:
        """The draft's cache keeps the context and the accepted nodes, like the target's."""
        cache = self._draft_caches[req.rid]
        if cache.length() > base:
            cache.keep([*range(base), *(base + n for n in path)])

    def stats(self) -> dict:
        return {**super().stats(), "mean_tree_nodes": self.proposed / max(self.verify_steps, 1)}

