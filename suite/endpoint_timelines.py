"""From streamed chunks to a request timeline: which chunks are emissions, how many tokens each.

The serving metrics (effbench.suite.serving_metrics) need each request's emissions as
``(t, n_tokens)``. A stream gives chunk arrival times and text; token counts come from the
server's ``usage`` when it streams one, else from a tokenizer that matches the server's model
(``[serving] tokenizer``), else (nothing to count with) one token per chunk. Each request
records which (``output_count``: ``usage``, ``tokenizer`` or ``chunks``).

With ``N`` output tokens over ``k`` chunks (events with a choice, effbench.suite.endpoint_client):

* ``N == k``: one token per chunk. This is exact whenever the server streams token by token
  (vLLM, ``effbench serve`` without speculative decoding, where a final chunk with empty text
  is the EOS token): ``split = "one-per-chunk"``.
* otherwise chunks with empty text are not emissions (an opening chunk carrying only the
  role; a closing one carrying only ``finish_reason`` and usage, as ``transformers serve``
  sends) and the ``N`` tokens go to the remaining ``k'`` chunks: one each when ``N == k'``
  (``"one-per-text-chunk"``); else each at least one and the rest in proportion to each
  chunk's token count by the tokenizer when one is given (``"tokenizer"``: exact for a
  multi-token chunk of a speculative step when the tokenizer is the server's), else evenly
  (``"even"``), by largest remainder so the counts sum to ``N``. When ``N < k'`` every chunk
  keeps one token (``"chunks>count"``) and the request's output is taken as ``k'`` tokens.

vLLM's own client treats every chunk as one ITL entry whatever it carries (so its ITL is
effbench's ICL) and uses ``N`` only for TPOT; effbench's ITL spreads a chunk's gap over the
tokens it brought, which needs the split above (docs/SERVING.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from effbench.suite.endpoint_client import Outcome
from effbench.suite.serving_metrics import RequestTimeline


class Encodes(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Counted:
    """One request's timeline and how its token counts were obtained."""

    timeline: RequestTimeline
    output_count: str
    prompt_count: str
    split: str
    error: str | None = None


def spread(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split over ``len(weights)`` slots: one each, and the ``total - slots`` left
    in proportion to the weights (evenly when they are all zero), by largest remainder, ties
    to the earlier slot. With per-chunk token counts ``c_i`` the weights are ``c_i - 1``, so
    counts that already sum to ``total`` come back unchanged. ``total < slots``: one each.
    """
    slots = len(weights)
    base = [1] * slots
    extra = total - slots
    if extra <= 0:
        return base
    w = [max(0.0, float(x)) for x in weights]
    if not sum(w):
        w = [1.0] * slots
    shares = [extra * x / sum(w) for x in w]
    floors = [math.floor(s) for s in shares]
    left = extra - sum(floors)
    order = sorted(range(slots), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return [b + f for b, f in zip(base, floors)]


def _output_count(out: Outcome, tokenizer: Encodes | None) -> tuple[int, str]:
    usage = out.usage or {}
    if isinstance(usage.get("completion_tokens"), int):
        return usage["completion_tokens"], "usage"
    if tokenizer is not None:
        return len(tokenizer.encode(out.text)), "tokenizer"
    return len(out.chunks), "chunks"


def timeline_of(
    out: Outcome, t0_ns: int, local_prompt_tokens: int, tokenizer: Encodes | None = None
) -> Counted:
    """``out`` as a timeline in seconds since ``t0_ns`` (module docstring for the counts).

    The arrival is the moment the request was sent. A failed request (an error, or no chunk
    at all) is unfinished and keeps whatever chunks it got, one token each.
    """

    def at(t_ns: int) -> float:
        return (t_ns - t0_ns) / 1e9

    usage = out.usage or {}
    prompt_ok = isinstance(usage.get("prompt_tokens"), int)
    prompt = usage["prompt_tokens"] if prompt_ok else local_prompt_tokens
    prompt_count = "usage" if prompt_ok else "local"
    chunks = out.chunks
    error = out.error or (None if chunks else "the stream ended without any chunk")
    if error is not None:
        tl = RequestTimeline(
            at(out.send_ns), tuple((at(c.t_ns), 1) for c in chunks), prompt, finished=False
        )
        return Counted(tl, "none", prompt_count, "none", error)
    n, source = _output_count(out, tokenizer)
    if n == len(chunks):
        ems, split = [(at(c.t_ns), 1) for c in chunks], "one-per-chunk"
    else:
        kept = [c for c in chunks if c.text] or chunks[-1:]
        if n == len(kept):
            counts, split = [1] * len(kept), "one-per-text-chunk"
        elif n < len(kept):
            counts, split = [1] * len(kept), "chunks>count"
        elif tokenizer is not None:
            counts = spread(n, [len(tokenizer.encode(c.text)) - 1 for c in kept])
            split = "tokenizer"
        else:
            counts, split = spread(n, [1.0] * len(kept)), "even"
        ems = [(at(c.t_ns), k) for c, k in zip(kept, counts)]
    return Counted(
        RequestTimeline(at(out.send_ns), tuple(ems), prompt), source, prompt_count, split
    )
