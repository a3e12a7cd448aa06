"""Compiled decode: the engine's decode and verify steps as one ``torch.compile`` graph.

Why: the reference engine's decode step runs about a hundred small operators per layer through
Python, so on a CPU (and at small batch on a GPU, as kernel launches) per-operator overhead,
not arithmetic, sets its speed, and every technique's engine-level speedup is squeezed toward
1x. gpt-fast and nano-vllm get their speed from compiling the step over a position-indexed KV
layout; this module does the same for effbench's baseline cache, as a measured mode.

The graph (:func:`step_graph`) takes ``T`` new tokens for each of ``B`` sequences that own slots
of one :class:`~effbench.kernels_ref.kvcache.full_cache.KVPool`, writes their keys and values at
their positions with one indexed store per layer, and attends over the first ``kv_len`` pool
positions of their slots under a position mask. Shapes are bucketed so the step does not
recompile as sequences grow: the batch pads up to a bucket (:data:`BATCH_BUCKETS`; padding rows
write into a scratch slot) and ``kv_len`` is the next power of two. Each new (model, batch
bucket, tokens, ``kv_len``, pool shape) is one compilation; :class:`CompiledStep` counts them
and times them (cold; a warm inductor cache makes the second run's cheaper).

On CUDA, ``mode="reduce-overhead"`` also captures each bucket as a CUDA graph (the pool's
buffers are marked as static addresses so their in-place writes do not force eager); batches
larger than the last bucket run eager, counted as a fallback. Everything the graph cannot
express runs the eager path and is counted per reason (``eager_forwards``): other caches (their
storage is not a slot of a pool), attention backends without a ``graph_mask`` (dense and
StreamingLLM have one), shared-prefix metadata, hidden-state or partial-layer requests, and
prefill (feeds longer than :data:`MAX_GRAPH_TOKENS`). Feeds of unequal length pad to the longest.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from effbench.kernels_ref.kvcache.full_cache import KVPool, PooledKVCache
from effbench.kernels_ref.model import LlamaModel, Rotary, fused_weights
from effbench.kernels_ref.protocols import AttentionBackend, Feed

COMPILE_MODES = ("off", "default", "reduce-overhead")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MIN_KV_LEN = 64
MAX_GRAPH_TOKENS = 16
"""Most tokens per sequence a graph takes (decode, speculative verify); prefill runs eager."""


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept between runs (``$EFFBENCH_CACHE`` or
    ``~/.cache/effbench``, then ``inductor``), so a second run starts warm.
    """
    root = os.environ.get("EFFBENCH_CACHE") or Path.home() / ".cache" / "effbench"
    return Path(root) / "inductor"


