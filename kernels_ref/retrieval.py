"""Synthetic long-context retrieval tasks in code form, generated from a seed and scored exactly.

Why: a sparse-attention or eviction technique is only tested when the answer depends on a token
far back. Each item is a real stretch of standard-library code (the haystack) with a needle
inserted at a chosen depth, and a query at the end whose answer can only be copied from the
needle:

* ``needle`` - ``RETRY_LIMIT_48 = 48213`` somewhere in the module, and at the end the constant
  is assigned again, ``RETRY_LIMIT_48 =``; the answer is `` 48213``. (The query repeats the
  needle's own tokens, so it is a pure copy from far back: an ``assert RETRY_LIMIT_48 ==`` form
  was tried first and the 4-layer model learned it far more slowly.)
* ``multi-needle`` - ``needles`` such definitions under unrelated names; one is asked for.
* ``signature`` - ``def load_config_17(path, mode=None):`` early, and at the end the function is
  written again as ``def load_config_17(``; the answer is the parameter list ``path, mode=None):``.

``distractors`` adds definitions whose names differ from the queried one only in the trailing
number (``RETRY_LIMIT_84``), with different values, at random places.

Items are assembled at the token level so that ``length`` is exact: ``[bos] + haystack with the
needles + query`` has exactly ``length`` ids, and the answer follows. Needles and the query start
with a newline and go in front of a haystack token that itself starts a line, so the text reads
as code and its ids are the tokenizer's own encoding of that text. Depth ``d`` puts the queried
needle at the line boundary nearest ``d`` of the way through the haystack (0: right after
``bos``; 1: right before the query).

Scoring (``score_item``) is exact match: the model, reading ``prompt + answer`` teacher-forced,
must predict every answer token by argmax, which is the same as greedy decoding reproducing the
answer. Attention may be restricted to a sliding window to show what a short-context method
loses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer

TASKS = ("needle", "multi-needle", "signature")

_WORDS = (
    "RETRY", "LIMIT", "BUFFER", "TIMEOUT", "CACHE", "MAX", "MIN", "DEFAULT", "BLOCK", "PAGE",
    "QUEUE", "STACK", "HEADER", "FRAME", "SOCKET", "THREAD", "LOCK", "TOKEN", "BATCH", "CHUNK",
    "WINDOW", "OFFSET", "INDEX", "COUNT", "DEPTH", "WIDTH", "HEIGHT", "SCALE", "RATE", "DELAY",
)  # fmt: skip
_VERBS = ("load", "parse", "build", "check", "merge", "split", "encode", "decode", "read", "write",
          "format", "update", "resolve", "collect", "render", "validate")  # fmt: skip
_NOUNS = ("config", "header", "record", "buffer", "frame", "entry", "table", "block", "path",
          "token", "stream", "cache", "queue", "state", "field", "module")  # fmt: skip
_PARAMS = (
    "path", "mode", "data", "name", "size", "key", "value", "strict", "encoding", "limit",
    "timeout", "items", "prefix", "default", "callback", "flags", "offset", "count",
)  # fmt: skip
_DEFAULTS = ("None", "True", "False", "0", "1", "''", "8", "64")


@dataclass(frozen=True)
class RetrievalSpec:
    """One cell of the retrieval grid: task, prompt length in tokens, needle depth, and items."""

    task: str = "needle"
    length: int = 1024
    depth: float = 0.5
    needles: int = 1
    distractors: int = 0
    items: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"unknown retrieval task {self.task!r}; valid tasks: {', '.join(TASKS)}"
            )
        if not 0.0 <= self.depth <= 1.0:
            raise ValueError(f"retrieval depth must be in [0, 1], got {self.depth}")
        if self.task == "multi-needle" and self.needles < 2:
            raise ValueError(f"multi-needle needs needles >= 2, got {self.needles}")
        if self.task != "multi-needle" and self.needles != 1:
            raise ValueError(f"needles applies to task 'multi-needle' only, got {self.needles}")
        if self.distractors < 0 or self.items < 1 or self.length < 2:
            raise ValueError(
                f"need distractors >= 0, items >= 1 and length >= 2, got {self.distractors}, "
                f"{self.items} and {self.length}"
            )


@dataclass(frozen=True)
class RetrievalItem:
    """A prompt (ids, ``bos`` first, exactly ``spec.length`` long) and the answer to copy."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    answer_text: str
    needle_position: int  # index in prompt_ids where the queried needle's text starts
    spec: RetrievalSpec

    def to_dict(self) -> dict:
        """JSON-ready form (the spec flattened)."""
        return {
            "prompt_ids": list(self.prompt_ids),
            "answer_ids": list(self.answer_ids),
            "answer_text": self.answer_text,
            "needle_position": self.needle_position,
            **{f"spec_{k}": v for k, v in asdict(self.spec).items()},
        }


