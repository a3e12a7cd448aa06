"""effbench's drafting decoders against ``transformers`` generate's own, side by side.

Same checkpoints (the shipped tiny target, and the one-layer draft ``tiny-draft-1l``), same
prompts, greedy, batch 1 (transformers' assisted generation is batch-1 only), a fixed number of
new tokens per prompt. Sides:

* effbench: autoregressive, speculative (draft model, ``k``), prompt lookup (``k``, n-grams of
  up to 3 tokens);
* transformers: greedy ``generate``, assisted generation (``assistant_model``, a constant
  ``num_assistant_tokens = k``: transformers' default heuristic schedule changes k as it goes)
  and prompt-lookup decoding (``prompt_lookup_num_tokens = k``,
  ``max_matching_ngram_size = 3``).

Reported per side: decode tokens/s (every new token over the whole generation, prefill
included, summed over prompts; median of interleaved rounds in one process, one thread), and
whether each request's output equals the greedy output of the same library and of the other.
Run: ``python tests/benchmarks/bench_drafting_vs_hf.py [--workload editing]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.decoding import Autoregressive, PromptLookup, Speculative
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching


def ours(model, draft, decoder, prompts: list[list[int]], new: int) -> tuple[float, list]:
    eng = Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                 scheduler=ContinuousBatching(), decoder=decoder,
                 config=EngineConfig(max_batch=1, max_tokens=1 << 16), draft=draft)
    with torch.inference_mode():
        t0 = time.perf_counter()
        res = eng.run([Request(i, list(p), new) for i, p in enumerate(prompts)])
        dt = time.perf_counter() - t0
    return len(prompts) * new / dt, [r.output for r in res.requests]


def hf(model, prompts: list[list[int]], new: int, pad: int, **extra) -> tuple[float, list]:
    outs = []
    kw = dict(do_sample=False, pad_token_id=pad, eos_token_id=None, max_new_tokens=new,
              min_new_tokens=new, **extra)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
            outs.append(out[0, len(p):].tolist())
        dt = time.perf_counter() - t0
    return len(prompts) * new / dt, outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--workload", choices=("eval", "editing"), default="eval")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    model, tok = load_checkpoint(EMBEDDED["tiny-target"])
    draft, _ = load_checkpoint(EMBEDDED["tiny-draft-1l"])
    ref = AutoModelForCausalLM.from_pretrained(EMBEDDED["tiny-target"], dtype=torch.float32)
    ref_draft = AutoModelForCausalLM.from_pretrained(EMBEDDED["tiny-draft-1l"],
                                                     dtype=torch.float32)  # fmt: skip
    ref.eval(), ref_draft.eval()
    if args.workload == "eval":
        prompts = [[tok.bos_id, *tok.encode(it["prompt"])] for it in load_evalset()]
    else:
        from effbench.kernels_ref.editing import load_editing_set

        prompts = [[tok.bos_id, *tok.encode(it["prompt"])] for it in load_editing_set()]
    prompts = prompts[: args.prompts]
    k = args.k
    sides = {
        "effbench autoregressive": lambda: ours(model, None, Autoregressive(), prompts, args.new),
        f"effbench speculative k={k}": lambda: ours(model, draft, Speculative(k=k), prompts,
                                                    args.new),
        f"effbench prompt lookup k={k}": lambda: ours(model, None, PromptLookup(k=k), prompts,
                                                      args.new),
        "transformers greedy": lambda: hf(ref, prompts, args.new, tok.pad_id),
        f"transformers assisted k={k}": lambda: hf(
            ref, prompts, args.new, tok.pad_id, assistant_model=ref_draft,
            num_assistant_tokens=k, num_assistant_tokens_schedule="constant",
            assistant_confidence_threshold=0.0),
        f"transformers prompt lookup k={k}": lambda: hf(
            ref, prompts, args.new, tok.pad_id, prompt_lookup_num_tokens=k,
            max_matching_ngram_size=3),
    }
    speeds: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, list] = {}
    for name, run in sides.items():  # warm-up, and the outputs
        outputs[name] = run()[1]
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
            speeds[name].append(sides[name]()[0])
    ours_greedy, hf_greedy = outputs["effbench autoregressive"], outputs["transformers greedy"]
    print(f"torch {torch.__version__}, 1 thread, workload {args.workload}, {len(prompts)} "
          f"prompts x {args.new} new tokens, batch 1, median of {args.rounds} rounds")
    print(f"{'side':<36} {'tok/s':>8} {'same as effbench greedy':>24} "
          f"{'same as transformers greedy':>28}")
    for name in sides:
        same_ours = sum(a == b for a, b in zip(outputs[name], ours_greedy)) / len(prompts)
        same_hf = sum(a == b for a, b in zip(outputs[name], hf_greedy)) / len(prompts)
        print(f"{name:<36} {statistics.median(speeds[name]):>8.1f} {same_ours:>24.2f} "
              f"{same_hf:>28.2f}")


if __name__ == "__main__":
    main()
