"""The KV-cache family's behavioural contract, run over every registered cache factory.

Each registered technique is built with its defaults and with the other values of its default
sweep (and the other value of each bool parameter), plus the not-yet-registered paged cache
(kernels_ref/kvcache/paged.py), and its caches are checked over a small ``CacheLayout``:
append/read round trip (exact for lossless techniques; for lossy ones within the bound its
``bits`` implies, and under 0.5 relative error in any case), length, truncate, keep (all
layers, one layer), ``nbytes`` measured from the held tensors, the batched ``gather_decode``
path, and the factory's ``memory()``. The paged pool's block manager is tested directly at the
end.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from effbench.kernels_ref.kvcache.paged import BlockManager, PagedKVCacheFactory
from effbench.kernels_ref.protocols import CacheLayout, KVCache, KVCacheFactory, MemoryState
from effbench.suite import registry

LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 32
TOKENS = 110  # past residual + 2 groups of KIVI's defaults, so its packed store is exercised
CHUNKS = (5, 1, 1, 17, 3, 40, 2)  # prefill, decode and verification-sized appends
GENERIC_REL_ERR = 0.5  # any lossy cache must keep the relative error below this


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], KVCacheFactory]
    lossless: bool


def _variations(tech) -> list[tuple[str, object]]:
    out = []
    for p in tech.params:
        values = list(p.sweep)
        if p.type == "bool":
            values.append(not p.default)
        for value in dict.fromkeys(values):
            if value != p.default:
                out.append((p.name, value))
    return out


def _cases() -> list:
    out = []
    for t in registry.techniques("kvcache"):
        out.append(pytest.param(Case(t.name, t.build, t.lossless), id=t.name))
        for name, value in _variations(t):
            make = functools.partial(t.build, {name: value})
            out.append(pytest.param(Case(f"{t.name}-{name}={value}", make, t.lossless),
                                    id=f"{t.name}-{name}={value}"))
    out.append(pytest.param(
        Case("paged", lambda: PagedKVCacheFactory(block_size=16, num_blocks=64), True),
        id="paged(unregistered)",
    ))
    return out


CASES = _cases()


def layout(dtype=torch.float32) -> CacheLayout:
    return CacheLayout(num_layers=LAYERS, kv_heads=KV_HEADS, head_dim=HEAD_DIM, dtype=dtype,
                       device=torch.device("cpu"))


def kv(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct keys/values per layer: ``(layers, kv_heads, n, head_dim)`` each."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(LAYERS, KV_HEADS, n, HEAD_DIM, generator=g),
            torch.randn(LAYERS, KV_HEADS, n, HEAD_DIM, generator=g))


def fill(caches, ks, vs, chunks=CHUNKS) -> None:
    """Append each cache's tokens layer by layer in chunks of varying size, the caches
    interleaved chunk by chunk (as an engine step does).
    """
    pos = [0] * len(caches)
    c = 0
    while any(p < k.shape[2] for p, k in zip(pos, ks)):
        n = chunks[c % len(chunks)]
        for i, (cache, k, v) in enumerate(zip(caches, ks, vs)):
            a, b = pos[i], min(pos[i] + n, k.shape[2])
            if a < b:
                for layer in range(LAYERS):
                    cache.append(layer, k[layer, :, a:b], v[layer, :, a:b])
            pos[i] = b
        c += 1


def new_filled(case: Case, n: int = TOKENS, seed: int = 0):
    factory = case.make()
    cache = factory.new_cache(layout())
    k, v = kv(n, seed)
    fill([cache], [k], [v])
    return factory, cache, k, v


def full_bytes(tokens_per_layer) -> int:
    """2 x kv_heads x tokens x head_dim x element size, summed over layers (float32)."""
    return sum(2 * KV_HEADS * t * HEAD_DIM * 4 for t in tokens_per_layer)


def assert_stored(case: Case, factory, got: torch.Tensor, want: torch.Tensor) -> None:
    """Exact for lossless caches; for lossy ones within the bits-derived bound (when the
    factory declares ``bits``) and under ``GENERIC_REL_ERR`` relative error.
    """
    assert got.shape == want.shape and got.dtype == want.dtype
    if case.lossless:
        assert torch.equal(got, want)
        return
    if want.numel() == 0:
        return
    rel = float((got - want).norm() / want.norm())
    assert rel < GENERIC_REL_ERR, f"relative error {rel:.3f}"
    bits = getattr(factory, "bits", None)
    if bits is not None:
        # Asymmetric uniform quantization: each element is within half a step of its group's
        # grid, a step being (group max - group min) / (2**bits - 1) <= the tensor's range over
        # the same; float16 scales/zeros add a relative 2**-11 of the range and magnitude.
        rng = float(want.max() - want.min())
        bound = rng / (2 * (2**bits - 1)) + (rng + float(want.abs().max())) * 2**-10
        err = float((got - want).abs().max())
        assert err <= bound, f"max error {err:.4f} beyond the {bits}-bit bound {bound:.4f}"


def reads(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [tuple(t.clone() for t in cache.read(layer)) for layer in range(LAYERS)]


# ----------------------------------------------------------------------------- the contract


def test_registry_has_kvcache_techniques():
    assert registry.techniques("kvcache"), "no registered kvcache technique to check"


@pytest.mark.parametrize("case", CASES)
def test_protocols(case):
    factory = case.make()
    assert isinstance(factory, KVCacheFactory)
    cache = factory.new_cache(layout())
    assert isinstance(cache, KVCache)
    assert isinstance(factory.memory(), MemoryState)
    assert cache.length() == 0 and cache.nbytes() == 0
    assert isinstance(cache.observes, bool)
    k, v = kv(5)
    fill([cache], [k], [v])
    moved, flops = cache.read_cost()
    assert moved >= 0 and flops >= 0
    cache.truncate(0)
    k, v = cache.read(0)
    assert k.shape == v.shape == (KV_HEADS, 0, HEAD_DIM)


@pytest.mark.parametrize("case", CASES)
def test_append_read_round_trip(case):
    factory, cache, k, v = new_filled(case)
    for layer in range(LAYERS):
        assert cache.length(layer) == TOKENS
        kr, vr = cache.read(layer)
        assert kr.dtype == vr.dtype == torch.float32
        assert_stored(case, factory, kr, k[layer])
        assert_stored(case, factory, vr, v[layer])


@pytest.mark.parametrize("case", CASES)
def test_low_precision_layout_reads_model_dtype(case):
    factory = case.make()
    cache = factory.new_cache(layout(torch.bfloat16))
    k, v = kv(40)
    fill([cache], [k.bfloat16()], [v.bfloat16()])
    kr, vr = cache.read(1)
    assert kr.dtype == vr.dtype == torch.bfloat16 and kr.shape == (KV_HEADS, 40, HEAD_DIM)
    if case.lossless:
        assert torch.equal(kr, k[1].bfloat16()) and torch.equal(vr, v[1].bfloat16())


@pytest.mark.parametrize("n", [TOKENS + 5, TOKENS, 100, 64, 50, 32, 1, 0])
@pytest.mark.parametrize("case", CASES)
def test_truncate_keeps_the_first_tokens_as_they_were(case, n):
    factory, cache, k, v = new_filled(case)
    before = reads(cache)
    cache.truncate(n)
    kept = min(n, TOKENS)
    for layer in range(LAYERS):
        assert cache.length(layer) == kept
        kr, vr = cache.read(layer)
        # the surviving tokens read back exactly as they read before the cut, lossy or not
        assert torch.equal(kr, before[layer][0][:, :kept])
        assert torch.equal(vr, before[layer][1][:, :kept])
    if case.lossless:
        assert cache.nbytes() == full_bytes([kept] * LAYERS)
    if kept == 0:
        assert cache.nbytes() == 0
    # rollback, then the sequence goes on (speculative decoding's verify step): the kept
    # tokens as they read before the cut, then the new ones
    k2, v2 = kv(40, seed=1)
    fill([cache], [k2], [v2])
    for layer in range(LAYERS):
        assert cache.length(layer) == kept + 40
        kr, vr = cache.read(layer)
        assert_stored(case, factory, kr, torch.cat((before[layer][0][:, :kept], k2[layer]), 1))
        assert_stored(case, factory, vr, torch.cat((before[layer][1][:, :kept], v2[layer]), 1))
        if case.lossless:
            assert torch.equal(kr[:, :kept], k[layer][:, :kept])


def keep_indices() -> list[int]:
    idx = list(range(0, 4)) + list(range(7, TOKENS, 3)) + [TOKENS - 2, TOKENS - 1]
    return sorted(set(idx))


@pytest.mark.parametrize("as_tensor", [False, True], ids=["list", "tensor"])
@pytest.mark.parametrize("case", CASES)
def test_keep_selects_tokens_of_every_layer(case, as_tensor):
    factory, cache, _, _ = new_filled(case)
    before = reads(cache)
    idx = keep_indices()
    cache.keep(torch.tensor(idx) if as_tensor else idx)
    for layer in range(LAYERS):
        assert cache.length(layer) == len(idx)
        kr, vr = cache.read(layer)
        assert_stored(case, factory, kr, before[layer][0][:, idx])
        assert_stored(case, factory, vr, before[layer][1][:, idx])
    if case.lossless:
        assert cache.nbytes() == full_bytes([len(idx)] * LAYERS)
    k2, v2 = kv(3, seed=2)
    fill([cache], [k2], [v2])
    assert cache.length(0) == len(idx) + 3


@pytest.mark.parametrize("case", CASES)
def test_keep_one_layer_changes_only_that_layer(case):
    factory, cache, _, _ = new_filled(case)
    before = reads(cache)
    idx = keep_indices()
    cache.keep(idx, layer=1)
    assert cache.length(1) == len(idx) and cache.length(0) == TOKENS
    kr, vr = cache.read(1)
    assert_stored(case, factory, kr, before[1][0][:, idx])
    assert_stored(case, factory, vr, before[1][1][:, idx])
    k0, v0 = cache.read(0)
    assert torch.equal(k0, before[0][0]) and torch.equal(v0, before[0][1])
    if case.lossless:
        assert cache.nbytes() == full_bytes([TOKENS, len(idx)])


@pytest.mark.parametrize("case", CASES)
def test_keep_refuses_bad_indices_without_change(case):
    _, cache, _, _ = new_filled(case, n=20)
    before = reads(cache)
    with pytest.raises(IndexError):
        cache.keep([0, 5, 20])
    with pytest.raises(ValueError):
        cache.keep([5, 3])
    for layer in range(LAYERS):
        assert cache.length(layer) == 20
        assert all(torch.equal(a, b) for a, b in zip(cache.read(layer), before[layer]))


@pytest.mark.parametrize("case", CASES)
def test_nbytes_is_measured_and_grows(case):
    factory = case.make()
    cache = factory.new_cache(layout())
    k, v = kv(TOKENS)
    seen, pos = [], 0
    for n in CHUNKS * 3:
        if pos >= TOKENS:
            break
        b = min(TOKENS, pos + n)
        for layer in range(LAYERS):
            cache.append(layer, k[layer, :, pos:b], v[layer, :, pos:b])
        pos = b
        nb = cache.nbytes()
        assert isinstance(nb, int)
        assert 0 < nb <= full_bytes([pos] * LAYERS), "a cache never holds more than full KV"
        if case.lossless:
            assert nb == full_bytes([pos] * LAYERS)
        cache.read(0)  # reading (dequantizing, gathering) must not change what is held
        assert cache.nbytes() == nb
        seen.append(nb)
    if case.lossless:
        assert seen == sorted(seen) and len(set(seen)) == len(seen), "strictly increasing"
    else:
        # A compressing cache's bytes may drop when full-precision tokens are packed (KIVI
        # moves a group out of its residual), so only growth over the run is required.
        assert seen[-1] > seen[0]


@pytest.mark.parametrize("lengths", [(10, 70, 33), (1,), (17, 17)], ids=["ragged", "one", "equal"])
@pytest.mark.parametrize("case", CASES)
def test_gather_decode_pads_each_caches_read(case, lengths):
    factory = case.make()
    caches = [factory.new_cache(layout()) for _ in lengths]
    ks, vs = zip(*(kv(n, seed=i) for i, n in enumerate(lengths)))
    fill(caches, ks, vs)
    knew, vnew = kv(len(lengths), seed=9)  # one new token per sequence
    for layer in range(LAYERS):
        kt = knew[layer]  # (kv_heads, batch, head_dim)
        vt = vnew[layer]
        kp, vp, got = type(caches[0]).gather_decode(caches, layer, kt, vt)
        assert list(got) == [n + 1 for n in lengths]
        assert kp.shape == vp.shape == (len(lengths), KV_HEADS, max(got), HEAD_DIM)
        for i, cache in enumerate(caches):
            assert cache.length(layer) == lengths[i] + 1
            kr, vr = cache.read(layer)
            assert torch.equal(kp[i, :, : got[i]], kr) and torch.equal(vp[i, :, : got[i]], vr)
            want_k = torch.cat((ks[i][layer], kt[:, i : i + 1]), dim=1)
            want_v = torch.cat((vs[i][layer], vt[:, i : i + 1]), dim=1)
            assert_stored(case, factory, kr, want_k)
            assert_stored(case, factory, vr, want_v)


@pytest.mark.parametrize("case", CASES)
def test_factory_memory_sums_live_caches(case):
    factory = case.make()
    a, b = factory.new_cache(layout()), factory.new_cache(layout())
    (ka, va), (kb, vb) = kv(TOKENS, 0), kv(40, 1)
    fill([a, b], [ka, kb], [va, vb])

    def check(live) -> int:
        mem = factory.memory()
        held = sum(c.nbytes() for c in live)
        if mem.capacity_bytes is None:
            assert mem.used_bytes == held
        else:  # a pool reports what it has handed out (whole blocks), within its capacity
            assert held <= mem.used_bytes <= mem.capacity_bytes
            assert mem.free_bytes == mem.capacity_bytes - mem.used_bytes
        return mem.used_bytes

    both = check([a, b])
    assert both > 0
    del a
    gc.collect()
    only_b = check([b])
    assert only_b < both
    b.truncate(10)
    assert check([b]) <= only_b
    del b
    gc.collect()
    assert factory.memory().used_bytes == 0


# ----------------------------------------------------------------------------- paged pool


def test_block_manager_allocates_frees_and_truncates():
    m = BlockManager(num_blocks=8, block_size=4)
    assert m.allocate(1) == 0
    m.append(1, 10)  # 3 blocks
    assert len(m.tables[1].blocks) == 3 and m.tables[1].tokens == 10
    assert m.free_blocks == 5 and m.free_tokens == 20
    m.append(1, 2)  # fills the third block, no new one
    assert m.free_blocks == 5
    m.append(1, 1)
    assert m.free_blocks == 4
    m.truncate(1, 5)  # 2 blocks kept
    assert len(m.tables[1].blocks) == 2 and m.tables[1].tokens == 5 and m.free_blocks == 6
    m.truncate(1, 0)
    assert m.tables[1].blocks == [] and m.free_blocks == 8
    m.append(1, 4)
    m.free_seq(1)
    assert 1 not in m.tables and m.free_blocks == 8
    with pytest.raises(ValueError):
        m.allocate(2)
        m.allocate(2)
    with pytest.raises(ValueError):
        BlockManager(0, 4)


def test_block_manager_shares_full_prefix_blocks():
    m = BlockManager(num_blocks=8, block_size=4)
    prompt = list(range(100, 110))  # 2 full blocks + 2 tokens
    assert m.allocate(1, prompt) == 0
    m.append(1, len(prompt), prompt)
    other = prompt[:8] + [7, 7, 7]  # same first 2 full blocks, different tail
    assert m.allocate(2, other) == 8
    assert m.hit_tokens == 8 and m.lookup_tokens == len(prompt) + len(other)
    assert m.hit_rate == pytest.approx(8 / 21)
    shared = m.tables[1].blocks[:2]
    assert m.tables[2].blocks == shared
    assert all(m.blocks[i].refs == 2 for i in shared)
    m.append(2, len(other) - 8, other)
    assert m.tables[2].blocks[:2] == shared and len(m.tables[2].blocks) == 3
    assert m.tables[2].blocks[2] != m.tables[1].blocks[2]
    assert m.free_blocks == 8 - 4
    m.free_seq(1)  # the other sequence keeps the shared blocks
    assert all(m.blocks[i].refs == 1 for i in shared)
    assert not set(shared) & set(m.free)
    assert m.free_blocks == 8 - 3
    m.free_seq(2)
    assert m.free_blocks == 8
    # freed full blocks stay findable by their prefix hash until reused
    assert m.allocate(3, prompt) == 8 and m.tables[3].blocks == shared
    # a different first block shares nothing, even if the second block's tokens match
    assert m.allocate(4, [0, 0, 0, 0] + prompt[4:8]) == 0


def test_block_manager_exhaustion_raises_memory_error():
    m = BlockManager(num_blocks=2, block_size=4)
    m.allocate(1)
    m.append(1, 8)
    m.allocate(2)
    with pytest.raises(MemoryError):
        m.append(2, 1)
    assert m.tables[2].blocks == [] and m.tables[2].tokens == 0 and m.free_blocks == 0
    m.free_seq(1)
    m.append(2, 5)
    assert m.free_blocks == 0


def test_paged_factory_reports_pool_capacity_and_blocks():
    factory = PagedKVCacheFactory(block_size=16, num_blocks=8)
    assert factory.memory() == MemoryState(0, None)  # no pool before the first cache
    cache = factory.new_cache(layout())
    block_bytes = 2 * LAYERS * KV_HEADS * 16 * HEAD_DIM * 4
    assert factory.memory() == MemoryState(0, 8 * block_bytes)
    k, v = kv(20)
    fill([cache], [k], [v])
    assert factory.memory().used_bytes == 2 * block_bytes  # 20 tokens take 2 blocks of 16
    assert cache.nbytes() == full_bytes([20, 20])
    assert cache.allocated_nbytes() == 2 * block_bytes
    cache.truncate(16)
    assert factory.memory().used_bytes == block_bytes
    del cache
    gc.collect()
    assert factory.memory().used_bytes == 0 and factory.manager.free_blocks == 8


def test_paged_cache_pool_exhaustion_raises_memory_error():
    factory = PagedKVCacheFactory(block_size=4, num_blocks=2)
    cache = factory.new_cache(layout())
    k, v = kv(9)
    with pytest.raises(MemoryError):
        fill([cache], [k], [v], chunks=(9,))
