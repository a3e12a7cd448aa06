"""Saving and loading Llama-family checkpoints (safetensors only) and random real-shape models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from effbench.kernels_ref import checkpoint as ckpt
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer, train_bpe

SMALL = dict(
    vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip


def _model(tied: bool = True, seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    model = LlamaModel(LlamaConfig(**SMALL, tie_word_embeddings=tied))
    ckpt.init_weights(model)
    return model.eval()


def _bf16_rounded(model: LlamaModel) -> LlamaModel:
    """The same model with weights rounded through bfloat16, as a checkpoint stores them."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(train_bpe(["def f(x):\n    return x * 2\n"] * 5, vocab_size=280))


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip(tmp_path: Path, tok: Tokenizer, tied: bool) -> None:
    model = _model(tied)
    out = ckpt.save_checkpoint(model, tmp_path / "m", tok, "# card\n")
    names = set(load_file(str(out / "model.safetensors")))
    assert ("lm_head.weight" in names) != tied
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert (out / "README.md").read_text() == "# card\n"
    loaded, loaded_tok = ckpt.load_checkpoint(out)
    assert loaded.config == model.config
    assert loaded_tok is not None and loaded_tok.encode("x * 2") == tok.encode("x * 2")
    if tied:
        assert loaded.lm_head.weight is loaded.embed_tokens.weight
    ids = torch.randint(3, 300, (2, 17))
    with torch.no_grad():
        assert torch.equal(loaded(ids), _bf16_rounded(model)(ids))


def test_tokenizer_copied_from_dir(tmp_path: Path, tok: Tokenizer) -> None:
    tok.save(tmp_path / "tok")
    out = ckpt.save_checkpoint(_model(), tmp_path / "m", tmp_path / "tok")
    assert Tokenizer.from_dir(out).encode("return") == tok.encode("return")
    _, none_tok = ckpt.load_checkpoint(ckpt.save_checkpoint(_model(), tmp_path / "n", None))
    assert none_tok is None


def test_sharded_checkpoint(tmp_path: Path) -> None:
    model = _model(tied=False)
    single = ckpt.save_checkpoint(model, tmp_path / "single", None)
    tensors = load_file(str(single / "model.safetensors"))
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((single / "config.json").read_text())
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}  # fmt: skip
    weight_map = {}
    for fname, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(shard_dir / fname))
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {}, "weight_map": weight_map}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded, _ = ckpt.load_checkpoint(shard_dir)
    ids = torch.randint(3, 300, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids), _bf16_rounded(model)(ids))
    (shard_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match="missing shard"):
        ckpt.load_checkpoint(shard_dir)


def test_matches_transformers_written_checkpoint(tmp_path: Path) -> None:
    """A checkpoint saved by transformers itself (v5 config layout, Llama-3 RoPE scaling)."""
    transformers = pytest.importorskip("transformers")
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}  # fmt: skip
    hf_cfg = transformers.LlamaConfig(**SMALL, rope_scaling=rope, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = ckpt.load_checkpoint(tmp_path / "hf")
    assert ours.config.rope_theta == 500000.0
    ids = torch.randint(3, 300, (2, 40))
    with torch.no_grad():
        expected = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf")(ids).logits
        torch.testing.assert_close(ours(ids), expected, atol=1e-4, rtol=1e-4)


def test_error_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope")


def test_error_no_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config.json"):
        ckpt.load_checkpoint(tmp_path)


def test_error_not_llama(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2' .* not Llama-family"):
        ckpt.load_checkpoint(tmp_path)


def test_error_pickle_only(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_model().config.to_hf()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match="pickle .bin checkpoints are refused"):
        ckpt.load_checkpoint(tmp_path)


def test_error_wrong_shapes(tmp_path: Path) -> None:
    out = ckpt.save_checkpoint(_model(), tmp_path / "m", None)
    cfg = json.loads((out / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has shape"):
        ckpt.load_checkpoint(out)


def test_random_model_known_shape() -> None:
    cfg = ckpt.config_from_dict(ckpt.KNOWN_CONFIGS["llama-3.2-1b"], max_positions=8192)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (2048, 16, 8)
    assert cfg.max_position_embeddings == 8192 and cfg.rope_theta == 500000.0
    assert 1.2e9 < cfg.num_parameters() < 1.3e9
    with pytest.raises(ValueError, match="unknown model shape"):
        ckpt.random_model("gpt-5")


def test_random_model_from_dict() -> None:
    model, tok = ckpt.random_model({**SMALL, "rope_theta": 500000.0}, seed=1)
    assert tok is None and model.config.rope_theta == 500000.0
    again, _ = ckpt.random_model({**SMALL, "rope_theta": 500000.0}, seed=1)
    ids = torch.randint(3, 300, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


def test_resolve_model(tmp_path: Path) -> None:
    assert ckpt.resolve_model("tiny") == ckpt.EMBEDDED["tiny-target"]
    assert ckpt.resolve_model("tiny-draft") == ckpt.EMBEDDED["tiny-draft"]
    assert ckpt.EMBEDDED["tiny-target"].parent.name == "checkpoints"
    assert ckpt.resolve_model(tmp_path) == tmp_path
