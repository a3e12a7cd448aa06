"""Tree verification: one target pass checks a whole tree of drafted continuations.

A drafter that proposes several candidates per position (Token Recycling's adjacency matrix,
Medusa/Sequoia trees, DySpec, SpecTr) lays them out as a :class:`DraftTree`: nodes in
breadth-first order, each naming its parent (-1: the root, i.e. the last committed token). The
verify pass feeds the pending token(s) then every node, in that order, into the cache slots
after the context; each node gets the rotary position of its depth (siblings share one) and a
mask predicate lets it see the context and its own ancestors only (:func:`tree_mask`, an
attention-gym style predicate over cache slots, applied by every backend through the
attention metadata). Acceptance walks down from the root: at each node the target picks its
next token (argmax, or a sample at the temperature) from that node's logits; if a child drafted
that token the walk moves to it, else the picked token is emitted and the walk ends. With
deterministic drafts this is exactly sampling from the target token by token, so the output is
the autoregressive one under greedy decoding and has its distribution under sampling. The
accepted path's keys are then moved next to the context (``keep``) and the rest dropped.

SpecInfer (Miao et al. 2023) introduced token-tree verification; this is its single-pass form
for deterministic drafts (no multi-draft rejection sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from effbench.kernels_ref.decoding._common import DraftVerifyBase
from effbench.kernels_ref.protocols import EngineOps, Feed, MaskPredicate
from effbench.kernels_ref.requests import Request

MAX_TREE_NODES = 256
"""The most draft nodes one request's verify pass takes: each node is a query row over the
whole context with an explicit mask, so a larger tree costs more than it can win (paper
trees are 60-100 nodes)."""


def check_tree_size(nodes: int, what: str) -> None:
    """Refuse a tree above the verify limit, naming the limit and what sized it."""
    if nodes > MAX_TREE_NODES:
        raise ValueError(f"a draft tree of {nodes} nodes ({what}) exceeds the engine's verify "
                         f"limit of {MAX_TREE_NODES} nodes")  # fmt: skip


@dataclass(frozen=True)
class DraftTree:
    """Drafted tokens as a tree: ``tokens[i]`` hangs under node ``parents[i]`` (-1: the root).

    A parent comes before its children (breadth-first order, or chain after chain); siblings
    carry distinct tokens.
    """

    tokens: tuple[int, ...] = ()
    parents: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.parents):
            raise ValueError("a draft tree needs one parent per token")
        for i, p in enumerate(self.parents):
            if not -1 <= p < i:
                raise ValueError(f"node {i}'s parent {p} must be -1 or an earlier node")

    @staticmethod
    def chain(tokens: Sequence[int]) -> DraftTree:
        """A linear draft (each token under the previous one)."""
        return DraftTree(tuple(tokens), tuple(range(-1, len(tokens) - 1)))

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def depths(self) -> tuple[int, ...]:
        """Depth of each node (1: a child of the root)."""
        out: list[int] = []
        for p in self.parents:
            out.append(1 if p < 0 else out[p] + 1)
        return tuple(out)

    @cached_property
    def children(self) -> dict[int, dict[int, int]]:
        """``{node: {token: child}}``, the root being -1."""
        out: dict[int, dict[int, int]] = {}
        for i, (t, p) in enumerate(zip(self.tokens, self.parents)):
            out.setdefault(p, {}).setdefault(t, i)
        return out

    def ancestors(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(n, n)`` bool: ``[i, j]`` is True when node j is node i or one of its ancestors."""
        n = len(self)
        out = torch.eye(n, dtype=torch.bool)
        for i, p in enumerate(self.parents):
            if p >= 0:
                out[i] |= out[p]
        return out.to(device)


def tree_mask(base: int, tree: DraftTree, device: torch.device | str | None = None
              ) -> MaskPredicate:  # fmt: skip
    """The predicate of a tree fed from cache slot ``base``: every key before ``base`` (the
    context and the pending tokens) is visible; among the tree's slots a node sees itself and
    its ancestors only. Causality is applied on top by the backends.
    """
    anc = tree.ancestors(device)
    last = max(len(tree) - 1, 0)

    def predicate(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor
                  ) -> torch.Tensor:  # fmt: skip
        qi, ki = q - base, k - base
        inside = anc[qi.clamp(0, last), ki.clamp(0, last)] if len(tree) else ki < 0
        return (ki < 0) | ((qi >= 0) & inside)

    return predicate


@dataclass
class TreeVerifyBase(DraftVerifyBase):
    """Draft-then-verify decoders whose drafts are trees: the verify pass and the walk.

    Counters as ``DraftVerifyBase`` (``drafts_proposed`` counts tree nodes, so
    ``acceptance_rate`` is the share of nodes kept); a step that ends at a node with children
    counts as a rejection, one that ends at a leaf is censored. ``observed`` (the base's hook)
    sees every verified feed's tokens and logits; Token Recycling learns from it.
    """

    def tree_accepted(self, req: Request, base: int, path: list[int]) -> None:
        """``req``'s tree, fed from cache slot ``base``, kept nodes ``path`` (root to leaf):
        drafters with caches of their own compact them the same way (nothing by default).
        """

    def verify_trees(
        self, ctx: EngineOps, pre: list[tuple[Request, Feed]], decodes: list[Request],
        trees: dict[int, DraftTree],
    ) -> None:  # fmt: skip
        """Verify every decoding request's tree (and run the prompt chunks) in one pass."""
        dev = ctx.model.device
        verify = []
        for r in decodes:
            tree = trees[r.rid]
            check_tree_size(len(tree), f"request {r.rid}")
            pending = r.tokens[r.computed :]
            base = r.computed + len(pending)
            positions = (*range(r.computed, base), *(base - 1 + d for d in tree.depths))
            verify.append((r, Feed(r.cache, pending + list(tree.tokens), r.computed, "all",
                                   seq_id=r.rid, positions=positions if len(tree) else None,
                                   mask=tree_mask(base, tree, dev) if len(tree) else None)))

        def accept(r: Request, f: Feed, lg: torch.Tensor) -> tuple[list[int], int, int, bool]:
            tree = trees[r.rid]
            root = len(f.tokens) - len(tree) - 1  # the row of the last pending token
            out, path = self._walk(ctx, tree, lg, root)
            base = r.computed + root + 1
            if path == list(range(len(path))):  # the first nodes: already in place
                r.cache.truncate(base + len(path))
            else:
                r.cache.keep([*range(base), *(base + n for n in path)])
            r.computed = base + len(path)
            self.tree_accepted(r, base, path)
            rejected = bool(tree.children.get(path[-1] if path else -1))
            return out, len(tree), len(path), rejected

        self.run_verify(ctx, pre, verify, accept)

    @staticmethod
    def _walk(ctx: EngineOps, tree: DraftTree, logits: torch.Tensor, root: int
              ) -> tuple[list[int], list[int]]:  # fmt: skip
        """(tokens to emit, accepted nodes): follow the target's picks down the tree."""
        node, out, path = -1, [], []
        while True:
            row = root if node < 0 else root + 1 + node
            t = ctx.pick(logits[row : row + 1])[0]
            out.append(t)
            child = tree.children.get(node, {}).get(t)
            if child is None:
                return out, path
            node = child
            path.append(child)
