"""Byte-level BPE tokenizer for the tiny models, trained with the ``tokenizers`` library.

Saved as ``tokenizer.json`` plus ``tokenizer_config.json`` and ``special_tokens_map.json`` so
``transformers.AutoTokenizer.from_pretrained(dir)`` loads it as a ``PreTrainedTokenizerFast``.
The :class:`Tokenizer` wrapper is what effbench itself uses: plain ids in, plain text out, with
no special tokens added implicitly (callers prepend ``bos_id`` themselves), so the same ids come
out of both libraries.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2
DEFAULT_VOCAB_SIZE = 4096
MODEL_MAX_LENGTH = 1024


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> HFTokenizer:
    """Train a byte-level BPE on ``texts``; deterministic for a given input order."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: HFTokenizer, out_dir: Path) -> None:
    """Write tokenizer.json and the two small files that transformers' AutoTokenizer reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
    }
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class Tokenizer:
    """Thin wrapper over a ``tokenizers.Tokenizer``: encode/decode and the special ids."""

    def __init__(self, tok: HFTokenizer) -> None:
        self._tok = tok
        self.pad_id = self._special_id(PAD, 0)
        self.bos_id = self._special_id(BOS, 1)
        self.eos_id = self._special_id(EOS, 2)

    def _special_id(self, token: str, default: int) -> int:
        tid = self._tok.token_to_id(token)
        return default if tid is None else tid

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a directory holding tokenizer.json (a checkpoint or tokenizer dir)."""
        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise ValueError(f"no tokenizer.json in {path}")
        return cls(HFTokenizer.from_file(str(file)))

    @property
    def backend(self) -> HFTokenizer:
        """The underlying ``tokenizers.Tokenizer`` (for saving or batch encoding)."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (parallel in the Rust backend)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are dropped."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def save(self, out_dir: Path) -> None:
        """Write the tokenizer files into ``out_dir``."""
        save_tokenizer(self._tok, out_dir)
