"""The stdlib corpus split and the byte-level BPE tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from effbench.kernels_ref import corpus
from effbench.kernels_ref.tokenizer import Tokenizer, train_bpe


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_excludes_tests_site_packages_and_big_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", "x = 1\n")
    _write(tmp_path, "pkg/b.py", "y = 2\n")
    _write(tmp_path, "test/t.py", "t = 0\n")
    _write(tmp_path, "pkg/tests/t.py", "t = 0\n")
    _write(tmp_path, "idlelib/idle_test/t.py", "t = 0\n")
    _write(tmp_path, "site-packages/p/m.py", "m = 0\n")
    _write(tmp_path, "big.py", "#" * (corpus.MAX_FILE_BYTES + 1))
    _write(tmp_path, "notes.txt", "not python")
    (tmp_path / "latin.py").write_bytes(b"s = '\xe9'\n")
    rels = [rel for rel, _ in corpus.load_documents(tmp_path)]
    assert rels == ["a.py", "pkg/b.py"]


@pytest.fixture(scope="module")
def stdlib_docs() -> list[corpus.Document]:
    return corpus.load_documents()


def test_split_is_by_file_disjoint_and_deterministic(stdlib_docs: list) -> None:
    train, heldout = corpus.split_documents(stdlib_docs)
    train_rels = {rel for rel, _ in train}
    heldout_rels = {rel for rel, _ in heldout}
    assert not train_rels & heldout_rels
    assert len(train) + len(heldout) == len(stdlib_docs)
    assert 0.01 < len(heldout) / len(stdlib_docs) < 0.12
    assert all(corpus.is_heldout(rel) for rel in heldout_rels)
    again_train, again_heldout = corpus.split_documents(corpus.load_documents())
    assert again_train == train and again_heldout == heldout
    assert not any("/test/" in f"/{rel}" or "/tests/" in f"/{rel}" for rel in train_rels)


def test_split_depends_only_on_path() -> None:
    assert corpus.is_heldout("json/decoder.py") == corpus.is_heldout("json/decoder.py")
    flags = [corpus.is_heldout(f"m{i}.py") for i in range(4000)]
    assert 0.03 < sum(flags) / len(flags) < 0.07


@pytest.fixture(scope="module")
def small_tokenizer(stdlib_docs: list) -> Tokenizer:
    texts = [text for _, text in stdlib_docs[:20]]
    return Tokenizer(train_bpe(texts, vocab_size=400))


def test_special_ids(small_tokenizer: Tokenizer) -> None:
    tok = small_tokenizer
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size <= 400


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n    return x + 1\n",
        "  leading spaces, tabs\t and trailing \n\n",
        "unicode: héllo wörld ✓ 日本語 \U0001f600",
        "",
    ],
)
def test_round_trip(small_tokenizer: Tokenizer, text: str) -> None:
    ids = small_tokenizer.encode(text)
    assert all(i >= 3 for i in ids)  # no special tokens added implicitly
    assert small_tokenizer.decode(ids) == text


def test_save_and_reload(small_tokenizer: Tokenizer, tmp_path: Path) -> None:
    small_tokenizer.save(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).is_file()
    again = Tokenizer.from_dir(tmp_path)
    text = "import os\nprint(os.getcwd())\n"
    assert again.encode(text) == small_tokenizer.encode(text)
    assert again.decode([again.bos_id, *again.encode(text), again.eos_id]) == text


def test_from_dir_without_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
