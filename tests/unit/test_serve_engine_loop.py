"""The server's engine thread: requests that join a running engine decode as they would alone.

``effbench serve`` drives the reference engine with ``Engine.add`` and ``Engine.step`` from a
thread of its own (effbench.suite.serve.engine_loop), leaving ``Engine.run`` untouched. These
tests pin what that relies on: requests added between iterations of a busy engine give the same
greedy tokens as an offline run, emissions reach each request's callback in order with the
right finish reason, a cancelled request leaves the engine, the queue bound holds, and a
failing iteration fails the requests in it without ending the loop.
"""

import threading

import pytest
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.decoding import Autoregressive
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.kvcache import FullKVCacheFactory
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ChunkedPrefill, ContinuousBatching
from effbench.suite.serve.engine_loop import EngineLoop, Job

CFG = LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)
torch.manual_seed(0)
MODEL = LlamaModel(CFG).eval()
with torch.no_grad():
    for prm in MODEL.parameters():
        if prm.dim() > 1:
            prm.normal_(0, 0.3)
PROMPTS = [[1, 5, 9, 3], [1, 7, 7, 7, 2, 8, 11], [1, 4], [1, 30, 31, 32, 33, 34]]


def _engine(scheduler=None):
    return Engine(
        MODEL,
        attention=DenseAttention(),
        cache_factory=FullKVCacheFactory(),
        scheduler=scheduler or ContinuousBatching(),
        decoder=Autoregressive(),
        config=EngineConfig(max_batch=3),
    )


def _offline(n=6):
    res = _engine().run([Request(i, list(p), n) for i, p in enumerate(PROMPTS)])
    return [r.output for r in res.requests]


@pytest.mark.parametrize("scheduler", [ContinuousBatching(), ChunkedPrefill(4)])
def test_requests_joining_a_busy_engine_decode_as_offline(scheduler):
    """The hook the server uses: add() between step()s, with requests already running."""
    engine = _engine(scheduler)
    reqs = [Request(i, list(p), 6) for i, p in enumerate(PROMPTS)]
    with torch.inference_mode():
        engine.add(reqs[0])
        engine.step()
        engine.step()
        engine.add(reqs[1])
        engine.step()
        engine.add(reqs[2])
        engine.add(reqs[3])
        while engine.busy:
            engine.step()
    assert [r.output for r in reqs] == _offline()


class Collect:
    def __init__(self):
        self.items, self.done = [], threading.Event()

    def __call__(self, emission):
        self.items.append(emission)
        if emission.finished:
            self.done.set()


def _job(rid, prompt, n=6, eos=None, temperature=0.0):
    c = Collect()
    return Job(rid, list(prompt), n, eos, temperature, c), c


def test_loop_delivers_every_emission_and_matches_offline():
    loop = EngineLoop(_engine, max_queue=8)
    loop.start()
    try:
        jobs = [_job(i, p) for i, p in enumerate(PROMPTS)]
        for job, _ in jobs:
            assert loop.submit(job)
        for _, c in jobs:
            assert c.done.wait(30)
    finally:
        loop.stop()
    outs = [[t for e in c.items for t in e.tokens] for _, c in jobs]
    assert outs == _offline()
    for _, c in jobs:
        assert [e.finished for e in c.items] == [False] * 5 + [True]
        assert c.items[-1].finish_reason == "length"
    assert loop.pending == 0


def test_eos_stops_with_reason_stop_and_sampling_runs():
    first = _offline()[0]
    loop = EngineLoop(_engine, max_queue=8)
    loop.start()
    try:
        job, c = _job(0, PROMPTS[0], eos=first[2])
        hot, h = _job(1, PROMPTS[1], n=5, temperature=0.8)
        loop.submit(job)
        loop.submit(hot)
        assert c.done.wait(30) and h.done.wait(30)
    finally:
        loop.stop()
    assert [t for e in c.items for t in e.tokens] == first[:3]
    assert c.items[-1].finish_reason == "stop"
    assert sum(len(e.tokens) for e in h.items) == 5


def test_queue_bound_and_cancel():
    gate = threading.Event()

    def slow_engine():
        eng = _engine()
        step = eng.step

        def gated():
            gate.wait(10)
            return step()

        eng.step = gated
        return eng

    loop = EngineLoop(slow_engine, max_queue=2)
    loop.start()
    try:
        a, ca = _job(0, PROMPTS[0], n=50)
        b, cb = _job(1, PROMPTS[1])
        assert loop.submit(a) and loop.submit(b)
        assert not loop.submit(_job(2, PROMPTS[2])[0])  # full: the server answers 503
        loop.cancel(0)
        gate.set()
        assert cb.done.wait(30)
        for _ in range(100):
            if loop.pending == 0:
                break
            threading.Event().wait(0.02)
        assert loop.pending == 0 and not ca.done.is_set()
        assert loop.engine.waiting == [] and loop.engine.running == []
    finally:
        gate.set()
        loop.stop()


def test_a_failing_iteration_fails_its_requests_and_serving_goes_on():
    calls = {"n": 0}

    def flaky():
        eng = _engine()
        step = eng.step

        def once_broken():
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            return step()

        eng.step = once_broken
        return eng

    loop = EngineLoop(flaky, max_queue=4)
    loop.start()
    try:
        bad, cbad = _job(0, PROMPTS[0])
        loop.submit(bad)
        assert cbad.done.wait(30)
        assert "boom" in cbad.items[-1].error
        good, cgood = _job(1, PROMPTS[0])
        loop.submit(good)
        assert cgood.done.wait(30) and cgood.items[-1].error is None
    finally:
        loop.stop()
    assert [t for e in cgood.items for t in e.tokens] == _offline()[0]
