"""A draft model must share the target's tokenizer: refused before any work, naming both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from effbench.kernels_ref.checkpoint import EMBEDDED
from effbench.suite import runner
from effbench.suite.errors import ConfigError
from effbench.suite.presets import parse

PRESET = """
[run]
name = "draft-check"
model = "tiny"
draft = "{draft}"
[engine]
prompts = 1
batch = 1
max_new_tokens = 4
[[bench]]
technique = "speculative"
levels = ["engine"]
"""


def test_a_draft_with_another_tokenizer_is_refused(tmp_path: Path) -> None:
    draft = tmp_path / "other-draft"
    shutil.copytree(EMBEDDED["tiny-draft"], draft)
    tok = json.loads((draft / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[100:102]  # two ids swapped: same size, other text
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (draft / "tokenizer.json").write_text(json.dumps(tok))
    text = PRESET.format(draft=draft)
    with pytest.raises(ConfigError, match="has a different tokenizer.json from the target "
                                          "'tiny': a draft must share"):  # fmt: skip
        runner.run(parse(text, "p.toml"), results=str(tmp_path / "res"), progress=False,
                   log=lambda _: None)  # fmt: skip
    assert not list((tmp_path / "res").glob("runs/*"))  # refused before any run began


def test_a_draft_with_another_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vocabulary of 128256 tokens, the target 'tiny' 4096"):
        runner.run(parse(PRESET.format(draft="llama-3.2-1b"), "p.toml"),
                   results=str(tmp_path / "res"), progress=False, log=lambda _: None)
