"""Retrieval tasks and the long eval set: exact lengths, determinism, answers really there."""

from __future__ import annotations

import pytest
import torch

from effbench.kernels_ref import long_evalset
from effbench.kernels_ref.checkpoint import load_checkpoint
from effbench.kernels_ref.long_figures import eval_haystack, long_perplexity, retrieval_table
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.retrieval import TASKS, RetrievalSpec, make_item, make_items, score_item


@pytest.fixture(scope="module")
def tok():
    return load_checkpoint("tiny-target")[1]


@pytest.fixture(scope="module")
def items():
    return long_evalset.load_long_evalset()


@pytest.fixture(scope="module")
def hay(items, tok):
    return eval_haystack(items, tok)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [128, 1000])
def test_items_have_exact_length_and_canonical_tokens(task, length, hay, tok) -> None:
    spec = RetrievalSpec(task=task, length=length, depth=0.4, items=3,
                         needles=3 if task == "multi-needle" else 1, distractors=2)  # fmt: skip
    for it in make_items(spec, hay):
        assert len(it.prompt_ids) == length and it.prompt_ids[0] == tok.bos_id
        text = tok.decode(it.prompt_ids)
        assert tok.encode(text) == list(it.prompt_ids[1:])  # ids are the text's own encoding
        assert tok.encode(it.answer_text) == list(it.answer_ids)
        # the answer is copied from the needle: it occurs in the prompt right where the needle is
        needle_text = tok.decode(it.prompt_ids[it.needle_position :])
        assert it.answer_text.strip().rstrip("):") in needle_text


def test_generation_is_deterministic_and_seed_dependent(hay) -> None:
    spec = RetrievalSpec(length=300, items=2)
    assert make_items(spec, hay) == make_items(spec, hay)
    other = make_items(RetrievalSpec(length=300, items=2, seed=1), hay)
    assert [i.answer_text for i in other] != [i.answer_text for i in make_items(spec, hay)]


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_depth_places_the_needle(depth, hay) -> None:
    it = make_item(RetrievalSpec(length=2000, depth=depth), 0, hay)
    frac = (it.needle_position - 1) / 2000
    assert abs(frac - depth) < 0.08, (frac, depth)


def test_distractors_differ_only_in_the_number(hay, tok) -> None:
    it = make_item(RetrievalSpec(length=600, distractors=4), 0, hay)
    text = tok.decode(it.prompt_ids)
    key = text.rsplit("\n", 1)[1].split()[0]
    stem = key.rsplit("_", 1)[0]
    defs = [ln.split()[0] for ln in text.split("\n") if ln.startswith(stem + "_") and " = " in ln]
    assert key in defs and len(set(defs)) >= 3  # the needle plus distinct decoys (and the query)


def test_bad_specs_are_refused_with_the_choices(hay) -> None:
    with pytest.raises(ValueError, match="valid tasks: needle, multi-needle, signature"):
        RetrievalSpec(task="haystack")
    with pytest.raises(ValueError, match=r"depth must be in \[0, 1\]"):
        RetrievalSpec(depth=1.5)
    with pytest.raises(ValueError, match="multi-needle needs needles >= 2"):
        RetrievalSpec(task="multi-needle")
    with pytest.raises(ValueError, match="more than the requested length 10; use length >= "):
        make_item(RetrievalSpec(length=10), 0, hay)


def test_scoring_is_exact_match_of_teacher_forced_argmax(hay) -> None:
    it = make_item(RetrievalSpec(length=64), 0, hay)
    model = LlamaModel(LlamaConfig(num_hidden_layers=1, max_position_embeddings=128))
    # make the model a perfect oracle for this item: the argmax at each answer position is the
    # answer token (bias through the output layer is not available, so check both outcomes via
    # the real forward and a hand check of the rule)
    ids = torch.tensor([it.prompt_ids + it.answer_ids[:-1]])
    pred = model(ids)[0, len(it.prompt_ids) - 1 :].argmax(-1).tolist()
    got = score_item(model, it)
    hits = sum(p == a for p, a in zip(pred, it.answer_ids))
    assert got == {"exact": hits == len(it.answer_ids), "token_accuracy": hits / len(it.answer_ids)}


def test_window_forward_equals_dense_when_window_covers_everything() -> None:
    torch.manual_seed(0)
    model = LlamaModel(LlamaConfig(num_hidden_layers=2, max_position_embeddings=64))
    x = torch.randint(0, 4096, (2, 40))
    assert torch.allclose(model(x), model(x, window=40), atol=1e-5)
    assert not torch.allclose(model(x), model(x, window=8), atol=1e-3)
    # a window per layer: through 2 layers of window 8, position i sees back to i - 2 * 7
    y = x.clone()
    y[:, :10] = (y[:, :10] + 1) % 4096
    assert torch.allclose(model(x, window=8)[:, 24:], model(y, window=8)[:, 24:], atol=1e-5)
    assert not torch.allclose(model(x, window=8)[:, 23], model(y, window=8)[:, 23], atol=1e-5)
    with pytest.raises(ValueError, match="window must be >= 1"):
        model(x, window=0)


def test_long_evalset_cuts(items, tok) -> None:
    assert len(items) == long_evalset.N_ITEMS
    assert len({it["source_path"] for it in items}) == len(items)  # one item per file
    for length in long_evalset.LENGTHS:
        pairs = long_evalset.items_at(items, length, tok)
        assert all(len(p) + len(c) == length for p, c in pairs)
        assert all(len(c) == long_evalset.CONTINUATION_TOKENS for _, c in pairs)
    # the shorter prompts are suffixes of the longer: the same continuation point
    for it in items:
        assert it["prompts"]["4096"].endswith(it["prompts"]["1024"])
    with pytest.raises(ValueError, match=r"no 3000-token cut; lengths: \[1024, 2048, 4096\]"):
        long_evalset.items_at(items, 3000, tok)


def test_long_perplexity_and_table(items, tok) -> None:
    model, _ = load_checkpoint("tiny-target")
    got = long_perplexity(model, items[:2], tok, 1024)
    assert got["perplexity"] > 1 and 0 <= got["top1"] <= 1
    rows = [
        {"task": "needle", "length": 512, "depth": d, "mode": m, "exact": e}
        for d, m, e in ((0.0, "full", 1.0), (1.0, "full", 0.5), (0.0, "window256", 0.0))
    ]
    table = retrieval_table(rows)
    assert table[2] == "| needle | 512 | full | 1.00 | 0.50 | 0.75 |"
    assert table[3] == "| needle | 512 | window256 | 0.00 |  | 0.00 |"


def test_grid_rows_name_their_distractors(hay) -> None:
    from effbench.kernels_ref.long_figures import retrieval_grid

    model = LlamaModel(LlamaConfig(num_hidden_layers=1, max_position_embeddings=256))
    rows = retrieval_grid(model, hay, [128], depths=[0.0, 1.0], items=1, distractors=2)
    assert [(r["task"], r["depth"]) for r in rows] == [("needle+2 distractors", 0.0),
                                                       ("needle+2 distractors", 1.0)]
    plain = retrieval_grid(model, hay, [128], depths=[0.5], items=1)
    assert plain[0]["task"] == "needle"
