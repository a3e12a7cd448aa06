"""Speedup of the drafting decoders against autoregressive decoding as the batch grows.

Spec-Bench measures at batch 1; users of vLLM report that speculation's gain shrinks and then
reverses as the batch grows, because a verify pass over k+1 tokens per request costs more once
the target is no longer overhead-bound. This sweeps the engine's batch (continuous batching of
16 eval prompts x 32 new tokens, greedy) for autoregressive decoding, speculative decoding with
the one-layer draft, prompt lookup and Token Recycling, and reports, per batch size, each
decoder's wall-time speedup over autoregressive decoding (median of interleaved rounds in one
process, one thread) and its tokens per step; every output is checked against the
autoregressive one.
Run: ``python tests/benchmarks/bench_drafting_batch.py [--batches 1,4,8,16]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.decoding import Autoregressive, PromptLookup, Speculative, TokenRecycling
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching


def run(model, draft, decoder, prompts, new: int, batch: int) -> tuple[float, list, float]:
    eng = Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                 scheduler=ContinuousBatching(), decoder=decoder,
                 config=EngineConfig(max_batch=batch, max_tokens=1 << 16), draft=draft)
    with torch.inference_mode():
        t0 = time.perf_counter()
        res = eng.run([Request(i, list(p), new) for i, p in enumerate(prompts)])
        dt = time.perf_counter() - t0
    return dt, [r.output for r in res.requests], res.decoder_stats.get("tokens_per_step", 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,4,8,16")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load_checkpoint(EMBEDDED["tiny-target"])
    draft, _ = load_checkpoint(EMBEDDED["tiny-draft-1l"])
    prompts = [[tok.bos_id, *tok.encode(it["prompt"])] for it in load_evalset()][: args.prompts]
    sides = {
        "autoregressive": Autoregressive,
        "speculative k=4 (tiny-draft-1l)": lambda: Speculative(k=4),
        "prompt lookup k=4": lambda: PromptLookup(k=4),
        "token recycling w=2 d=4": lambda: TokenRecycling(width=2, depth=4),
    }
    print(f"torch {torch.__version__}, 1 thread, {len(prompts)} eval prompts x {args.new} new "
          f"tokens, median of {args.rounds} interleaved rounds")
    print(f"{'batch':>5}  {'decoder':<32} {'seconds':>8} {'speedup':>8} {'tok/step':>9} "
          f"{'same':>5}")
    for batch in (int(b) for b in args.batches.split(",")):
        times: dict[str, list[float]] = {name: [] for name in sides}
        outs, steps = {}, {}
        for name, make in sides.items():  # warm-up, outputs and tokens per step
            _, outs[name], steps[name] = run(model, draft, make(), prompts, args.new, batch)
        for r in range(args.rounds):
            for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                times[name].append(run(model, draft, sides[name](), prompts, args.new,
                                       batch)[0])  # fmt: skip
        base = statistics.median(times["autoregressive"])
        for name in sides:
            t = statistics.median(times[name])
            same = outs[name] == outs["autoregressive"]
            print(f"{batch:>5}  {name:<32} {t:>8.2f} {base / t:>7.2f}x {steps[name]:>9.2f} "
                  f"{str(same):>5}")


if __name__ == "__main__":
    main()