class Haystack:
    """A token stream of code with the positions where a line starts, to cut and insert at."""

    def __init__(self, tok: Tokenizer, stream: torch.Tensor | Sequence[int]) -> None:
        self.tok = tok
        self.ids = torch.as_tensor(stream, dtype=torch.long)
        self.starts_line = torch.tensor(
            [tok.decode([i]).startswith("\n") for i in range(tok.vocab_size)], dtype=torch.bool
        )
        self.line_starts = torch.nonzero(self.starts_line[self.ids]).flatten()
        if self.line_starts.numel() < 2:
            raise ValueError("haystack stream has no line boundaries")

    def window(self, n: int, rng: random.Random) -> list[int]:
        """``n`` consecutive ids starting at a random line start (the end may cut a line)."""
        last = int(torch.searchsorted(self.line_starts, self.ids.numel() - n, right=True))
        if last < 1:
            raise ValueError(f"haystack of {self.ids.numel()} tokens is shorter than {n}")
        s = int(self.line_starts[rng.randrange(0, last)])
        return self.ids[s : s + n].tolist()

    def line_starts_in(self, ids: Sequence[int]) -> list[int]:
        """Indices of ``ids`` whose token starts a line."""
        return (
            torch.nonzero(self.starts_line[torch.as_tensor(ids, dtype=torch.long)])
            .flatten()
            .tolist()
        )


def _needle(task: str, rng: random.Random, name_words: tuple[str, str] | None = None):
    """(needle text, query text, answer text, name words) of one definition."""
    w1, w2 = name_words or tuple(rng.sample(_WORDS, 2))
    n = rng.randrange(10, 100)
    if task == "signature":
        fname = f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}_{n}"
        names = rng.sample(_PARAMS, rng.randint(2, 4))
        params = [p if i == 0 or rng.random() < 0.5 else f"{p}={rng.choice(_DEFAULTS)}"
                  for i, p in enumerate(names)]  # fmt: skip
        # parameters with defaults must follow those without
        params = sorted(params, key=lambda p: "=" in p)
        sig = ", ".join(params)
        return f"\ndef {fname}({sig}):\n    pass", f"\n\ndef {fname}(", f"{sig}):", (w1, w2)
    key, value = f"{w1}_{w2}_{n}", rng.randrange(10000, 100000)
    return f"\n{key} = {value}", f"\n{key} =", f" {value}", (w1, w2)


def _distractor(rng: random.Random, words: tuple[str, str], avoid: str) -> str:
    while True:
        key = f"{words[0]}_{words[1]}_{rng.randrange(10, 100)}"
        if key != avoid:
            return f"\n{key} = {rng.randrange(10000, 100000)}"


def make_item(spec: RetrievalSpec, index: int, hay: Haystack) -> RetrievalItem:
    """Item ``index`` of ``spec``; the same arguments always give the same item."""
    tok = hay.tok
    rng = random.Random(f"{spec.seed}:{spec.task}:{spec.length}:{spec.depth}:{index}")
    needle, query, answer, words = _needle(spec.task, rng)
    queried_key = query.split()[0] if spec.task != "signature" else ""
    inserts: list[tuple[float, list[int], bool]] = [(spec.depth, tok.encode(needle), True)]
    used = {words}
    for _ in range(spec.needles - 1):
        while True:
            other = tuple(rng.sample(_WORDS, 2))
            if other not in used:
                used.add(other)
                break
        inserts.append((rng.random(), tok.encode(_needle("needle", rng, other)[0]), False))
    for _ in range(spec.distractors):
        inserts.append((rng.random(), tok.encode(_distractor(rng, words, queried_key)), False))
    q_ids, a_ids = tok.encode(query), tok.encode(answer)
    fixed = 1 + len(q_ids) + sum(len(ids) for _, ids, _ in inserts)
    hay_len = spec.length - fixed
    if hay_len < 0:
        raise ValueError(
            f"retrieval {spec.task}: needles and query take {fixed} tokens, more than the "
            f"requested length {spec.length}; use length >= {fixed}"
        )
    body = hay.window(hay_len, rng)
    starts = [0, *hay.line_starts_in(body), hay_len]
    placed: dict[int, list[tuple[list[int], bool]]] = {}
    for depth, ids, is_target in inserts:
        at = min(starts, key=lambda s, d=depth: abs(s - d * hay_len))
        placed.setdefault(at, []).append((ids, is_target))
    prompt, needle_pos = [tok.bos_id], -1
    for i in range(hay_len + 1):
        for ids, is_target in placed.get(i, []):
            if is_target:
                needle_pos = len(prompt)
            prompt.extend(ids)
        if i < hay_len:
            prompt.append(body[i])
    prompt.extend(q_ids)
    assert len(prompt) == spec.length, (len(prompt), spec.length)
    return RetrievalItem(tuple(prompt), tuple(a_ids), answer, needle_pos, spec)


def make_items(spec: RetrievalSpec, hay: Haystack) -> list[RetrievalItem]:
    """All ``spec.items`` items of a spec."""
    return [make_item(spec, i, hay) for i in range(spec.items)]


@torch.no_grad()
def score_item(model: LlamaModel, item: RetrievalItem, window: int | None = None) -> dict:
    """Exact match and per-token accuracy of the answer, teacher-forced, argmax."""
    ids = torch.tensor([item.prompt_ids + item.answer_ids[:-1]], device=model.device)
    logits = model(ids, window=window)[0, len(item.prompt_ids) - 1 :]
    pred = logits.argmax(-1).tolist()
    hits = sum(int(p == a) for p, a in zip(pred, item.answer_ids))
    return {"exact": hits == len(item.answer_ids), "token_accuracy": hits / len(item.answer_ids)}
