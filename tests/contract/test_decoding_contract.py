"""The decoding family's behavioural contract, run over every registered decoder.

On the embedded tiny target (and the tiny draft, for decoders that need one), with the other
families' baselines, 8 eval prompts and greedy decoding: every lossless decoder (built with its
defaults and with each other value of its default sweep) emits the autoregressive baseline's
tokens exactly, at batch 1 and at batch 8, also when a KV memory cap forces preemption; every
decoder finishes every request, and after a run holds no per-request state (``release``).
"""

from __future__ import annotations

import gc

import pytest
import torch
from registry_configs import technique_configs

from effbench.kernels_ref.engine import Engine, EngineConfig, layout_of
from effbench.kernels_ref.protocols import Decoder, KVCache, KVCacheFactory
from effbench.kernels_ref.requests import Phase, Request
from effbench.suite import registry

MAX_NEW = 16


CONFIGS = technique_configs("decoding")
DEFAULTS = [c for c in CONFIGS if not c.values[1]]


def run(decoder, tiny_target, tiny_draft, prompts, *, max_batch=8, cap=None, max_new=MAX_NEW):
    model, _ = tiny_target
    engine = Engine(
        model,
        attention=registry.baseline_of("attention").build(),
        cache_factory=registry.baseline_of("kvcache").build(),
        scheduler=registry.baseline_of("scheduling").build(),
        decoder=decoder,
        config=EngineConfig(max_batch=max_batch, max_tokens=1024, kv_memory_cap=cap),
        draft=tiny_draft,
    )
    news = max_new if isinstance(max_new, list) else [max_new] * len(prompts)
    res = engine.run([Request(i, list(p), n) for i, (p, n) in enumerate(zip(prompts, news))])
    for r, n in zip(res.requests, news):
        assert r.phase is Phase.FINISHED
        assert len(r.output) == sum(k for _, k in r.emissions) == n
    assert isinstance(res.decoder_stats, dict)
    return res


@pytest.fixture(scope="module")
def baseline_outputs(tiny_target, tiny_draft, eval_prompts):
    """The autoregressive baseline's greedy outputs, per batch size."""
    base = registry.baseline_of("decoding")
    return {
        b: [r.output for r in run(base.build(), tiny_target, tiny_draft, eval_prompts,
                                  max_batch=b).requests]
        for b in (1, 8)
    }


def reachable(root, depth: int = 6) -> list:
    """Objects reachable from ``root`` through attributes and containers (tensors and
    modules are leaves), i.e. what a decoder keeps alive.
    """
    seen: set[int] = set()
    out = []
    stack = [(root, 0)]
    while stack:
        obj, d = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        out.append(obj)
        if d >= depth or isinstance(obj, (torch.Tensor, torch.nn.Module, str, bytes, int,
                                          float, type)):
            continue
        if isinstance(obj, dict):
            children = [*obj.keys(), *obj.values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)
        elif hasattr(obj, "__dict__"):
            children = list(vars(obj).values())
        else:
            children = []
        stack.extend((c, d + 1) for c in children)
    return out


def assert_no_request_state(decoder) -> None:
    gc.collect()
    objs = reachable(decoder)
    caches = [o for o in objs if isinstance(o, KVCache)]
    assert not caches, f"{type(decoder).__name__} still holds caches: {caches[:3]}"
    reqs = [o for o in objs if isinstance(o, Request)]
    assert not reqs, f"{type(decoder).__name__} still holds requests {[r.rid for r in reqs]}"
    for f in (o for o in objs if isinstance(o, KVCacheFactory)):
        assert f.memory().used_bytes == 0, f"{type(f).__name__} still has live caches"


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("tech,params", CONFIGS)
def test_registered_decoder_satisfies_protocol(tech, params):
    assert isinstance(tech.build(params), Decoder)


def test_baseline_is_batch_invariant(baseline_outputs):
    """Greedy baseline outputs do not depend on the batch (the reference every lossless
    decoder is held to is the same at batch 1 and batch 8).
    """
    assert baseline_outputs[1] == baseline_outputs[8]


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_lossless_decoder_reproduces_baseline(tech, params, batch, tiny_target, tiny_draft,
                                              eval_prompts, baseline_outputs):
    decoder = tech.build(params)
    res = run(decoder, tiny_target, tiny_draft, eval_prompts, max_batch=batch)
    if tech.lossless:
        assert [r.output for r in res.requests] == baseline_outputs[batch]
    assert_no_request_state(decoder)


@pytest.mark.parametrize("tech,params", DEFAULTS)
def test_lossless_under_preemption_and_release(tech, params, tiny_target, tiny_draft,
                                               eval_prompts, baseline_outputs):
    """Preemption calls ``release`` mid-request; a decoder that kept stale per-request state
    (a draft cache of the old length) would diverge from the baseline when the request
    resumes. Requests also end at different times, so releases interleave with steps.
    """
    model, _ = tiny_target
    per_token = layout_of(model).full_bytes_per_token
    cap = int(3.75 * (max(len(p) for p in eval_prompts) + MAX_NEW) * per_token)
    # the first four (admitted together) outgrow the cap; the rest end at different times
    news = [MAX_NEW] * 4 + [MAX_NEW - 4 * (1 + i % 3) for i in range(len(eval_prompts) - 4)]
    decoder = tech.build(params)
    res = run(decoder, tiny_target, tiny_draft, eval_prompts, cap=cap, max_new=news)
    assert res.preemptions > 0
    if tech.lossless:
        want = [out[:n] for out, n in zip(baseline_outputs[8], news)]
        assert [r.output for r in res.requests] == want
    assert_no_request_state(decoder)


@pytest.mark.parametrize("tech,params", DEFAULTS)
def test_release_drops_state_mid_run(tech, params, tiny_target, tiny_draft, eval_prompts):
    """Step the engine by hand: once a request finishes (and is released), the decoder keeps
    nothing that refers to it while the others still run.
    """
    model, _ = tiny_target
    decoder = tech.build(params)
    engine = Engine(
        model,
        attention=registry.baseline_of("attention").build(),
        cache_factory=registry.baseline_of("kvcache").build(),
        scheduler=registry.baseline_of("scheduling").build(),
        decoder=decoder,
        config=EngineConfig(max_batch=4),
        draft=tiny_draft,
    )
    reqs = [Request(i, list(p), 2 if i == 0 else 12) for i, p in enumerate(eval_prompts[:4])]
    for r in reqs:
        engine.add(r)
    with torch.inference_mode():
        while reqs[0].phase is not Phase.FINISHED:
            engine.step()
    assert engine.running, "the other requests are still running"
    gc.collect()
    objs = reachable(decoder)
    assert not any(o is reqs[0] for o in objs)
    held = [o for o in objs if isinstance(o, KVCache)]
    assert len(held) <= len(engine.running), "more per-request caches than running requests"
    for d in (o for o in objs if isinstance(o, dict)):
        if any(isinstance(v, KVCache) for v in d.values()):
            assert reqs[0].rid not in d, "the finished request's cache is still held"
