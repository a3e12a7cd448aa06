"""The tiny models' training corpus: the running interpreter's own standard-library source.

Why the stdlib: it is present on every machine that runs effbench, needs no download, is
permissively licensed, and is real code of a single language, so a few-million-parameter model
learns something measurable from it in minutes on a CPU. The split is by file (a hash of the
relative path), so held-out text never shares a file with training text, and the split of a
given file is the same on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
MAX_FILE_BYTES = 200_000
HELDOUT_PER_MILLE = 50  # about 5% of files are held out

Document = tuple[str, str]  # (relative posix path, source text)


def stdlib_root() -> Path:
    """Directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(relpath: str) -> bool:
    """Whether a file belongs to the held-out split; depends only on its relative path."""
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < HELDOUT_PER_MILLE


def iter_files(root: Path | None = None) -> list[Path]:
    """Eligible .py files under ``root`` (the stdlib by default), sorted by relative path."""
    root = root or stdlib_root()
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(rel.parts[:-1]) or not path.is_file():
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        out.append(path)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def load_documents(root: Path | None = None) -> list[Document]:
    """All eligible files as (relpath, text); files that are not valid UTF-8 are skipped."""
    root = root or stdlib_root()
    docs = []
    for path in iter_files(root):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            docs.append((path.relative_to(root).as_posix(), text))
    return docs


def split_documents(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """Partition documents into (train, heldout) by file, preserving order."""
    train = [d for d in docs if not is_heldout(d[0])]
    heldout = [d for d in docs if is_heldout(d[0])]
    return train, heldout


def train_documents(root: Path | None = None) -> list[Document]:
    """Return the training split."""
    return split_documents(load_documents(root))[0]


def heldout_documents(root: Path | None = None) -> list[Document]:
    """Return the held-out split (about 5% of files)."""
    return split_documents(load_documents(root))[1]
