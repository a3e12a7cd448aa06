"""Token Recycling: drafts from the target's own discarded candidates, verified as a tree.

Luo et al. (2024), "Turning Trash into Treasure: Accelerating Inference of Large Language
Models with Token Recycling" (arXiv 2408.08696). Every verify pass computes logits for many
tokens, and all but one candidate per row are thrown away. Token Recycling keeps them: an
adjacency matrix ``M`` of ``vocab x top`` token ids holds, for each token, the target's
``top`` most likely next tokens the last time that token was verified (each pass overwrites
the rows of the tokens it saw). To draft, a breadth-first search from the last committed token
follows ``M``: the root gets ``width`` children, their children ``width // 2`` each, and so on
(at least one) down to ``depth`` levels, a static tree shape as in the paper. The tree is
verified in one pass (:mod:`effbench.kernels_ref.decoding.tree`), so the output is exactly the
autoregressive one under greedy decoding. No draft model and no training; the only state is the
matrix (``int32``: ``vocab x top x 4`` bytes, reported as ``storage_bytes``), which persists
across the requests of a run, as the paper's does across a conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from effbench.kernels_ref.decoding._common import prefill_feeds
from effbench.kernels_ref.decoding.tree import DraftTree, TreeVerifyBase, check_tree_size
from effbench.kernels_ref.protocols import EngineOps
from effbench.kernels_ref.requests import StepBatch


def tree_shape(width: int, depth: int) -> tuple[int, ...]:
    """Children per node at each level: ``width``, then halved per level, at least 1."""
    return tuple(max(1, width >> level) for level in range(depth))


def bfs_tree(matrix: torch.Tensor, root: int, shape: tuple[int, ...]) -> DraftTree:
    """The draft tree under ``root``: level by level, each node's first ``shape[level]``
    candidates in ``matrix`` (-1 marks a row slot never filled, and ends that branch).
    """
    tokens: list[int] = []
    parents: list[int] = []
    frontier = [(root, -1)]
    for width in shape:
        nxt = []
        for tok, node in frontier:
            for c in matrix[tok, :width].tolist():
                if c < 0:
                    break
                tokens.append(c)
                parents.append(node)
                nxt.append((c, len(tokens) - 1))
        frontier = nxt
        if not frontier:
            break
    return DraftTree(tuple(tokens), tuple(parents))


@dataclass
class TokenRecycling(TreeVerifyBase):
    """Draft a tree from the adjacency matrix of recycled candidates, verify it in one pass."""

    top: int = 8
    width: int = 2
    depth: int = 4
    matrix: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int32))

    def __post_init__(self) -> None:
        if not 1 <= self.width <= self.top:
            raise ValueError(f"need 1 <= width <= top, got width {self.width} and top "
                             f"{self.top}")  # fmt: skip
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        check_tree_size(self.tree_nodes, f"width {self.width}, depth {self.depth}: lower one")

    @property
    def lookahead(self) -> int:
        """Tree nodes a verify pass writes into each request's cache beyond its own token."""
        return self.tree_nodes

    @property
    def tree_nodes(self) -> int:
        """The largest tree the shape allows."""
        nodes, level = 0, 1
        for w in tree_shape(self.width, self.depth):
            level *= w
            nodes += level
        return nodes

    def prepare(self, ctx: EngineOps) -> None:
        self.reset_counters()
        vocab = ctx.model.config.vocab_size
        self.matrix = torch.full((vocab, self.top), -1, dtype=torch.int32)

    def observed(self, tokens: list[int], logits: torch.Tensor) -> None:
        """Recycle: each verified token's row becomes the target's ``top`` next tokens."""
        ids = torch.tensor(tokens, dtype=torch.long)
        self.matrix[ids] = logits.topk(self.top, dim=-1).indices.to("cpu", torch.int32)

    def step(self, ctx: EngineOps, batch: StepBatch) -> None:
        pre = prefill_feeds(batch)
        shape = tree_shape(self.width, self.depth)
        trees = {r.rid: bfs_tree(self.matrix, r.tokens[-1], shape[: r.budget_left - 1])
                 for r in batch.decodes}  # fmt: skip
        self.verify_trees(ctx, pre, batch.decodes, trees)

    def stats(self) -> dict[str, Any]:
        """As every tree decoder's, plus ``storage_bytes`` (the matrix) and ``tree_nodes``
        (the largest tree the shape allows).
        """
        return {**super().stats(),
                "storage_bytes": self.matrix.numel() * self.matrix.element_size(),
                "tree_nodes": self.tree_nodes}  # fmt: skip
