"""The attention family's behavioural contract, run over every registered backend.

Each registered technique is built with its defaults and with each value of its default sweep,
and checked against ``reference_attention`` (a float64 oracle) under the mask the backend
claims to compute: the causal-offset mask for a lossless technique, the technique's own
sparsity mask (``OWN_MASKS``) otherwise. So a non-lossless backend is held to exactness under
its own sparsity, not to dense attention. A new technique is covered as soon as it registers;
a new non-lossless one must add its mask to ``OWN_MASKS`` (the tests fail loudly until then).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from registry_configs import technique_configs

from effbench.kernels_ref.attention import causal_mask, reference_attention, window_mask
from effbench.kernels_ref.protocols import (
    AttentionBackend,
    AttentionMeta,
    AttentionShape,
    StepInfo,
)
from effbench.suite import registry
from effbench.suite.technique import Technique

HEAD_DIM = 16
ATOL = RTOL = 2e-5  # float32 kernels against the float64 oracle


def _streaming_mask(backend, q_len: int, kv_len: int) -> torch.Tensor:
    return window_mask(q_len, kv_len, backend.window, backend.sinks)


# Technique-specific sparsity of the non-lossless backends: name -> (backend, q_len, kv_len)
# -> boolean (q_len, kv_len) mask. An entry may be None to declare that the technique has no
# exact mask (an approximate kernel); its outputs are then only checked to be finite, of the
# query's shape and dtype. A missing entry fails every test of that technique.
OWN_MASKS: dict[str, Callable[..., torch.Tensor] | None] = {
    "streaming-llm": _streaming_mask,
}

# Known library bugs, (technique, path) -> reason: those tests are strict xfails, so they
# start failing (and this entry must go) as soon as the bug is fixed.
KNOWN_BUGS: dict[tuple[str, str], str] = {}  # (technique, path) -> reason: strict xfail


CONFIGS = technique_configs("attention")
DEFAULTS = [c for c in CONFIGS if not c.values[1]]
LOSSLESS = [c for c in DEFAULTS if c.values[0].lossless]


def own_mask(tech: Technique, backend, q_len: int, kv_len: int) -> torch.Tensor | None:
    """The mask ``backend`` claims to compute exactly (None: it declares no exact mask)."""
    if tech.lossless:
        return causal_mask(q_len, kv_len)
    if tech.name not in OWN_MASKS:
        pytest.fail(
            f"non-lossless attention technique {tech.name!r} has no entry in OWN_MASKS "
            f"({__file__}): add its sparsity mask, or None if it has no exact one"
        )
    fn = OWN_MASKS[tech.name]
    return None if fn is None else fn(backend, q_len, kv_len)


def qkv(q_len, kv_len, heads=8, kv_heads=2, batch=(2,), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, heads, q_len, HEAD_DIM, generator=g)
    k = torch.randn(*batch, kv_heads, kv_len, HEAD_DIM, generator=g)
    v = torch.randn(*batch, kv_heads, kv_len, HEAD_DIM, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def check(out, q, k, v, mask) -> None:
    """Shape, dtype and finiteness always; closeness to the oracle when a mask is known."""
    assert out.shape == q.shape, f"output {tuple(out.shape)} for queries {tuple(q.shape)}"
    assert out.dtype == q.dtype
    assert torch.isfinite(out).all()
    if mask is None:  # the technique declared no exact mask (OWN_MASKS entry None)
        return
    ref = reference_attention(q, k, v, mask)
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=RTOL)


def mark_known_bug(request, tech: Technique, path: str) -> None:
    reason = KNOWN_BUGS.get((tech.name, path))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def window_predicate(width: int):
    """Sliding-window predicate (attention-gym style): key within ``width`` of the query."""
    return lambda b, h, qp, kp: (qp - kp) < width


def document_predicate(doc_len: int):
    """Block-diagonal documents of ``doc_len`` positions: attend within the same document."""
    return lambda b, h, qp, kp: (qp // doc_len) == (kp // doc_len)


def predicate_reference(name: str, q_start: int, q_len: int, kv_len: int) -> torch.Tensor:
    """The predicates' masks built independently of ``predicate_mask`` (causal included)."""
    if name == "window":
        return window_mask(q_len, kv_len, 10, 0)
    qp = torch.arange(q_start, q_start + q_len)[:, None]
    kp = torch.arange(kv_len)[None, :]
    return (qp // 8 == kp // 8) & (kp <= qp)


PREDICATES = {"window": window_predicate(10), "document": document_predicate(8)}


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("tech,params", CONFIGS)
def test_registered_backend_satisfies_protocol(tech, params):
    backend = tech.build(params)
    assert isinstance(backend, AttentionBackend)
    shape = AttentionShape(batch=2, heads=8, kv_heads=2, q_len=24, kv_len=96, head_dim=HEAD_DIM)
    assert backend.flops(shape) > 0 and backend.bytes(shape) > 0


def test_every_non_lossless_technique_declares_its_mask():
    missing = [t.name for t in registry.techniques("attention")
               if not t.lossless and t.name not in OWN_MASKS]
    assert not missing, f"add these to OWN_MASKS in {__file__}: {missing}"


@pytest.mark.parametrize("q_len,kv_len", [(16, 16), (96, 96), (24, 96), (5, 96), (1, 96)],
                         ids=["prefill-short", "prefill-long", "chunk", "verify", "one-query"])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_forward_matches_reference_under_own_mask(tech, params, q_len, kv_len):
    backend = tech.build(params)
    q, k, v = qkv(q_len, kv_len)
    mask = own_mask(tech, backend, q_len, kv_len)
    out = backend.forward(q, k, v)
    check(out, q, k, v, mask)
    # The engine's per-call metadata (plain causal, no predicate) must not change the result.
    with_meta = backend.forward(q, k, v, AttentionMeta.single(q_len, kv_len, layer=1))
    check(with_meta, q, k, v, mask)
    torch.testing.assert_close(with_meta, out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("heads,kv_heads", [(8, 2), (4, 4), (6, 1)], ids=["gqa4", "mha", "mqa"])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_grouped_query_heads(tech, params, heads, kv_heads):
    backend = tech.build(params)
    for q_len in (24, 1):
        q, k, v = qkv(q_len, 96, heads, kv_heads)
        mask = own_mask(tech, backend, q_len, 96)
        check(backend.forward(q, k, v), q, k, v, mask)
    check(backend.decode(q, k, v), q, k, v, mask)


@pytest.mark.parametrize("tech,params", CONFIGS)
def test_unbatched_layout(tech, params):
    """Leading batch dims are optional: the model calls with ``(heads, tokens, head_dim)``."""
    backend = tech.build(params)
    for q_len in (24, 1):
        q, k, v = qkv(q_len, 96, batch=())
        mask = own_mask(tech, backend, q_len, 96)
        check(backend.forward(q, k, v), q, k, v, mask)
    check(backend.decode(q, k, v), q, k, v, mask)


@pytest.mark.parametrize("kv_len", [1, 17, 68, 69, 96, 150])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_decode_matches_reference_and_forward(tech, params, kv_len):
    backend = tech.build(params)
    q, k, v = qkv(1, kv_len, seed=kv_len)
    mask = own_mask(tech, backend, 1, kv_len)
    out = backend.decode(q, k, v)
    check(out, q, k, v, mask)
    check(backend.decode(q, k, v, AttentionMeta.single(1, kv_len)), q, k, v, mask)
    torch.testing.assert_close(backend.forward(q, k, v), out, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError):
        backend.decode(*qkv(2, kv_len + 1))


LENGTHS = [96, 40, 1, 69, 68, 150, 3]


def padded_batch(lengths, garbage: float = 50.0, seed: int = 3):
    """One query per sequence over keys padded to the longest; the padding is large garbage
    (a pooled cache leaves stale data there), so an unmasked pad shows up at once.
    """
    g = torch.Generator().manual_seed(seed)
    b, longest = len(lengths), max(lengths)
    q = torch.randn(b, 8, 1, HEAD_DIM, generator=g)
    k = torch.randn(b, 2, longest, HEAD_DIM, generator=g)
    v = torch.randn(b, 2, longest, HEAD_DIM, generator=g)
    for i, n in enumerate(lengths):
        k[i, :, n:] = garbage * torch.randn(2, longest - n, HEAD_DIM, generator=g)
        v[i, :, n:] = garbage * torch.randn(2, longest - n, HEAD_DIM, generator=g)
    return q, k, v


def engine_decode_meta(lengths, mask=None) -> AttentionMeta:
    """The metadata the model passes to ``decode_padded``: the whole batch (seq -1)."""
    step = StepInfo(tuple(range(len(lengths))), tuple(n - 1 for n in lengths),
                    (1,) * len(lengths), mask=mask)
    return AttentionMeta(0, -1, step)


@pytest.mark.parametrize("meta", ["none", "engine"])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_decode_padded_equals_per_sequence_decode(tech, params, meta):
    backend = tech.build(params)
    q, k, v = padded_batch(LENGTHS)
    m = None if meta == "none" else engine_decode_meta(LENGTHS)
    out = backend.decode_padded(q, k, v, LENGTHS, m)
    assert out.shape == q.shape and out.dtype == q.dtype
    for i, n in enumerate(LENGTHS):
        qi, ki, vi = q[i : i + 1], k[i : i + 1, :, :n], v[i : i + 1, :, :n]
        seq_meta = None if m is None else AttentionMeta(0, i, m.step)
        alone = backend.decode(qi, ki, vi, seq_meta)
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-6, rtol=1e-5)
        check(out[i : i + 1], qi, ki, vi, own_mask(tech, backend, 1, n))


@pytest.mark.parametrize("predicate", sorted(PREDICATES))
@pytest.mark.parametrize("q_len,kv_len", [(96, 96), (24, 96), (1, 96)])
@pytest.mark.parametrize("tech,params", DEFAULTS)
def test_forward_with_mask_predicate(tech, params, q_len, kv_len, predicate):
    """A predicate in the metadata is applied on top of the backend's own mask."""
    backend = tech.build(params)
    mask = own_mask(tech, backend, q_len, kv_len)
    pred_mask = predicate_reference(predicate, kv_len - q_len, q_len, kv_len)
    q, k, v = qkv(q_len, kv_len)
    meta = AttentionMeta.single(q_len, kv_len, mask=PREDICATES[predicate])
    check(backend.forward(q, k, v, meta), q, k, v, None if mask is None else mask & pred_mask)


@pytest.mark.parametrize("predicate", sorted(PREDICATES))
@pytest.mark.parametrize("kv_len", [17, 96, 150])
@pytest.mark.parametrize("tech,params", DEFAULTS)
def test_decode_with_mask_predicate(request, tech, params, kv_len, predicate):
    mark_known_bug(request, tech, "decode+predicate")
    backend = tech.build(params)
    mask = own_mask(tech, backend, 1, kv_len)
    pred_mask = predicate_reference(predicate, kv_len - 1, 1, kv_len)
    q, k, v = qkv(1, kv_len)
    meta = AttentionMeta.single(1, kv_len, mask=PREDICATES[predicate])
    check(backend.decode(q, k, v, meta), q, k, v, None if mask is None else mask & pred_mask)


@pytest.mark.parametrize("predicate", sorted(PREDICATES))
@pytest.mark.parametrize("tech,params", DEFAULTS)
def test_decode_padded_with_mask_predicate(request, tech, params, predicate):
    """The batched decode path applies the predicate at each sequence's own position."""
    mark_known_bug(request, tech, "decode_padded+predicate")
    backend = tech.build(params)
    q, k, v = padded_batch(LENGTHS)
    meta = engine_decode_meta(LENGTHS, PREDICATES[predicate])
    out = backend.decode_padded(q, k, v, LENGTHS, meta)
    for i, n in enumerate(LENGTHS):
        mask = own_mask(tech, backend, 1, n)
        pred_mask = predicate_reference(predicate, n - 1, 1, n)
        check(out[i : i + 1], q[i : i + 1], k[i : i + 1, :, :n], v[i : i + 1, :, :n],
              None if mask is None else mask & pred_mask)


@pytest.mark.parametrize("q_len,kv_len", [(12, 12), (5, 12), (1, 12)])
@pytest.mark.parametrize("tech,params", LOSSLESS)
def test_bidirectional_meta(tech, params, q_len, kv_len):
    """``StepInfo(causal=False)``: an exact backend attends to every key (diffusion LMs)."""
    backend = tech.build(params)
    q, k, v = qkv(q_len, kv_len)
    meta = AttentionMeta(0, 0, StepInfo((0,), (kv_len - q_len,), (q_len,), causal=False))
    full = torch.ones(q_len, kv_len, dtype=torch.bool)
    check(backend.forward(q, k, v, meta), q, k, v, full)
    if q_len == 1:
        check(backend.decode(q, k, v, meta), q, k, v, full)
    if q_len > 1:  # with causality off the first query must see the keys after it
        causal = backend.forward(q, k, v)
        assert not torch.allclose(causal[..., 0, :], backend.forward(q, k, v, meta)[..., 0, :])


@pytest.mark.parametrize("tech,params", LOSSLESS)
def test_predicate_leaving_a_query_nothing_is_refused(tech, params):
    backend = tech.build(params)
    q, k, v = qkv(4, 8)
    meta = AttentionMeta.single(4, 8, mask=lambda b, h, qp, kp: kp > qp)  # only future keys
    with pytest.raises(ValueError, match="no key"):
        backend.forward(q, k, v, meta)


@pytest.mark.parametrize("tech,params", CONFIGS)
def test_low_precision_keeps_dtype(tech, params):
    backend = tech.build(params)
    for q_len in (24, 1):
        q, k, v = qkv(q_len, 96, dtype=torch.bfloat16)
        out = backend.forward(q, k, v)
        mask = own_mask(tech, backend, q_len, 96)
        assert out.dtype == torch.bfloat16 and out.shape == q.shape
        if mask is not None:
            ref = reference_attention(q, k, v, mask)
            torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)
