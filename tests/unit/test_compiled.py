"""The compiled decode step: its graph equals the model, its modes are checked, its runs are
token-for-token the eager runs (greedy, fp32), and what cannot run compiled says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.attention.streaming_llm import SlidingWindowAttention
from effbench.kernels_ref.checkpoint import load_checkpoint
from effbench.kernels_ref.compiled import (
    BATCH_BUCKETS,
    batch_bucket,
    check_mode,
    kv_bucket,
    step_graph,
)
from effbench.kernels_ref.decoding import Autoregressive, Speculative
from effbench.kernels_ref.engine import Engine, EngineConfig, layout_of
from effbench.kernels_ref.kvcache.full_cache import KVPool, PooledKVCacheFactory
from effbench.kernels_ref.kvcache.kivi import KIVICacheFactory
from effbench.kernels_ref.model import fused_weights
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching
from effbench.suite import runner
from effbench.suite.errors import ConfigError
from effbench.suite.presets import parse


def test_modes_are_checked_in_one_line() -> None:
    check_mode("default", "cpu")
    with pytest.raises(ValueError, match="CUDA graphs, which need a CUDA device; the model is on "
                                         "cpu: use 'default' there"):  # fmt: skip
        check_mode("reduce-overhead", "cpu")
    with pytest.raises(ValueError, match="choose one of off, default, reduce-overhead"):
        check_mode("max-autotune", "cpu")


def test_buckets() -> None:
    assert [kv_bucket(n) for n in (1, 64, 65, 300)] == [64, 64, 128, 512]
    assert [batch_bucket(b) for b in (1, 3, 8, 9)] == [1, 4, 8, 16]
    assert batch_bucket(BATCH_BUCKETS[-1] + 1) is None


def test_step_graph_equals_the_model() -> None:
    """The graph's math (pool writes, position mask, packed weights) against the plain forward:
    a prompt fed in two pieces of a ragged batch gives the dense model's logits.
    """
    model, _ = load_checkpoint("tiny-target")
    ids = torch.randint(3, 4096, (2, 12), generator=torch.Generator().manual_seed(0))
    want = model(ids)
    pool = KVPool(layout_of(model), torch.float32, slots=4, capacity=64)
    fused = [fused_weights(layer) for layer in model.layers]
    slots = torch.tensor([2, 0])
    with torch.inference_mode():
        first = step_graph(model, ids[:, :7], torch.arange(7).expand(2, 7), slots,
                           pool.k, pool.v, 64, fused)  # fmt: skip
        second = step_graph(model, ids[:, 7:], torch.arange(7, 12).expand(2, 5), slots,
                            pool.k, pool.v, 64, fused)  # fmt: skip
    got = torch.cat([first, second], dim=1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_reduce_overhead_on_cpu_is_refused_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(PRESET.format(compile="reduce-overhead", techniques='"dense"'))
    with pytest.raises(ConfigError, match=r"\[engine\] compile: compile mode 'reduce-overhead' "
                                          r"captures CUDA graphs"):  # fmt: skip
        runner.run(parse(path.read_text(), str(path)), results=str(tmp_path / "res"),
                   progress=False, log=lambda _: None)  # fmt: skip
    assert not list((tmp_path / "res").glob("runs/*"))  # no run started


def test_preset_refuses_an_unknown_mode(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(PRESET.format(compile="fast", techniques='"dense"'))
    with pytest.raises(ConfigError, match=r"compile mode 'fast' is not one of \['off', "
                                          r"'default', 'reduce-overhead'\]"):  # fmt: skip
        parse(path.read_text(), str(path))


PRESET = """
[run]
name = "compiled"
model = "tiny"
case_budget_s = 0.2
[engine]
compile = "{compile}"
prompts = 2
batch = 2
max_new_tokens = 6
min_repeats = 1
max_repeats = 1
[[bench]]
technique = {techniques}
levels = ["engine"]
"""


def _engine(model, draft, decoder, mode: str, batch: int, cache=None, attention=None) -> Engine:
    return Engine(model, attention=attention or DenseAttention(),
                  cache_factory=cache or PooledKVCacheFactory(),
                  scheduler=ContinuousBatching(), decoder=decoder,
                  config=EngineConfig(max_batch=batch, max_tokens=1 << 16), compile=mode,
                  draft=draft)  # fmt: skip


@pytest.mark.slow
def test_compiled_runs_are_the_eager_runs_token_for_token() -> None:
    """Greedy fp32 on the shipped models: autoregressive at batch 1 and a ragged batch of 3
    (padded to the bucket of 4), and speculative decoding (ragged draft catch-up and verify);
    every decode and verify forward runs compiled, only prefill eager; StreamingLLM's window
    runs in the graph as a mask; KIVI runs eager, saying why.
    """
    model, tok = load_checkpoint("tiny-target")
    draft, _ = load_checkpoint("tiny-draft-1l")
    prompts = [tok.encode(t) for t in ("def add(a, b):\n", "import os\n\nclass Path",
                                       "for i in range(")]  # fmt: skip

    def outputs(eng: Engine, n: int) -> list[list[int]]:
        res = eng.run([Request(i, p, 10) for i, p in enumerate(prompts[:n])])
        return [r.output for r in res.requests], res

    for decoder, n in ((Autoregressive, 1), (Autoregressive, 3), (lambda: Speculative(k=2), 3)):
        eager, _ = outputs(_engine(model, draft, decoder(), "off", n), n)
        got, res = outputs(_engine(model, draft, decoder(), "default", n), n)
        assert got == eager
        stats = res.compile_stats
        assert stats["compiled_forwards"] > 0
        # short prompts (up to MAX_GRAPH_TOKENS) prefill in the graph too; longer ones eager
        assert set(stats["eager_forwards"]) <= {
            "prefill (eager by design: one graph per prompt length would not pay)"
        }
    window = SlidingWindowAttention(window=8, sinks=2)  # short: the window really cuts
    eager, _ = outputs(_engine(model, draft, Autoregressive(), "off", 3, attention=window), 3)
    got, res = outputs(_engine(model, draft, Autoregressive(), "default", 3, attention=window), 3)
    assert got == eager and res.compile_stats["compiled_forwards"] > 0
    _, res = outputs(_engine(model, draft, Autoregressive(), "default", 2, KIVICacheFactory()), 2)
    assert res.compile_stats["compiled_forwards"] == 0
    assert "cache KIVICache: no slot in a static pool" in res.compile_stats["eager_forwards"]


@pytest.mark.slow
def test_records_name_the_compiled_mode(tmp_path: Path) -> None:
    from effbench.suite.store import load_records

    path = tmp_path / "p.toml"
    path.write_text(PRESET.format(compile="default", techniques='"dense"'))
    out = runner.run(parse(path.read_text(), str(path)), results=str(tmp_path / "res"),
                     progress=False, log=lambda _: None)  # fmt: skip
    df = load_records(out.store.run_dir)
    speed = df[df.metric == "decode_tokens_per_s"].iloc[0]
    assert speed.workload == "eval2-b2-n6-compile-default"
    stats = speed.stats if isinstance(speed.stats, dict) else __import__("json").loads(speed.stats)
    assert stats["compiled_forwards"] > 0 and stats["eager_forwards"] >= 1
    assert list(Path(out.store.run_dir).glob("artifacts/*/compile.json"))


class _UntraceableMask(DenseAttention):
    """A backend that claims the capability but whose mask the compiler cannot trace (dynamo
    traces a lot of Python, ``tolist`` of a constant and ``int`` of a tensor included; an
    explicit graph break stands for what it cannot).
    """

    graph_params = ("untraceable",)

    def graph_mask(self, keys: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()  # what Python the compiler cannot trace amounts to
        return keys[None, None, :] <= pos[:, :, None]


def test_a_compile_failure_names_the_graph_break() -> None:
    """It fails loudly, naming why (the runner then records the case as failed and goes on)."""
    model, tok = load_checkpoint("tiny-target")
    eng = _engine(model, None, Autoregressive(), "default", 1, attention=_UntraceableMask())
    with pytest.raises(Exception, match=r"(?i)graph.break"):
        eng.run([Request(0, tok.encode("x = 1\n"), 3)])
