"""What a decode token costs when it rides along a prefill chunk (SARATHI's "piggyback").

SARATHI (arXiv 2308.16369) observes that in a batch holding one prefill chunk, the decode
requests "piggyback and cost up to an order of magnitude less compared to a decode-only
batch". Three forward passes of the real engine path (``run_forward`` on the model, dense
attention, the pooled full cache) are timed once per round, interleaved so machine drift hits
all three alike (``measure_once_each``):

- chunk: one sequence feeds ``chunk`` prompt tokens;
- mixed: the same chunk plus ``decodes`` sequences of ``context`` cached tokens feeding one
  token each;
- decode-only: those ``decodes`` decode tokens alone.

Per round, the marginal cost of a decode token in the mixed batch is
``(t_mixed - t_chunk) / decodes`` and its cost alone ``t_decode / decodes``; their ratio is
``piggyback_cost_ratio`` (1: no saving; 0.1: an order of magnitude). Caches are rolled back
after every call, so each round times the same work.
"""

from __future__ import annotations

from typing import Any

import torch

from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.kernels_ref.engine import layout_of, run_forward
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.protocols import Feed
from effbench.suite.timing import measure_once_each


def piggyback_samples(model: Any, chunk: int, decodes: int, context: int, rounds: int,
                      device: str, seed: int = 0) -> dict[str, list[float]]:
    """Per-round seconds of the three passes and the derived per-token costs and ratio."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    factory = PooledKVCacheFactory()
    layout = layout_of(model)
    attention = DenseAttention()

    def tokens(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    chunk_cache = factory.new_cache(layout)
    chunk_tokens = tokens(chunk)
    dec_caches, dec_next = [], []
    with torch.inference_mode():
        for _ in range(decodes):
            cache = factory.new_cache(layout)
            run_forward(model, attention, [Feed(cache, tokens(context), 0, "none")])
            dec_caches.append(cache)
            dec_next.append(tokens(1))

    def chunk_feed() -> Feed:
        return Feed(chunk_cache, chunk_tokens, 0, "last", seq_id=decodes)

    def decode_feeds() -> list[Feed]:
        return [Feed(c, t, context, "last", seq_id=i)
                for i, (c, t) in enumerate(zip(dec_caches, dec_next))]

    def run(feeds: list[Feed]) -> None:
        with torch.inference_mode():
            run_forward(model, attention, feeds)
        chunk_cache.truncate(0)
        for c in dec_caches:
            c.truncate(context)

    times = measure_once_each(
        {"chunk": lambda: run([chunk_feed()]),
         "mixed": lambda: run([chunk_feed(), *decode_feeds()]),
         "decode": lambda: run(decode_feeds())},
        rounds, device, warmup_rounds=2,
    )
    mixed = [(m - c) / decodes for m, c in zip(times["mixed"], times["chunk"])]
    alone = [d / decodes for d in times["decode"]]
    ratio = [m / a for m, a in zip(mixed, alone)]
    return {"chunk_s": list(times["chunk"]), "mixed_s": list(times["mixed"]),
            "decode_s": list(times["decode"]), "decode_cost_piggyback": mixed,
            "decode_cost_alone": alone, "piggyback_cost_ratio": ratio}
