"""Tree verification: the draft tree's shape and mask, and a verify pass over planted trees
that keeps exactly the nodes the target agrees with (greedy output unchanged, off-first-branch
nodes moved next to the context), on the real tiny target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.attention._common import predicate_mask
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.decoding import Autoregressive, TokenRecycling
from effbench.kernels_ref.decoding._common import prefill_feeds
from effbench.kernels_ref.decoding.token_recycling import bfs_tree, tree_shape
from effbench.kernels_ref.decoding.tree import DraftTree, TreeVerifyBase, tree_mask
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching

#        root
#       /    \
#      0(a)   1(b)
#     /  \      \
#   2(c) 3(d)   4(e)
#    |
#   5(f)
TREE = DraftTree((10, 11, 12, 13, 14, 15), (-1, -1, 0, 0, 1, 2))


def test_tree_shape_depths_children_and_ancestors() -> None:
    assert TREE.depths == (1, 1, 2, 2, 2, 3)
    assert TREE.children == {-1: {10: 0, 11: 1}, 0: {12: 2, 13: 3}, 1: {14: 4}, 2: {15: 5}}
    anc = TREE.ancestors()
    assert anc[5].nonzero().flatten().tolist() == [0, 2, 5]
    assert anc[4].nonzero().flatten().tolist() == [1, 4]
    assert DraftTree.chain([7, 8, 9]).parents == (-1, 0, 1)
    with pytest.raises(ValueError, match="node 1's parent 3 must be -1 or an earlier node"):
        DraftTree((1, 2), (-1, 3))


def test_tree_mask_sees_the_context_and_the_ancestors_only() -> None:
    base = 5  # context slots 0..4 (the root, the last committed token, at 4)
    got = predicate_mask(tree_mask(base, TREE), base - 1, 1 + len(TREE), base + len(TREE), True)
    assert got[0].tolist() == [True] * 5 + [False] * 6  # the root: the context only
    node5 = got[1 + 5]  # f: the context, a, c and itself
    assert node5.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 7, 10]
    node4 = got[1 + 4]  # e: the context, b and itself
    assert node4.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 6, 9]


@pytest.fixture(scope="module")
def target():
    model, _ = load_checkpoint(EMBEDDED["tiny-target"])
    return model.eval()


def _engine(model, decoder, batch: int = 1) -> Engine:
    return Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                  scheduler=ContinuousBatching(), decoder=decoder,
                  config=EngineConfig(max_batch=batch, max_tokens=1 << 16))  # fmt: skip


PROMPTS = [[1, 40, 41, 42, 43, 44, 45], [1, 300, 301, 302, 303]]
NEW = 12


@pytest.fixture(scope="module")
def greedy(target) -> list[list[int]]:
    with torch.inference_mode():
        res = _engine(target, Autoregressive(), 2).run(
            [Request(i, list(p), NEW) for i, p in enumerate(PROMPTS)])
    return [r.output for r in res.requests]


@dataclass
class Planted(TreeVerifyBase):
    """Plants, under each request's last token, the next ``depth`` greedy tokens along the
    second branch of every node, with a wrong first sibling at each level (so the accepted
    nodes are never the first ones and the cache must be compacted with ``keep``).
    """

    answers: list[list[int]] = field(default_factory=list)
    depth: int = 3

    def prepare(self, ctx) -> None:
        self.reset_counters()

    def step(self, ctx, batch) -> None:
        trees = {}
        for r in batch.decodes:
            want = self.answers[r.rid][len(r.output) : len(r.output) + min(self.depth,
                                                                         r.budget_left - 1)]
            tokens, parents, node = [], [], -1
            for t in want:
                tokens += [(t + 1) % 4000, t]  # a wrong sibling first, then the right one
                parents += [node, node]
                node = len(tokens) - 1
            trees[r.rid] = DraftTree(tuple(tokens), tuple(parents))
        self.verify_trees(ctx, prefill_feeds(batch), batch.decodes, trees)


@pytest.mark.parametrize("batch", [1, 2])
def test_planted_trees_are_accepted_along_the_right_branch(target, greedy, batch) -> None:
    dec = Planted(answers=greedy, depth=3)
    with torch.inference_mode():
        res = _engine(target, dec, batch).run(
            [Request(i, list(p), NEW) for i, p in enumerate(PROMPTS)])
    assert [r.output for r in res.requests] == greedy
    st = res.decoder_stats
    # after the prefill's token, every step accepts its whole planted path and adds the
    # target's own token: 4 + 4 + 3 (the budget's last step plants 2) per request
    assert st["tokens_per_step"] == pytest.approx((NEW - 1) / 3)
    assert st["drafts_accepted"] == len(PROMPTS) * (3 + 3 + 2)
    assert st["drafts_proposed"] == 2 * st["drafts_accepted"]


def test_token_recycling_drafts_from_what_the_target_proposed(target, greedy) -> None:
    dec = TokenRecycling(top=4, width=2, depth=4)
    with torch.inference_mode():
        res = _engine(target, dec).run([Request(i, list(p), NEW) for i, p in enumerate(PROMPTS)])
    assert [r.output for r in res.requests] == greedy
    st = res.decoder_stats
    assert st["storage_bytes"] == target.config.vocab_size * 4 * 4
    assert st["tree_nodes"] == 2 + 2 + 2 + 2 and st["drafts_accepted"] > 0
    # the matrix rows of the tokens it verified are the target's top candidates
    first = dec.matrix[PROMPTS[0][-1]].tolist()
    assert greedy[0][0] == first[0] and len(set(first)) == 4


def test_bfs_tree_follows_the_matrix_and_stops_at_unfilled_rows() -> None:
    m = torch.full((10, 3), -1, dtype=torch.int32)
    m[0] = torch.tensor([1, 2, 3])
    m[1] = torch.tensor([4, 5, -1])
    m[2] = torch.tensor([6, -1, -1])
    tree = bfs_tree(m, 0, tree_shape(2, 3))  # shape (2, 1, 1)
    assert tree.tokens == (1, 2, 4, 6) and tree.parents == (-1, -1, 0, 1)
    assert tree_shape(8, 5) == (8, 4, 2, 1, 1)


def test_aded_table_counts_trigrams_and_explores_the_untried() -> None:
    from effbench.kernels_ref.decoding.aded import ADED, TrigramTable

    t = TrigramTable()
    t.add([1, 2, 3, 1, 2, 3, 1, 2, 4])
    assert t.counts[(1, 2)] == {3: 2, 4: 1} and t.totals[(1, 2)] == 3
    assert t.best((1, 2), 2, explore=0.0) == [3, 4]  # exploitation: the frequent one first
    t.tried[(1, 2, 3)] = 50  # drafted often: its bonus is gone, the untried one leads
    assert t.best((1, 2), 1, explore=2.0) == [4]
    assert t.best((9, 9), 3, explore=1.0) == []
    dec = ADED(width=2, depth=3, explore=0.0)
    dec.table = TrigramTable()
    dec.table.add([5, 6, 7, 8, 5, 6, 9])
    tree = dec.draft([0, 5, 6], depth=3)
    # two chains under the root: 7 then 8 then 5 (the table's 6 7 8 5), and 9 (unseen after)
    assert tree.tokens == (7, 8, 5, 9) and tree.parents == (-1, 0, 1, -1)
    assert dec.table.tried[(5, 6, 7)] == 1 and dec.table.tried[(6, 7, 8)] == 1


def test_aded_reproduces_greedy_and_reports_its_table(target, greedy) -> None:
    from effbench.kernels_ref.decoding import ADED

    with torch.inference_mode():
        res = _engine(target, ADED(), 2).run(
            [Request(i, list(p), NEW) for i, p in enumerate(PROMPTS)])
    assert [r.output for r in res.requests] == greedy
    assert res.decoder_stats["storage_bytes"] > 0


def test_a_tree_above_the_verify_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the engine's verify limit of 256 nodes"):
        TokenRecycling(top=8, width=8, depth=12)


def test_dyspec_grows_trees_by_draft_probability_and_keeps_the_output(target, greedy) -> None:
    """per_round=1 feeds the draft one masked node at a time (the one-query masked path)."""
    from effbench.kernels_ref.decoding import DySpec

    draft, _ = load_checkpoint(EMBEDDED["tiny-draft-1l"])
    for dec in (DySpec(nodes=6, per_round=1, top=3), DySpec(nodes=12, per_round=4)):
        eng = Engine(target, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                     scheduler=ContinuousBatching(), decoder=dec,
                     config=EngineConfig(max_batch=2, max_tokens=1 << 16), draft=draft.eval())
        with torch.inference_mode():
            res = eng.run([Request(i, list(p), NEW) for i, p in enumerate(PROMPTS)])
        assert [r.output for r in res.requests] == greedy
        st = res.decoder_stats
        assert st["tokens_per_step"] > 1.5 and st["mean_tree_nodes"] <= dec.nodes
