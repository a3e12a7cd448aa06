"""The long-context evaluation set: held-out files cut at 1K, 2K and 4K tokens of context.

Each item is one held-out stdlib file, one continuation point in it, and three prompts ending at
that point: the preceding 1024, 2048 and 4096 tokens' worth of text (minus ``bos`` and the
continuation, so ``[bos] + prompt + continuation`` is exactly 1024, 2048 or 4096 ids). The
continuation (64 tokens) is the same for every length, so perplexity and top-1 agreement per
context length measure what the extra context is worth, on the same tokens.

Like ``eval.jsonl`` it is committed (``kernels_ref/data/long_eval.jsonl``): the stdlib differs
between Python versions, and figures must not change with the machine. It is also the committed
source of haystack text for the retrieval tasks (:func:`haystack_stream`), for the same reason.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from effbench.kernels_ref.corpus import Document
from effbench.kernels_ref.evalset import read_jsonl, write_jsonl
from effbench.kernels_ref.tokenizer import Tokenizer

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "long_eval.jsonl"
LENGTHS = (1024, 2048, 4096)
CONTINUATION_TOKENS = 64
N_ITEMS = 16


def _stable(tok: Tokenizer, prompt_ids: list[int], cont_ids: list[int]) -> tuple[str, str] | None:
    prompt, cont = tok.decode(prompt_ids), tok.decode(cont_ids)
    if (
        tok.encode(prompt) == prompt_ids
        and tok.encode(cont) == cont_ids
        and (tok.encode(prompt + cont) == prompt_ids + cont_ids)
    ):
        return prompt, cont
    return None


def build_long_evalset(
    heldout: Sequence[Document],
    tok: Tokenizer,
    n_items: int = N_ITEMS,
    lengths: Sequence[int] = LENGTHS,
    n_cont: int = CONTINUATION_TOKENS,
    seed: int = 0,
) -> list[dict]:
    """One item per long-enough held-out file (up to ``n_items``), deterministic from ``seed``.

    The continuation point is drawn at or after the longest prompt, then moved forward until
    every prompt and the continuation re-encode to exactly their ids (a cut inside a multi-byte
    merge would otherwise change the tokens).
    """
    rng = random.Random(seed)
    longest = max(lengths) - 1 - n_cont
    out: list[dict] = []
    docs = [(p, t, ids) for (p, t), ids in zip(heldout, tok.encode_batch([t for _, t in heldout]))]
    docs = [d for d in docs if len(d[2]) >= longest + n_cont + 16]
    rng.shuffle(docs)
    for path, _, ids in docs:
        if len(out) == n_items:
            break
        start = rng.randrange(longest, len(ids) - n_cont - 15)
        for pos in range(start, min(start + 64, len(ids) - n_cont)):
            cont_ids = ids[pos : pos + n_cont]
            cuts = {}
            for length in lengths:
                n_prompt = length - 1 - n_cont
                cut = _stable(tok, ids[pos - n_prompt : pos], cont_ids)
                if cut is None:
                    break
                cuts[str(length)] = cut[0]
            else:
                out.append({"source_path": path, "position": pos, "prompts": cuts,
                            "continuation": tok.decode(cont_ids)})  # fmt: skip
                break
    return out


def write_long_evalset(items: Sequence[dict], path: Path = DEFAULT_PATH) -> None:
    """Write items as JSON lines (UTF-8, one item per line)."""
    write_jsonl(items, path)


def load_long_evalset(path: str | Path | None = None) -> list[dict]:
    """Read the long evaluation set (by default the shipped ``data/long_eval.jsonl``)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    return read_jsonl(path, "long evaluation set", "run `effbench train-tiny`")


def items_at(
    items: Sequence[dict], length: int, tok: Tokenizer
) -> list[tuple[list[int], list[int]]]:
    """``([bos] + prompt ids, continuation ids)`` of every item at context ``length``."""
    key = str(length)
    if not items or key not in items[0]["prompts"]:
        have = sorted(int(k) for k in items[0]["prompts"]) if items else []
        raise ValueError(f"the long eval set has no {length}-token cut; lengths: {have}")
    return [([tok.bos_id, *tok.encode(it["prompts"][key])], tok.encode(it["continuation"]))
            for it in items]  # fmt: skip


def haystack_stream(items: Sequence[dict], tok: Tokenizer) -> torch.Tensor:
    """The longest prompt of every item joined by blank lines, encoded as one text.

    Committed held-out code; one text (no ``eos`` between files) so any window of it decodes
    and re-encodes to the same ids.
    """
    longest = str(max(int(k) for k in items[0]["prompts"]))
    text = "\n\n".join(it["prompts"][longest] for it in items)
    return torch.tensor(tok.encode(text), dtype=torch.long)
