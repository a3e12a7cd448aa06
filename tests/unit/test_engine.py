"""The reference engine: every scheduler x decoder reproduces plain greedy decoding."""

import pytest
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.decoding import Autoregressive, Speculative
from effbench.kernels_ref.decoding._common import accept_drafts
from effbench.kernels_ref.engine import Engine, EngineConfig, StepContext, layout_of
from effbench.kernels_ref.kvcache import FullKVCacheFactory
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.requests import Phase, Request
from effbench.kernels_ref.scheduling import ChunkedPrefill, ContinuousBatching, StaticBatching

CFG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False)


def _model(seed: int, cfg: LlamaConfig = CFG) -> LlamaModel:
    torch.manual_seed(seed)
    m = LlamaModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return m


TARGET = _model(0)
DRAFT = _model(1, LlamaConfig(**{**CFG.__dict__, "num_hidden_layers": 1}))


def _requests(n=5, new=12):
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 40, (1,), generator=g))
        out.append(Request(i, torch.randint(0, 64, (length,), generator=g).tolist(), new))
    return out


def _greedy_reference(prompt, n):
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(TARGET(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


REFERENCE = [_greedy_reference(r.prompt, r.max_new_tokens) for r in _requests()]


@pytest.mark.parametrize("scheduler", [StaticBatching(), ContinuousBatching(), ChunkedPrefill(8)])
@pytest.mark.parametrize("decoder", ["autoregressive", "speculative"])
def test_engine_matches_unbatched_greedy(scheduler, decoder):
    dec = Autoregressive() if decoder == "autoregressive" else Speculative(k=3)
    engine = Engine(TARGET, attention=DenseAttention(), cache_factory=FullKVCacheFactory(),
                    scheduler=scheduler, decoder=dec, config=EngineConfig(max_batch=3),
                    draft=DRAFT)
    res = engine.run(_requests())
    assert [r.output for r in res.requests] == REFERENCE
    for r in res.requests:
        assert r.phase is Phase.FINISHED
        assert sum(n for _, n in r.emissions) == len(r.output) == r.max_new_tokens
        times = [t for t, _ in r.emissions]
        assert times == sorted(times) and times[0] >= r.arrival_ns
    if decoder == "speculative":
        st = res.decoder_stats
        assert 0 < st["acceptance_rate"] < 1, "distinct random models must disagree sometimes"
        assert st["tokens_per_step"] > 1
        assert any(n > 1 for r in res.requests for _, n in r.emissions)


def test_static_batching_waits_for_whole_batch():
    engine = Engine(TARGET, attention=DenseAttention(), cache_factory=FullKVCacheFactory(),
                    scheduler=StaticBatching(), decoder=Autoregressive(),
                    config=EngineConfig(max_batch=2))
    reqs = _requests(n=3, new=4)
    reqs[0].max_new_tokens = 8  # the batch lasts as long as its longest request
    res = engine.run(reqs)
    first_of_third = res.requests[2].emissions[0][0]
    assert first_of_third > max(t for t, _ in res.requests[0].emissions)


def test_chunked_prefill_respects_token_budget_and_keeps_decoding():
    sched = ChunkedPrefill(token_budget=8)
    engine = Engine(TARGET, attention=DenseAttention(), cache_factory=FullKVCacheFactory(),
                    scheduler=sched, decoder=Autoregressive(), config=EngineConfig(max_batch=4))
    res = engine.run(_requests())
    for s in res.steps:
        assert s.prefill_tokens + s.decode_requests <= max(8, s.decode_requests)
    mixed = [s for s in res.steps if s.prefill_tokens and s.decode_requests]
    assert mixed, "Sarathi batches piggyback prefill chunks on running decodes"


def test_continuous_batching_pauses_decodes_for_prefill():
    engine = Engine(TARGET, attention=DenseAttention(), cache_factory=FullKVCacheFactory(),
                    scheduler=ContinuousBatching(), decoder=Autoregressive(),
                    config=EngineConfig(max_batch=2))
    res = engine.run(_requests())
    assert not [s for s in res.steps if s.prefill_tokens and s.decode_requests]


def test_realtime_arrivals_are_respected():
    reqs = _requests(n=3, new=3)
    for i, r in enumerate(reqs):
        r.arrival_ns = i * 30_000_000  # 30 ms apart
    engine = Engine(TARGET, attention=DenseAttention(), cache_factory=FullKVCacheFactory(),
                    scheduler=ContinuousBatching(), decoder=Autoregressive())
    res = engine.run(reqs, realtime=True)
    for r in res.requests:
        assert r.start_ns >= r.arrival_ns
    assert res.requests[2].arrival_ns - res.requests[0].arrival_ns == 60_000_000


def test_speculative_needs_a_draft():
    with pytest.raises(ValueError, match="draft model"):
        Engine(TARGET, attention=DenseAttention(), cache_factory=FullKVCacheFactory(),
               scheduler=ContinuousBatching(), decoder=Speculative())


def test_rejection_rule_preserves_target_distribution():
    """Sampling through draft-then-verify gives the target's distribution (chi-square)."""
    scipy_stats = pytest.importorskip("scipy.stats")
    vocab = 6
    p_logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 0.3]] * 2)
    q = torch.softmax(torch.tensor([0.0, 2.0, 0.0, 1.0, 0.0, 0.0]), -1)
    gen = torch.Generator().manual_seed(0)
    ctx = StepContext(model=TARGET, attention=DenseAttention(),
                      cache_factory=FullKVCacheFactory(), layout=layout_of(TARGET),
                      temperature=1.0, generator=gen)
    counts = torch.zeros(vocab)
    n = 6000
    for _ in range(n):
        d = int(torch.multinomial(q, 1, generator=gen))
        first = accept_drafts(ctx, [d], [q], p_logits)[0]
        counts[first] += 1
    p = torch.softmax(p_logits[0], -1)
    chi = scipy_stats.chisquare(counts.numpy(), (p * n).numpy())
    assert chi.pvalue > 1e-3


def test_request_validation():
    with pytest.raises(ValueError, match="empty prompt"):
        Request(0, [], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Request(0, [1], 0)
    with pytest.raises(ValueError):
        EngineConfig(max_batch=0)
    with pytest.raises(ValueError):
        ChunkedPrefill(token_budget=0)
