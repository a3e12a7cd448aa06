"""Kernel level: one operator on synthetic tensors of the model's head layout.

``run`` hands a case to its family's kernel runner (``Family.kernel_run``); the attention and
KV-cache runners live here, each with its timed work (``*_timed``, shared with the pytest
plugin), and every metric they produce is declared at the top (``METRICS``).

attention: latency of forward (q_len > 1) or decode (q_len == 1), analytic FLOPs and bytes
turned into TFLOP/s and GB/s, and the max absolute error against the family's registered
baseline (the baseline itself is checked against a float64 reference).
kvcache: per-token append latency over a whole sequence, read latency, bytes per token measured
from the cache's real tensors, compression ratio against the family's baseline cache,
reconstruction error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from effbench.kernels_ref.attention import reference_attention
from effbench.kernels_ref.protocols import AttentionShape, CacheLayout
from effbench.profilers.bandwidth import device_peak, roofline
from effbench.suite import registry
from effbench.suite.cases import Case
from effbench.suite.context import RunContext
from effbench.suite.family import get_family
from effbench.suite.levels import Metric, from_samples, scalar, timing_extra
from effbench.suite.metrics import MetricSpec, declare
from effbench.suite.timing import measure

METRICS = declare(
    "kernel",
    # attention (attention_case)
    MetricSpec("latency", "s", "lower", "timing", "seconds per attention call"),
    MetricSpec("tflops", "TFLOP/s", "higher", "timing", "analytic FLOPs / latency"),
    MetricSpec("bandwidth", "GB/s", "higher", "timing", "analytic bytes / latency"),
    MetricSpec("flops", "FLOP", "lower", "count", "analytic FLOPs of one call"),
    MetricSpec("bytes_moved", "B", "lower", "count", "analytic bytes of one call"),
    MetricSpec("max_abs_error", "abs", "lower", "numeric",
               "max |out - ref| against the family baseline (baseline: a float64 oracle)"),
    # KV cache (kvcache_case)
    MetricSpec("append_latency_per_token", "s", "lower", "timing",
               "seconds to append one token to every layer, over a whole sequence"),
    MetricSpec("read_latency", "s", "lower", "timing", "seconds to read every layer"),
    MetricSpec("bytes_per_token", "B", "lower", "count", "cache bytes / tokens held"),
    MetricSpec("compression_ratio", "x", "higher", "count",
               "the family baseline's bytes / this cache's bytes, same tokens"),
    MetricSpec("key_rel_error", "rel", "lower", "numeric", "max over layers of |K^ - K| / |K|"),
    MetricSpec("value_rel_error", "rel", "lower", "numeric",
               "max over layers of |V^ - V| / |V|"),
    # the roofline point of the timed kernel (roofline_metrics; attention and KV read)
    MetricSpec("arithmetic_intensity", "FLOP/B", "higher", "count", "analytic FLOPs / bytes"),
    MetricSpec("pct_peak_bandwidth", "%", "higher", "timing",
               "bytes / median latency as a percentage of the device's peak bandwidth"),
    MetricSpec("pct_peak_compute", "%", "higher", "timing",
               "FLOPs / median latency as a percentage of the device's peak compute"),
)
"""What this level measures (effbench.suite.metrics); docs/METRICS.md defines each one."""


def attention_shape(case: Case, ctx: RunContext) -> AttentionShape:
    spec = next(s for s in ctx.preset.kernel[case.family].shapes if s.name == case.workload)
    cfg = ctx.model_config
    return AttentionShape(
        batch=spec.batch,
        heads=spec.heads or cfg.num_attention_heads,
        kv_heads=spec.kv_heads or cfg.num_key_value_heads,
        q_len=spec.q_len,
        kv_len=spec.kv_len,
        head_dim=spec.head_dim or cfg.head_dim,
        dtype_bytes=torch.tensor([], dtype=ctx.dtype).element_size(),
    )


def attention_inputs(
    case: Case, ctx: RunContext
) -> tuple[AttentionShape, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The case's shape and its seeded random q, k, v (the same for every technique)."""
    shape = attention_shape(case, ctx)
    gen = torch.Generator(device="cpu").manual_seed(ctx.preset.run.seed)

    def rand(h: int, n: int) -> torch.Tensor:
        t = torch.randn(shape.batch, h, n, shape.head_dim, generator=gen)
        return t.to(device=ctx.device, dtype=ctx.dtype)

    q, k, v = rand(shape.heads, shape.q_len), rand(shape.kv_heads, shape.kv_len), rand(
        shape.kv_heads, shape.kv_len
    )
    return shape, q, k, v


