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
from effbench.suite.levels import Metric, from_samples
from effbench.suite.metrics import MetricSpec, declare
from effbench.suite.timing import measure_once_each

METRICS = declare(
    "kernel",
    MetricSpec("decode_cost_piggyback", "s", "lower", "timing",
               "marginal seconds per decode token added to a prefill chunk's forward"),
    MetricSpec("decode_cost_alone", "s", "lower", "timing",
               "seconds per decode token in a decode-only forward of the same tokens"),
    MetricSpec("piggyback_cost_ratio", "x", "lower", "timing",
               "decode_cost_piggyback / decode_cost_alone, per interleaved round"),
)
"""The scheduling family's kernel-level metrics (docs/METRICS.md)."""
ROUNDS = 30


class PiggybackBench:
    """The three passes over one batch shape, set up once (decode caches prefilled)."""

    def __init__(self, model: Any, chunk: int, decodes: int, context: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        factory = PooledKVCacheFactory()
        layout = layout_of(model)
        self.model, self.attention = model, DenseAttention()
        self.decodes, self.context = decodes, context

        def tokens(n: int) -> list[int]:
            return torch.randint(3, vocab, (n,), generator=gen).tolist()

        self.chunk_cache = factory.new_cache(layout)
        self.chunk_tokens = tokens(chunk)
        self.dec_caches, self.dec_next = [], []
        with torch.inference_mode():
            for _ in range(decodes):
                cache = factory.new_cache(layout)
                run_forward(model, self.attention, [Feed(cache, tokens(context), 0, "none")])
                self.dec_caches.append(cache)
                self.dec_next.append(tokens(1))

    def _chunk_feed(self) -> Feed:
        return Feed(self.chunk_cache, self.chunk_tokens, 0, "last", seq_id=self.decodes)

    def _decode_feeds(self) -> list[Feed]:
        return [Feed(c, t, self.context, "last", seq_id=i)
                for i, (c, t) in enumerate(zip(self.dec_caches, self.dec_next))]

    def _run(self, feeds: list[Feed]) -> None:
        with torch.inference_mode():
            run_forward(self.model, self.attention, feeds)
        self.chunk_cache.truncate(0)
        for c in self.dec_caches:
            c.truncate(self.context)

    def chunk(self) -> None:
        self._run([self._chunk_feed()])

    def mixed(self) -> None:
        self._run([self._chunk_feed(), *self._decode_feeds()])

    def decode(self) -> None:
        self._run(self._decode_feeds())


def piggyback_samples(model: Any, chunk: int, decodes: int, context: int, rounds: int,
                      device: str, seed: int = 0) -> dict[str, list[float]]:
    """Per-round seconds of the three passes and the derived per-token costs and ratio."""
    bench = PiggybackBench(model, chunk, decodes, context, seed)
    times = measure_once_each(
        {"chunk": bench.chunk, "mixed": bench.mixed, "decode": bench.decode},
        rounds, device, warmup_rounds=2,
    )
    mixed = [(m - c) / decodes for m, c in zip(times["mixed"], times["chunk"])]
    alone = [d / decodes for d in times["decode"]]
    ratio = [m / a for m, a in zip(mixed, alone)]
    return {"chunk_s": list(times["chunk"]), "mixed_s": list(times["mixed"]),
            "decode_s": list(times["decode"]), "decode_cost_piggyback": mixed,
            "decode_cost_alone": alone, "piggyback_cost_ratio": ratio}


def parse_workload(name: str) -> tuple[int, int, int]:
    """``pb-c<chunk>-d<decodes>-l<context>`` -> (chunk, decodes, context)."""
    parts = dict((p[0], int(p[1:])) for p in name.removeprefix("pb-").split("-"))
    return parts["c"], parts["d"], parts["l"]


def run(case: Any, ctx: Any) -> list[Metric]:
    """The scheduling family's kernel level: piggyback costs on the case's workload shape."""
    chunk, decodes, context = parse_workload(case.workload)
    got = piggyback_samples(ctx.model, chunk, decodes, context, ROUNDS, str(ctx.device),
                            ctx.preset.run.seed)
    return [from_samples(name, got[name], spec.unit, spec.direction)
            for name, spec in ((m.name, m) for m in METRICS)]
