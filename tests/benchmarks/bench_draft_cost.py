"""Per-token decode cost of each draft relative to the target, side by side on this machine.

Each model decodes the same eval prompts at batch 1 through the reference engine (dense
attention, full cache, autoregressive); rounds alternate between the models so drift hits all
of them alike. Cost ratio = draft seconds per decode token / target seconds per decode token,
per round; the median and range over rounds are printed. Speculative decoding with ``k`` draft
tokens per step pays only when ``1 + k * ratio`` (plus the verify step's extra cost) is below the
tokens committed per step, so this ratio is the draft's price.
Run: ``OMP_NUM_THREADS=1 python tests/benchmarks/bench_draft_cost.py``.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import load_checkpoint, resolve_model
from effbench.kernels_ref.decoding import Autoregressive
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching


def seconds_per_token(model, prompts: list[list[int]], new: int) -> float:
    """Decode-step seconds per emitted token, one request at a time (batch 1)."""
    eng = Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                 scheduler=ContinuousBatching(), decoder=Autoregressive(),
                 config=EngineConfig(max_batch=1, max_tokens=1 << 16))  # fmt: skip
    res = eng.run([Request(i, p, new) for i, p in enumerate(prompts)])
    dec = [s for s in res.steps if not s.prefill_tokens]
    return sum(s.end_ns - s.start_ns for s in dec) / 1e9 / sum(s.emitted_tokens for s in dec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="tiny-target")
    ap.add_argument("--drafts", nargs="+", default=["tiny-draft", "tiny-draft-1l"])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [args.target, *args.drafts]
    models = {n: load_checkpoint(resolve_model(n))[0] for n in names}
    tok = load_checkpoint(resolve_model(args.target))[1]
    prompts = [[tok.bos_id, *tok.encode(it["prompt"])] for it in load_evalset()[: args.prompts]]
    for m in models.values():  # warm-up
        seconds_per_token(m, prompts[:2], 4)
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            per[n].append(seconds_per_token(models[n], prompts, args.new))
    t = per[args.target]
    print(f"batch 1, {args.prompts} prompts x {args.new} tokens, {args.rounds} rounds, 1 thread")
    print(f"{args.target}: {statistics.median(t) * 1e3:.3f} ms/token (median)")
    for n in args.drafts:
        ratios = [d / tt for d, tt in zip(per[n], t)]
        print(f"{n}: {statistics.median(per[n]) * 1e3:.3f} ms/token; cost ratio vs target "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}), "
              f"{models[n].config.num_hidden_layers} layers, "
              f"hidden {models[n].config.hidden_size}")  # fmt: skip


if __name__ == "__main__":
    main()
