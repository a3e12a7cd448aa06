"""Layer-skip self-speculation on the real tiny target: the early exit drafts (deeper exits
agree more), the target's output is kept, an exit at or past the last layer is refused, and a
decoder that writes drafts into the cache has them reserved under a KV memory cap.
"""

from __future__ import annotations

import pytest
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.decoding import Autoregressive, LayerSkip
from effbench.kernels_ref.engine import Engine, EngineConfig, layout_of
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Phase, Request
from effbench.kernels_ref.scheduling import ContinuousBatching

NEW = 24


@pytest.fixture(scope="module")
def setup():
    model, tok = load_checkpoint(EMBEDDED["tiny-target"])
    prompts = [[tok.bos_id, *tok.encode(it["prompt"])] for it in load_evalset()[:4]]
    return model.eval(), prompts


def _engine(model, decoder, cap=None, batch=4) -> Engine:
    return Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                  scheduler=ContinuousBatching(), decoder=decoder,
                  config=EngineConfig(max_batch=batch, max_tokens=1 << 16, kv_memory_cap=cap))


def _run(model, prompts, decoder):
    with torch.inference_mode():
        return _engine(model, decoder).run([Request(i, list(p), NEW)
                                            for i, p in enumerate(prompts)])  # fmt: skip


def test_deeper_exits_draft_better_and_the_output_is_the_targets(setup) -> None:
    model, prompts = setup
    want = [r.output for r in _run(model, prompts, Autoregressive()).requests]
    alpha = {}
    for exit_layer in (1, 3):
        res = _run(model, prompts, LayerSkip(k=3, exit_layer=exit_layer))
        assert [r.output for r in res.requests] == want
        assert res.decoder_stats["tokens_per_step"] > 1.0
        alpha[exit_layer] = res.decoder_stats["acceptance_alpha"]
    assert alpha[3] > alpha[1]


def test_an_exit_at_the_last_layer_is_refused(setup) -> None:
    model, prompts = setup
    with pytest.raises(ValueError, match="exit_layer 4 must be below the target's 4 layers"):
        _run(model, prompts[:1], LayerSkip(exit_layer=4))


def test_drafts_are_reserved_under_a_kv_memory_cap(setup) -> None:
    """The verify pass writes k drafts per request into the cache; the engine's memory check
    reserves them (``lookahead``), so the live caches never pass the cap between steps.
    """
    model, prompts = setup
    per_token = layout_of(model).full_bytes_per_token
    cap = int(2.5 * (max(len(p) for p in prompts) + NEW) * per_token)
    decoder = LayerSkip(k=4, exit_layer=3)
    engine = _engine(model, decoder, cap=cap)
    reqs = [Request(i, list(p), NEW) for i, p in enumerate(prompts)]
    for r in reqs:
        engine.add(r)
    peak = 0
    with torch.inference_mode():
        while engine.busy:
            engine.step()
            peak = max(peak, engine.ctx.cache_factory.memory().used_bytes)
    assert all(r.phase is Phase.FINISHED for r in reqs)
    assert engine.preemptions > 0 and peak <= cap
    assert decoder.lookahead == 4