def check_mode(mode: str, device: torch.device | str) -> None:
    """Refuse an unknown mode, and CUDA graphs on a device that is not CUDA, in one line."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    if mode == "reduce-overhead" and torch.device(device).type != "cuda":
        raise ValueError(
            f"compile mode 'reduce-overhead' captures CUDA graphs, which need a CUDA device; "
            f"the model is on {torch.device(device).type}: use 'default' there"
        )


def kv_bucket(length: int) -> int:
    """The static key length a step of sequences up to ``length`` tokens runs at."""
    n = MIN_KV_LEN
    while n < length:
        n *= 2
    return n


def compile_label(mode: str) -> str:
    """What a run in ``mode`` appends to its labels: nothing when eager (labels, case ids and
    baselines stay), else ``-compile-<mode>`` (its speed is never compared with eager's).
    """
    return "" if mode == "off" else f"-compile-{mode}"


def batch_bucket(batch: int) -> int | None:
    """The padded batch a step of ``batch`` sequences runs at (None: above every bucket)."""
    return next((b for b in BATCH_BUCKETS if b >= batch), None)


def step_graph(
    model: LlamaModel, ids: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
    k_pool: list[torch.Tensor], v_pool: list[torch.Tensor], kv_len: int,
    fused: list[tuple[torch.Tensor, torch.Tensor]], attention: AttentionBackend | None = None,
) -> torch.Tensor:  # fmt: skip
    """Logits ``(B, T, vocab)`` of ``ids`` ``(B, T)`` at positions ``pos`` ``(B, T)``.

    Sequence ``b`` owns pool slot ``slots[b]``; its new keys and values are written at ``pos``
    in every layer, then each query attends to the slot's keys at positions ``<=`` its own
    (the first ``kv_len`` pool positions, masked). ``fused`` holds each layer's packed Q/K/V
    and gate/up weights (``model.fused_weights``: two matmuls fewer per layer, which at batch
    1 is a sixth of the step). ``attention``'s ``graph_mask`` (if any) narrows which keys each
    query sees (StreamingLLM's sinks and window). Pure tensor code, so ``torch.compile``
    captures it whole; eager it is the reference the compiled graph is tested against.
    """
    b, t = ids.shape
    x = model.embed_tokens(ids)
    cos = model.rotary.cos[pos].to(x.dtype)[:, None]  # (B, 1, T, head_dim)
    sin = model.rotary.sin[pos].to(x.dtype)[:, None]
    keys = torch.arange(kv_len, device=ids.device)
    mask = keys[None, None, :] <= pos[:, :, None]  # (B, T, kv_len)
    extra = None if attention is None else attention.graph_mask(keys, pos)
    mask = (mask if extra is None else mask & extra)[:, None]  # (B, 1, T, kv_len)
    for li, layer in enumerate(model.layers):
        attn = layer.self_attn
        hd = attn.head_dim
        wqkv, wgu = fused[li]
        qkv = F.linear(layer.input_layernorm(x), wqkv)
        q, k, v = qkv.split([attn.heads * hd, attn.kv_heads * hd, attn.kv_heads * hd], -1)
        q = q.view(b, t, attn.heads, hd).transpose(1, 2)
        k = k.view(b, t, attn.kv_heads, hd).transpose(1, 2)
        v = v.view(b, t, attn.kv_heads, hd).transpose(1, 2)
        q = Rotary.rotate(q, cos, sin)
        k = Rotary.rotate(k, cos, sin)
        kp, vp = k_pool[li], v_pool[li]
        # (B, T) slot/position pairs index (B, T, kv_heads, head_dim) rows of the pool
        kp[slots[:, None], :, pos] = k.transpose(1, 2).to(kp.dtype)
        vp[slots[:, None], :, pos] = v.transpose(1, 2).to(vp.dtype)
        kc = kp[slots, :, :kv_len].to(q.dtype)
        vc = vp[slots, :, :kv_len].to(q.dtype)
        o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, enable_gqa=True)
        x = x + attn.o_proj(o.transpose(1, 2).reshape(b, t, attn.heads * hd))
        gate, up = F.linear(layer.post_attention_layernorm(x), wgu).chunk(2, dim=-1)
        x = x + layer.mlp.down_proj(F.silu(gate) * up)
    return model.lm_head(model.norm(x))


_COMPILED: dict[tuple[str, str], Any] = {}
_SEEN: set[tuple] = set()  # shape keys compiled in this process (each one compilation)


def _compiled_step(mode: str, device_type: str) -> Any:
    """One ``torch.compile`` wrapper of :func:`step_graph` per (mode, device type) in the
    process, shared by every engine, so a new engine (each benchmark round builds one) reuses
    the graphs compiled before it instead of compiling again.
    """
    key = (mode, device_type)
    if key not in _COMPILED:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
        # CPU: the C++ wrapper calls the kernels without a Python frame each (about a fifth
        # of the step at batch 1); CUDA "reduce-overhead": each bucket captured as a CUDA graph
        options: dict[str, Any] = {}
        if mode == "reduce-overhead":
            options["triton.cudagraphs"] = True
        elif device_type == "cpu":
            options["cpp_wrapper"] = True
        _COMPILED[key] = torch.compile(step_graph, options=options, dynamic=False, fullgraph=True)
    return _COMPILED[key]


@dataclass
class CompiledStep:
    """The compiled step of one engine run: eligibility, bucketing, counters.

    ``mode`` is one of :data:`COMPILE_MODES` other than ``"off"``. ``compiles`` counts the
    shape keys first compiled during this step's life (a recompilation each; a key compiled
    earlier in the process is warm and not counted), ``compile_seconds`` their first calls'
    wall time; ``compiled_forwards`` the forwards that ran compiled; ``eager_forwards`` the
    others, by reason.
    """

    mode: str
    device_type: str = "cpu"
    compiles: int = 0
    compile_seconds: float = 0.0
    compiled_forwards: int = 0
    eager_forwards: Counter = field(default_factory=Counter)
    _fn: Any = None
    _scratch: dict = field(default_factory=dict)
    _fused: dict = field(default_factory=dict)
    _static: set = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES[1:]:
            raise ValueError(f"CompiledStep mode must be one of {COMPILE_MODES[1:]}: {self.mode!r}")
        import torch._dynamo

        # one graph per bucket: allow every bucket combination of a run without falling back
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
        self._fn = _compiled_step(self.mode, self.device_type)

    def ineligible(
        self, attention: AttentionBackend, feeds: Sequence[Feed], hidden: bool, layers: int | None
    ) -> str | None:
        """Why these feeds cannot run compiled (None: they can)."""
        if getattr(attention, "graph_params", None) is None:
            return f"attention {type(attention).__name__}: no graph_mask for the compiled step"
        if hidden or layers is not None:
            return "hidden states or a layer range requested"
        caches = [f.cache for f in feeds]
        if not all(type(c) is PooledKVCache for c in caches):
            kinds = sorted({type(c).__name__ for c in caches} - {"PooledKVCache"})
            return f"cache {', '.join(kinds)}: no slot in a static pool"
        if any(c.pool is not caches[0].pool for c in caches):
            return "caches of several pools"
        lens = {len(f.tokens) for f in feeds}
        if max(lens) > MAX_GRAPH_TOKENS:
            return "prefill (eager by design: one graph per prompt length would not pay)"
        if any(f.prefix_group >= 0 for f in feeds):
            return "shared-prefix metadata"
        if any(f.mask is not None or f.positions is not None for f in feeds):
            return "draft tree (a per-sequence mask and positions)"
        if batch_bucket(len(feeds)) is None:
            return f"batch {len(feeds)} above the largest bucket {BATCH_BUCKETS[-1]}"
        if any(len(set(c.lengths)) != 1 for c in caches):
            return "caches with per-layer lengths"
        return None

    def _scratch_slot(self, pool: KVPool) -> int:
        key = id(pool)
        if key not in self._scratch:
            self._scratch[key] = (pool, pool.acquire())  # a slot padding rows write into
        return self._scratch[key][1]

    def _mark_static(self, tensors: Any) -> None:
        """Under CUDA graphs, tell the compiler these inputs keep their address (the pool's
        buffers, the packed weights), so replays neither copy them nor skip the graph.
        """
        if self.mode != "reduce-overhead":
            return
        for buf in torch.utils._pytree.tree_leaves(tensors):
            if id(buf) not in self._static:
                torch._dynamo.mark_static_address(buf)
                self._static.add(id(buf))

    def forward(
        self, model: LlamaModel, feeds: Sequence[Feed], attention: AttentionBackend
    ) -> list[torch.Tensor]:
        """Run eligible ``feeds`` through the compiled graph; per feed logits ``(T, vocab)``.

        Caches advance exactly as the eager path's appends would.
        """
        caches: list[PooledKVCache] = [f.cache for f in feeds]  # type: ignore[misc]
        pool = caches[0].pool
        lens = [len(f.tokens) for f in feeds]
        t = max(lens)  # ragged feeds (a draft catching up one or two tokens) pad to the longest
        starts = [c.lengths[0] for c in caches]
        scratch = self._scratch_slot(pool)
        kv_len = kv_bucket(max(starts) + t)
        pool.ensure(kv_len)
        self._mark_static([*pool.k, *pool.v])
        bb = batch_bucket(len(feeds))
        assert bb is not None
        pad = bb - len(feeds)
        dev = model.device
        # a padding token sits past its sequence's end: its key is written where the next
        # real token will overwrite it, and no real query's position reaches it
        ids = torch.tensor([list(f.tokens) + [0] * (t - n) for f, n in zip(feeds, lens)]
                           + [[0] * t] * pad, device=dev)  # fmt: skip
        pos = torch.tensor([[s + i for i in range(t)] for s in starts] + [list(range(t))] * pad,
                           device=dev)  # fmt: skip
        slots = torch.tensor([c.slot for c in caches] + [scratch] * pad, device=dev)
        key = (self.mode, self.device_type, id(model), type(attention).__name__,
               attention.graph_params, bb, t, kv_len, pool.slots, pool.capacity)  # fmt: skip
        first = key not in _SEEN
        t0 = time.perf_counter()
        fused = self._fused.get(id(model))
        if fused is None:  # packed once per model and engine: weights do not change mid-run
            fused = self._fused[id(model)] = [fused_weights(layer) for layer in model.layers]
            self._mark_static(fused)
        logits = self._fn(model, ids, pos, slots, pool.k, pool.v, kv_len, fused, attention)
        if self.mode == "reduce-overhead":
            logits = logits.clone()  # the graph's output buffer is reused by its next replay
        if first:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            _SEEN.add(key)
            self.compiles += 1
            self.compile_seconds += time.perf_counter() - t0
        for c, n in zip(caches, lens):
            c.lengths = [have + n for have in c.lengths]
        self.compiled_forwards += 1
        return [logits[i, :n] for i, n in enumerate(lens)]

    def release(self) -> None:
        """Give the scratch slots back to their pools."""
        for pool, slot in self._scratch.values():
            pool.release(slot)
        self._scratch.clear()

    def stats(self) -> dict[str, Any]:
        """The counters for a record: what ran compiled, what did not and why."""
        return {
            "compile_mode": self.mode,
            "compilations": self.compiles,
            "compile_seconds": round(self.compile_seconds, 3),
            "compiled_forwards": self.compiled_forwards,
            "eager_forwards": dict(self.eager_forwards),
        }
