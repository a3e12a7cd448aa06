"""The fixed evaluation set of the tiny models, and the quality figures measured on it.

Items are (prompt, continuation) pairs cut from held-out stdlib files at token boundaries of the
shipped tokenizer, chosen so that re-encoding either text gives back exactly the cut ids. The
set is committed as ``kernels_ref/data/eval.jsonl``: the stdlib differs between Python versions,
and quality figures must not change with the machine that runs the benchmark.

Conventions shared by every figure here: a sequence is scored as ``[bos] + prompt + continuation``
with dense causal attention (``LlamaModel.forward``), and greedy means argmax of the logits.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from effbench.kernels_ref.corpus import Document
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "eval.jsonl"
N_ITEMS = 64
PROMPT_TOKENS = 96
CONTINUATION_TOKENS = 64
_SHIFTS = (0, -1, 1, -2, 2, -3, 3, -4, 4)


def _stable_cut(
    tok: Tokenizer, ids: list[int], start: int, n_prompt: int, n_cont: int
) -> tuple[str, str] | None:
    """Texts of a prompt/continuation near the requested sizes that re-encode to the same ids."""
    for dp in _SHIFTS:
        for dc in _SHIFTS:
            mid, end = start + n_prompt + dp, start + n_prompt + dp + n_cont + dc
            if end > len(ids):
                continue
            p_ids, c_ids = ids[start:mid], ids[mid:end]
            prompt, cont = tok.decode(p_ids), tok.decode(c_ids)
            if not prompt.strip() or not cont.strip():
                continue
            if (
                tok.encode(prompt) == p_ids
                and tok.encode(cont) == c_ids
                and tok.encode(prompt + cont) == p_ids + c_ids
            ):
                return prompt, cont
    return None


def build_evalset(
    heldout: Sequence[Document],
    tok: Tokenizer,
    n_items: int = N_ITEMS,
    prompt_tokens: int = PROMPT_TOKENS,
    continuation_tokens: int = CONTINUATION_TOKENS,
    seed: int = 0,
) -> list[dict]:
    """Cut ``n_items`` non-overlapping items from held-out files, round-robin over the files."""
    span = prompt_tokens + continuation_tokens + 2 * max(_SHIFTS)
    encoded = [(rel, tok.encode(text)) for rel, text in sorted(heldout)]
    encoded = [(rel, ids) for rel, ids in encoded if len(ids) >= span]
    if not encoded:
        raise ValueError("no held-out file is long enough to cut an evaluation item from")
    rng = random.Random(seed)
    rng.shuffle(encoded)
    taken: dict[str, list[tuple[int, int]]] = defaultdict(list)
    items: list[dict] = []
    failures = 0
    while len(items) < n_items:
        progressed = False
        for rel, ids in encoded:
            if len(items) >= n_items:
                break
            start = rng.randrange(0, len(ids) - span + 1)
            if any(start < b and a < start + span for a, b in taken[rel]):
                continue
            cut = _stable_cut(tok, ids, start, prompt_tokens, continuation_tokens)
            if cut is None:
                continue
            taken[rel].append((start, start + span))
            items.append({"source": rel, "prompt": cut[0], "continuation": cut[1]})
            progressed = True
        failures = 0 if progressed else failures + 1
        if failures > 50:
            raise ValueError(f"could only cut {len(items)} of {n_items} evaluation items")
    return [{"id": f"eval-{i:03d}", **item} for i, item in enumerate(items)]


def write_jsonl(items: Sequence[dict], path: str | Path) -> None:
    """Write items as JSON lines (UTF-8, one object per line, stable key order).

    The format of every committed item set: eval, long eval and editing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def read_jsonl(path: Path, what: str, remedy: str) -> list[dict]:
    """Read a JSON-lines item set; a missing file names ``what`` and the ``remedy``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} ({remedy})")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_evalset(items: Sequence[dict], path: Path) -> None:
    """Write the evaluation set as JSON lines."""
    write_jsonl(items, path)


def load_evalset(path: str | Path | None = None) -> list[dict]:
    """Read the evaluation set (the shipped ``kernels_ref/data/eval.jsonl`` by default)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    return read_jsonl(path, "evaluation set", "run `effbench train-tiny`")