def attention_kernel(backend: Any, shape: AttentionShape) -> Callable[..., torch.Tensor]:
    """The timed call: ``decode`` for one query, ``forward`` otherwise."""
    return backend.decode if shape.q_len == 1 else backend.forward


def kvcache_inputs(
    case: Case, ctx: RunContext
) -> tuple[CacheLayout, int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The model's cache layout, the case's token count and seeded random keys/values."""
    tokens = int(case.workload.removeprefix("kv-"))
    cfg = ctx.model_config
    layout = CacheLayout(
        num_layers=cfg.num_hidden_layers,
        kv_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        dtype=ctx.dtype,
        device=ctx.device,
    )
    gen = torch.Generator(device="cpu").manual_seed(ctx.preset.run.seed)
    shape = (layout.kv_heads, tokens, layout.head_dim)
    data = [
        (torch.randn(shape, generator=gen).to(ctx.device, ctx.dtype),
         torch.randn(shape, generator=gen).to(ctx.device, ctx.dtype))
        for _ in range(layout.num_layers)
    ]
    return layout, tokens, data


def fill_token_by_token(
    factory: Any, layout: CacheLayout, data: list[tuple[torch.Tensor, torch.Tensor]]
) -> Any:
    """A fresh cache filled one decode token at a time, every layer (the timed append work)."""
    cache = factory.new_cache(layout)
    for t in range(data[0][0].shape[1]):
        for layer, (k, v) in enumerate(data):
            cache.append(layer, k[:, t : t + 1], v[:, t : t + 1])
    return cache


def attention_timed(case: Case, ctx: RunContext, backend: Any) -> Callable[[], torch.Tensor]:
    """The timed work of an attention case: ``backend``'s forward (q_len > 1) or decode
    (q_len == 1) on the case's seeded q, k, v, under inference mode.
    """
    shape, q, k, v = attention_inputs(case, ctx)
    fn = attention_kernel(backend, shape)

    def attention() -> torch.Tensor:
        with torch.inference_mode():
            return fn(q, k, v)

    return attention


def attention_case(case: Case, ctx: RunContext) -> list[Metric]:
    """Latency, rates, analytic FLOPs/bytes and the error against the family baseline.

    The baseline itself is checked against a float64 explicit-softmax oracle; every other
    backend against the registered baseline (``registry.baseline_of``) on the same inputs.
    """
    shape, q, k, v = attention_inputs(case, ctx)
    tech = registry.get(case.technique)
    backend = tech.build(case.param_dict)
    fn = attention_kernel(backend, shape)
    with torch.inference_mode():
        out = fn(q, k, v)
        if tech.baseline:
            ref = reference_attention(q.double(), k.double(), v.double())
        else:
            ref = registry.baseline_of(case.family).build().forward(q, k, v)
        err = (out.double() - ref.double()).abs().max().item()
        m = measure(lambda: fn(q, k, v), **ctx.timing_options())
    flops, nbytes = backend.flops(shape), backend.bytes(shape)
    lat = from_samples("latency", m.samples, "s", "lower", timing_extra(m))
    return roofline_metrics(ctx, nbytes, flops, lat.value) + [
        lat,
        from_samples("tflops", [flops / s / 1e12 for s in m.samples], "TFLOP/s", "higher"),
        from_samples("bandwidth", [nbytes / s / 1e9 for s in m.samples], "GB/s", "higher"),
        scalar("flops", flops, "FLOP", "lower"),
        scalar("bytes_moved", nbytes, "B", "lower"),
        scalar("max_abs_error", err, "abs", "lower"),
    ]


def roofline_metrics(ctx: RunContext, nbytes: float, flops: float, seconds: float) -> list[Metric]:
    """Where the kernel sits on the device's roofline (peaks: datasheet, else measured once).

    The peak and its source are kept in each metric's stats, so a record says what it was
    compared against (a datasheet figure for a listed GPU, a measured copy/matmul on a CPU).
    A percentage above 100 is a measurement problem (a peak measured under load, a byte count
    too high), never a result: the record keeps it, marked ``above_peak = 1`` in its stats,
    and reports print it as ``!>100%`` instead of a number.
    """
    if "peak" not in ctx.memo:
        ctx.memo["peak"] = device_peak(str(ctx.device))
    peak = ctx.memo["peak"]
    point = roofline(nbytes, flops, seconds, peak)
    ref = {"peak_gbps": peak.gbps, "peak_tflops": peak.tflops}

    def marked(pct: float) -> dict[str, float]:
        return {**ref, "above_peak": 1.0} if pct > 100.0 else ref

    return [
        scalar("arithmetic_intensity", point.intensity, "FLOP/B", "higher"),
        scalar("pct_peak_bandwidth", point.pct_peak_bw, "%", "higher", marked(point.pct_peak_bw)),
        scalar("pct_peak_compute", point.pct_peak_compute, "%", "higher",
               marked(point.pct_peak_compute)),
    ]


def kvcache_timed(case: Case, ctx: RunContext, factory: Any) -> Callable[[], Any]:
    """The timed work of a KV-cache case: a fresh cache from ``factory`` filled token by
    token with the case's seeded keys and values, every layer, under inference mode.
    """
    layout, _, data = kvcache_inputs(case, ctx)

    def fill() -> Any:
        with torch.inference_mode():
            return fill_token_by_token(factory, layout, data)

    return fill


def kvcache_case(case: Case, ctx: RunContext) -> list[Metric]:
    """Append and read latency, bytes per token, compression and reconstruction error.

    The compression ratio is against the family baseline (``registry.baseline_of``) holding
    the same tokens at the run dtype.
    """
    layout, tokens, data = kvcache_inputs(case, ctx)
    factory = registry.get(case.technique).build(case.param_dict)

    def read_all(cache):
        for layer in range(layout.num_layers):
            cache.read(layer)

    opts = ctx.timing_options()
    with torch.inference_mode():
        cache = fill_token_by_token(factory, layout, data)
        full = registry.baseline_of(case.family).build().new_cache(layout)
        for layer, (k, v) in enumerate(data):
            full.append(layer, k, v)
        kerr, verr = [], []
        for layer, (k, v) in enumerate(data):
            kr, vr = cache.read(layer)
            kerr.append(((kr.float() - k.float()).norm() / k.float().norm()).item())
            verr.append(((vr.float() - v.float()).norm() / v.float().norm()).item())
        append = measure(lambda: fill_token_by_token(factory, layout, data), **opts)
        read = measure(lambda: read_all(cache), **opts)
    per_token = [s / tokens for s in append.samples]
    nbytes = cache.nbytes()
    read_bytes, read_flops = cache.read_cost()
    roof = (roofline_metrics(ctx, read_bytes, read_flops, read.median) if read_bytes > 0
            else [])  # a read that returns views moves nothing: no roofline point
    return roof + [
        from_samples("append_latency_per_token", per_token, "s", "lower", timing_extra(append)),
        from_samples("read_latency", read.samples, "s", "lower", timing_extra(read)),
        scalar("bytes_per_token", nbytes / tokens, "B", "lower"),
        scalar("compression_ratio", full.nbytes() / nbytes, "x", "higher"),
        scalar("key_rel_error", max(kerr), "rel", "lower"),
        scalar("value_rel_error", max(verr), "rel", "lower"),
    ]


def run(case: Case, ctx: RunContext) -> list[Metric]:
    """Run a kernel case with its family's kernel runner (``Family.kernel_run``)."""
    kernel_run = get_family(case.family).kernel_run
    if kernel_run is None:
        raise ValueError(f"family {case.family} has no kernel level")
    return kernel_run(case, ctx)
