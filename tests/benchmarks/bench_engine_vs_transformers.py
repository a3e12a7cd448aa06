"""Decode tokens/s: the reference engine vs ``transformers`` generate, side by side.

Same checkpoint (the shipped tiny target), same prompts, greedy, a fixed number of new tokens,
batch 1 and 8, runs interleaved (A B A B ...) in one process so machine drift hits both.
Decode throughput = new tokens after the first / time after the first token, for both sides
(the first token of each is timed as prefill).
Run: ``python tests/benchmarks/bench_engine_vs_transformers.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.decoding import Autoregressive
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching


def ours(model, prompts: list[list[int]], new: int) -> float:
    eng = Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                 scheduler=ContinuousBatching(), decoder=Autoregressive(),
                 config=EngineConfig(max_batch=len(prompts), max_tokens=1 << 16))
    res = eng.run([Request(i, p, new) for i, p in enumerate(prompts)])
    dec = [s for s in res.steps if not s.prefill_tokens]
    return sum(s.emitted_tokens for s in dec) / (sum(s.end_ns - s.start_ns for s in dec) / 1e9)


def hf(model, prompts: list[list[int]], new: int, pad: int) -> float:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kw = dict(attention_mask=mask, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        t1 = time.perf_counter()
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
        t2 = time.perf_counter()
    # decode time = full generation minus a prefill-plus-first-token run
    return len(prompts) * (new - 1) / ((t2 - t1) - (t1 - t0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    path = EMBEDDED["tiny-target"]
    model, tok = load_checkpoint(path)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    items = load_evalset()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, new tokens {args.new}")
    print(f"{'batch':>5} {'effbench tok/s':>16} {'transformers tok/s':>20} {'ratio':>7}")
    for batch in (1, 8):
        prompts = [tok.encode(it["prompt"]) for it in items[:batch]]
        ours(model, prompts, 4), hf(ref, prompts, 4, tok.pad_id)  # warm-up
        a, b = [], []
        for r in range(args.rounds):
            order = ("a", "b") if r % 2 == 0 else ("b", "a")
            for name in order:
                if name == "a":
                    a.append(ours(model, prompts, args.new))
                else:
                    b.append(hf(ref, prompts, args.new, tok.pad_id))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{batch:>5} {ma:>16.1f} {mb:>20.1f} {ma / mb:>7.2f}")


if __name__ == "__main__":
    main()
