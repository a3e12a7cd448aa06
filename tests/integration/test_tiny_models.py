"""The shipped tiny checkpoints: loadable by effbench and by transformers, small, and trained."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from effbench.kernels_ref import evalset, train
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint, resolve_model
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer

# Measured when the shipped checkpoints were trained (see their README.md); the bound leaves room
# for nothing but a broken model or a broken loader.
MEASURED_TARGET_EVAL_PPL = 31.786
MAX_SHIPPED_BYTES = 40 * 1024 * 1024  # every shipped checkpoint and data file together

shipped = pytest.mark.skipif(
    not all((p / "config.json").is_file() for p in EMBEDDED.values()),
    reason="shipped tiny checkpoints are missing (run `effbench train-tiny`)",
)


@pytest.fixture(scope="module")
def target() -> tuple[LlamaModel, Tokenizer]:
    model, tok = load_checkpoint("tiny-target")
    assert tok is not None
    return model, tok


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return evalset.load_evalset()


@shipped
def test_shipped_files_are_small() -> None:
    files = [f for p in EMBEDDED.values() for f in p.iterdir()]
    files += list(evalset.DEFAULT_PATH.parent.iterdir())  # eval, long_eval, editing sets
    assert sum(f.stat().st_size for f in files) < MAX_SHIPPED_BYTES
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth")]


@shipped
def test_evalset_shape(items: list[dict]) -> None:
    assert len(items) == 64
    assert len({it["id"] for it in items}) == 64
    assert all(set(it) == {"id", "source", "prompt", "continuation"} for it in items)


@shipped
def test_eval_items_reencode_exactly(target: tuple, items: list[dict]) -> None:
    _, tok = target
    for it in items:
        p, c = tok.encode(it["prompt"]), tok.encode(it["continuation"])
        assert 88 <= len(p) <= 104 and 56 <= len(c) <= 72
        assert tok.encode(it["prompt"] + it["continuation"]) == p + c


@shipped
def test_draft_is_small_and_shares_tokenizer(target: tuple) -> None:
    draft, draft_tok = load_checkpoint("tiny-draft")
    model, tok = target
    assert draft.config.num_parameters() < 1_000_000
    assert sum(p.numel() for p in draft.parameters()) < 1_000_000
    assert 1_000_000 < model.config.num_parameters() < 10_000_000
    assert draft.config.vocab_size == model.config.vocab_size
    text = "for key, value in sorted(mapping.items()):\n"
    assert draft_tok is not None and draft_tok.encode(text) == tok.encode(text)


@shipped
@pytest.mark.parametrize("name", list(EMBEDDED))
def test_transformers_agrees(name: str, items: list[dict]) -> None:
    transformers = pytest.importorskip("transformers")
    path: Path = resolve_model(name)
    ours, tok = load_checkpoint(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    for it in items[:3]:
        ids = tok.encode(it["prompt"] + it["continuation"])
        assert hf_tok(it["prompt"] + it["continuation"])["input_ids"] == ids
        assert hf_tok.decode(ids) == tok.decode(ids)
        x = torch.tensor([[tok.bos_id, *ids]])
        with torch.no_grad():
            torch.testing.assert_close(ours(x), hf.eval()(x).logits, atol=1e-4, rtol=0)


@shipped
def test_target_is_trained(target: tuple, items: list[dict]) -> None:
    model, tok = target
    total, count = evalset.continuation_nll(model, tok, items)
    ppl = math.exp(total / count)
    assert ppl < 2 * MEASURED_TARGET_EVAL_PPL
    assert ppl < model.config.vocab_size / 50


def test_quick_pipeline_is_deterministic(tmp_path: Path) -> None:
    """``train-tiny --quick`` runs end to end, and twice gives byte-identical weights."""
    assert train.main(["--quick", "--out", str(tmp_path / "a")]) == 0
    summary = train.train_tiny(tmp_path / "b", train.QUICK_RECIPE, log=lambda _: None)
    assert 0.0 <= summary["draft"]["greedy_acceptance_vs_target"] <= 1.0
    for name in ("tiny-target", "tiny-draft"):
        a, b = (tmp_path / d / "checkpoints" / name for d in ("a", "b"))
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        assert (a / "README.md").is_file()
        load_checkpoint(a)
    for name in ("tiny-long", "tiny-draft-1l"):  # the later stages ran from a's target
        path = tmp_path / "a" / "checkpoints" / name
        model, _ = load_checkpoint(path)
        assert (path / "README.md").is_file()
    assert model.config.num_hidden_layers == 1
    assert (tmp_path / "a" / "data" / "long_eval.jsonl").is_file()
    eval_a = (tmp_path / "a" / "data" / "eval.jsonl").read_text()
    assert eval_a == (tmp_path / "b" / "data" / "eval.jsonl").read_text()


@shipped
def test_long_model_uses_context_past_the_window() -> None:
    """tiny-long covers 4096 positions and its card's figures show full attention ahead."""
    import json

    model, _ = load_checkpoint("tiny-long")
    assert model.config.max_position_embeddings == 4096
    figs = json.loads((resolve_model("tiny-long") / "figures.json").read_text())
    at2k = figs["perplexity"]["2048"]
    assert at2k["full"]["perplexity"] < at2k["window256"]["perplexity"]


@shipped
def test_one_layer_draft_agrees_with_the_target_more(target: tuple, items: list[dict]) -> None:
    model, tok = target
    rates = {name: evalset.greedy_acceptance(model, load_checkpoint(name)[0], tok, items[:8], 32)
             for name in ("tiny-draft", "tiny-draft-1l")}  # fmt: skip
    assert rates["tiny-draft-1l"] > rates["tiny-draft"], rates