# ----------------------------------------------------------------------------- quality figures


@torch.no_grad()
def continuation_nll(
    model: LlamaModel, tok: Tokenizer, items: Sequence[dict]
) -> tuple[float, int]:
    """Return the summed NLL (nats) of the continuations given their prompts, and their length."""
    total, count = 0.0, 0
    for item in items:
        p = [tok.bos_id, *tok.encode(item["prompt"])]
        c = tok.encode(item["continuation"])
        ids = torch.tensor([p + c], device=model.device)
        logits = model(ids[:, :-1])[0, len(p) - 1 :].float()
        total += F.cross_entropy(logits, ids[0, len(p) :], reduction="sum").item()
        count += len(c)
    return total, count


def continuation_perplexity(model: LlamaModel, tok: Tokenizer, items: Sequence[dict]) -> float:
    """Perplexity of the eval continuations given their prompts."""
    total, count = continuation_nll(model, tok, items)
    return math.exp(total / count)


@torch.no_grad()
def stream_perplexity(
    model: LlamaModel, stream: torch.Tensor, bos_id: int, seq_len: int, batch: int = 16
) -> float:
    """Perplexity of a token stream cut into non-overlapping windows, each led by ``bos``."""
    n = stream.numel() // seq_len
    windows = stream[: n * seq_len].view(n, seq_len).to(model.device)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        w = windows[i : i + batch]
        inputs = torch.cat([torch.full_like(w[:, :1], bos_id), w[:, :-1]], dim=1)
        logits = model(inputs).float()
        total += F.cross_entropy(logits.flatten(0, 1), w.flatten(), reduction="sum").item()
        count += w.numel()
    return math.exp(total / count)


@torch.no_grad()
def greedy_continuations(
    model: LlamaModel, tok: Tokenizer, items: Sequence[dict], n_new: int = CONTINUATION_TOKENS
) -> list[tuple[list[int], list[int]]]:
    """Per item, ([bos] + prompt ids, the model's greedy ``n_new`` tokens), in item order."""
    order = {id(item): k for k, item in enumerate(items)}
    out: list[tuple[list[int], list[int]] | None] = [None] * len(items)
    by_len: dict[int, list[dict]] = defaultdict(list)
    for item in items:
        by_len[len(tok.encode(item["prompt"]))].append(item)
    for group in by_len.values():
        prompts = [[tok.bos_id, *tok.encode(it["prompt"])] for it in group]
        ids = torch.tensor(prompts, device=model.device)
        for _ in range(n_new):
            nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
        plen = len(prompts[0])
        for it, p, row in zip(group, prompts, ids.tolist()):
            out[order[id(it)]] = (p, row[plen:])
    return [o for o in out if o is not None]


@torch.no_grad()
def greedy_acceptance(
    target: LlamaModel,
    draft: LlamaModel,
    tok: Tokenizer,
    items: Sequence[dict],
    n_new: int = CONTINUATION_TOKENS,
) -> float:
    """Fraction of the target's greedy tokens that the draft's teacher-forced argmax matches.

    For each prompt the target greedily continues ``n_new`` tokens; the draft then reads
    ``[bos] + prompt + target tokens`` and, at each of those ``n_new`` positions, its argmax over
    the same prefix is compared with the target's token.
    """
    hits, total = 0, 0
    for prefix, cont in greedy_continuations(target, tok, items, n_new):
        ids = torch.tensor([prefix + cont], device=draft.device)
        pred = draft(ids[:, :-1])[0, len(prefix) - 1 :].argmax(-1)
        hits += int((pred == ids[0, len(prefix) :]).sum())
        total += len(cont)
    return hits / total
