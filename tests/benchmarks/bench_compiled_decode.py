"""Decode tokens/s, eager vs compiled: effbench's engine and ``transformers`` generate.

Same checkpoint (the shipped tiny target), same eval prompts, greedy, a fixed number of new
tokens, at each batch size; every side runs once per round in an order that alternates between
rounds, in one process, so machine drift hits all of them. Sides:

* ``effbench-<mode>``: the reference engine with ``compile=<mode>`` (``off``, ``default``, and
  ``reduce-overhead`` on CUDA), decode throughput from the engine's own step log (decode-step
  tokens / decode-step time);
* ``hf-eager``: ``generate`` with its dynamic cache;
* ``hf-static-compiled``: ``generate`` with ``cache_implementation="static"`` and a
  ``CompileConfig`` (mode ``default`` on CPU, where transformers compiles only when
  ``_compile_all_devices`` is set; ``reduce-overhead`` on CUDA); decode time is the whole
  generation minus a one-token generation (prefill plus first token), as in
  bench_engine_vs_transformers.

Compile time: each compiled side's first (warm-up) generation is timed as ``cold``, in a fresh
inductor cache folder unless ``--warm-cache`` is given; run the script twice with the same
``--cache`` folder for the ``warm`` figure (the second process finds the kernels on disk).
The effbench sides' outputs are checked identical to eager (greedy) before timing.

Run: ``python tests/benchmarks/bench_compiled_decode.py [--device cuda] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _engine(model, mode: str, batch: int):
    from effbench.kernels_ref.attention import DenseAttention
    from effbench.kernels_ref.decoding import Autoregressive
    from effbench.kernels_ref.engine import Engine, EngineConfig
    from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
    from effbench.kernels_ref.scheduling import ContinuousBatching

    return Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                  scheduler=ContinuousBatching(), decoder=Autoregressive(),
                  config=EngineConfig(max_batch=batch, max_tokens=1 << 16), compile=mode)


def ours(engine, prompts: list[list[int]], new: int) -> tuple[float, list[list[int]]]:
    from effbench.kernels_ref.requests import Request

    res = engine.run([Request(i, p, new) for i, p in enumerate(prompts)])
    dec = [s for s in res.steps if not s.prefill_tokens]
    tps = sum(s.emitted_tokens for s in dec) / (sum(s.end_ns - s.start_ns for s in dec) / 1e9)
    return tps, [r.output for r in res.requests]


def hf(model, prompts: list[list[int]], new: int, pad: int, **kw) -> float:
    width = max(map(len, prompts))
    dev = model.device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    args = dict(attention_mask=mask, do_sample=False, pad_token_id=pad, eos_token_id=None, **kw)

    def timed(n: int) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, **args)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.inference_mode():
        first = timed(1)
        full = timed(new)
    return len(prompts) * (new - 1) / (full - first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-hf", action="store_true", help="effbench sides only")
    ap.add_argument("--cache", help="inductor cache folder (default: a fresh temporary one)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="effbench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # before anything compiles
    torch.set_num_threads(args.threads)
    from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
    from effbench.kernels_ref.evalset import load_evalset

    dev = torch.device(args.device)
    model, tok = load_checkpoint(EMBEDDED["tiny-target"], dev)
    modes = ["off", "default"] + (["reduce-overhead"] if dev.type == "cuda" else [])
    sides: dict[str, object] = {}
    ref = None
    if not args.no_hf:
        from transformers import AutoModelForCausalLM, CompileConfig

        ref = AutoModelForCausalLM.from_pretrained(EMBEDDED["tiny-target"],
                                                   dtype=torch.float32).to(dev).eval()
        cc = CompileConfig(fullgraph=True,
                           mode="reduce-overhead" if dev.type == "cuda" else "default")
        if dev.type != "cuda":
            cc._compile_all_devices = True  # transformers compiles on CUDA only unless told
        sides["hf-eager"] = {}
        sides["hf-static-compiled"] = {"cache_implementation": "static", "compile_config": cc}
    items = load_evalset()
    out: dict = {"device": str(dev), "torch": torch.__version__, "threads": args.threads,
                 "new_tokens": args.new, "cache": cache, "batches": {}}
    print(f"torch {torch.__version__} on {dev}, threads {args.threads}, new tokens {args.new}")
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = [tok.encode(it["prompt"]) for it in items[:batch]]
        engines = {f"effbench-{m}": _engine(model, m, batch) for m in modes}
        cold: dict[str, float] = {}
        outputs = {}
        for name, eng in engines.items():  # warm-up: compiles (timed as cold)
            t0 = time.perf_counter()
            _, outputs[name] = ours(eng, prompts, args.new)
            cold[name] = round(time.perf_counter() - t0, 2)
        same = {n: outputs[n] == outputs["effbench-off"] for n in engines}
        for name, kw in sides.items():  # warm-up at both timed lengths (a static cache's
            t0 = time.perf_counter()  # size follows max_new_tokens: each length compiles)
            hf(ref, prompts, args.new, tok.pad_id, **kw)
            cold[name] = round(time.perf_counter() - t0, 2)
        names = [*engines, *sides]
        tps: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                if name in engines:
                    tps[name].append(ours(engines[name], prompts, args.new)[0])
                else:
                    tps[name].append(hf(ref, prompts, args.new, tok.pad_id, **sides[name]))
        med = {n: statistics.median(v) for n, v in tps.items()}
        row = {
            "tokens_per_s": {n: round(v, 1) for n, v in med.items()},
            "vs_effbench_eager": {n: round(v / med["effbench-off"], 2) for n, v in med.items()},
            "first_run_seconds": cold,
            "identical_to_eager": same,
            "compile": {n: e.ctx.compiled.stats() for n, e in engines.items() if e.ctx.compiled},
        }
        out["batches"][str(batch)] = row
        print(f"batch {batch}: identical to eager {same}")
        for n in names:
            print(f"  {n:>22} {med[n]:>10.1f} tok/s  x{row['vs_effbench_eager'][n]:<5} "
                  f"first run {cold[n]} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
