"""The reference inference engine: iteration-level batching with pluggable parts.

One engine iteration (``Engine.step``): the scheduler picks which requests run and how many
prompt tokens each feeds; the decoder turns that batch into packed forward passes of the model
(whose attention backend and per-sequence KV caches are the techniques under test) and emits
tokens, which are timestamped into each request's timeline. The same loop serves offline runs
(every request present at t=0) and serving runs (requests arrive on a schedule in real time).

Written for this project in the spirit of nano-vllm and gpt-fast: packed variable-length
batches, no padding, and nothing hidden between the measurement and the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from effbench.kernels_ref.compiled import CompiledStep, check_mode
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.protocols import (
    AttentionBackend,
    Budget,
    CacheLayout,
    Decoder,
    Feed,
    ForwardOut,
    KVCache,
    KVCacheFactory,
    Scheduler,
    StepInfo,
)
from effbench.kernels_ref.requests import Phase, Request, StepBatch


@dataclass(frozen=True)
class EngineConfig:
    """Batch limits: at most ``max_batch`` running requests and ``max_tokens`` fed per step;
    ``kv_memory_cap`` bytes of KV cache in all (None: no cap beyond the factory's own pool).
    """

    max_batch: int = 8
    max_tokens: int = 512
    kv_memory_cap: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_tokens < 1:
            raise ValueError("max_batch and max_tokens must be >= 1")
        if self.kv_memory_cap is not None and self.kv_memory_cap < 1:
            raise ValueError(f"kv_memory_cap must be >= 1 byte, got {self.kv_memory_cap}")


@dataclass(frozen=True)
class StepRecord:
    """What one iteration did, for the engine's step log."""

    start_ns: int
    end_ns: int
    prefill_tokens: int
    decode_requests: int
    emitted_tokens: int
    batch: int = 0
    """Requests in the iteration (prefilling and decoding)."""


def layout_of(model: LlamaModel) -> CacheLayout:
    cfg = model.config
    return CacheLayout(
        num_layers=cfg.num_hidden_layers,
        kv_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        dtype=model.dtype,
        device=model.device,
    )


def step_info(feeds: Sequence[Feed]) -> StepInfo:
    """The attention metadata shared by every layer and sequence of one packed forward."""
    groups = tuple(f.prefix_group for f in feeds)
    shared = any(g >= 0 for g in groups)
    masks = tuple(f.mask for f in feeds)
    return StepInfo(
        seq_ids=tuple(f.seq_id for f in feeds),
        starts=tuple(f.start for f in feeds),
        q_lens=tuple(len(f.tokens) for f in feeds),
        prefix_groups=groups if shared else (),
        prefix_lens=tuple(f.prefix_len for f in feeds) if shared else (),
        seq_masks=masks if any(m is not None for m in masks) else (),
    )


def run_forward(
    model: LlamaModel, attention: AttentionBackend, feeds: Sequence[Feed], *,
    hidden: bool = False, layers: int | None = None,
) -> ForwardOut:
    """One packed forward pass over several sequences; logits rows as each feed asked.

    The attention metadata is built here once for the whole pass. ``hidden`` also returns the
    same rows' hidden states; ``layers`` runs only the first ``layers`` layers.
    """
    device = model.device
    ids: list[int] = []
    pos: list[int] = []
    rows: list[int] = []
    spans: list[tuple[int, int] | None] = []
    for f in feeds:
        base = len(ids)
        ids.extend(f.tokens)
        pos.extend(f.positions if f.positions is not None
                   else range(f.start, f.start + len(f.tokens)))  # fmt: skip
        if f.logits == "all":
            spans.append((len(rows), len(rows) + len(f.tokens)))
            rows.extend(range(base, base + len(f.tokens)))
        elif f.logits == "last":
            spans.append((len(rows), len(rows) + 1))
            rows.append(base + len(f.tokens) - 1)
        else:
            spans.append(None)
    out = model.forward_batch(
        torch.tensor(ids, device=device),
        torch.tensor(pos, device=device),
        [len(f.tokens) for f in feeds],
        [f.cache for f in feeds],
        attention,
        logits_for=torch.tensor(rows, device=device, dtype=torch.long),
        step=step_info(feeds),
        hidden=hidden,
        layers=layers,
    )
    logits, states = out if hidden else (out, None)

    def per_feed(t: torch.Tensor) -> list[torch.Tensor | None]:
        return [None if s is None else t[s[0] : s[1]] for s in spans]

    return ForwardOut(per_feed(logits), per_feed(states) if states is not None else None)


def _select_rows(logits: torch.Tensor, which: str | None) -> torch.Tensor | None:
    """A feed's logits rows as it asked: all of them, the last one, or none."""
    if which == "all":
        return logits
    return logits[-1:] if which == "last" else None


@dataclass
class StepContext:
    """What a decoder may use during a step (``EngineOps``): the models, a clock, a sampler."""

    model: LlamaModel
    attention: AttentionBackend
    cache_factory: KVCacheFactory
    layout: CacheLayout
    temperature: float = 0.0
    generator: torch.Generator | None = None
    draft: LlamaModel | None = None
    compiled: CompiledStep | None = None
    """The compiled decode/verify step (None: eager, ``compile = "off"``)."""

    def now(self) -> int:
        """A timestamp taken after the device has finished the work queued so far."""
        if self.layout.device.type == "cuda":
            torch.cuda.synchronize(self.layout.device)
        return time.perf_counter_ns()

    def forward(self, feeds: Sequence[Feed], *, hidden: bool = False, layers: int | None = None,
                model: LlamaModel | None = None,
                attention: AttentionBackend | None = None) -> ForwardOut:
        model = model or self.model
        attention = attention or self.attention
        if self.compiled is not None:
            reason = self.compiled.ineligible(attention, feeds, hidden, layers)
            if reason is None:
                rows = self.compiled.forward(model, feeds, attention)
                return ForwardOut([_select_rows(lg, f.logits) for lg, f in zip(rows, feeds)])
            self.compiled.eager_forwards[reason] += 1
        return run_forward(model, attention, feeds, hidden=hidden, layers=layers)

    def new_cache(self, model: LlamaModel | None = None,
                  factory: KVCacheFactory | None = None) -> KVCache:
        """An empty cache for ``model`` (default: the target) from ``factory`` (default: the
        engine's, i.e. the technique under test).
        """
        return (factory or self.cache_factory).new_cache(layout_of(model or self.model))

    def pick(self, logits: torch.Tensor) -> list[int]:
        """Next token per row: argmax when greedy, else a sample at ``temperature``."""
        if self.temperature <= 0:
            return logits.argmax(-1).tolist()
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).tolist()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float() / max(self.temperature, 1e-6), dim=-1)


@dataclass
class EngineResult:
    requests: list[Request]
    steps: list[StepRecord]
    start_ns: int
    end_ns: int
    decoder_stats: dict[str, Any]
    preemptions: int = 0
    compile_stats: dict[str, Any] | None = None
    """What ran compiled and what not, and why (None: eager run)."""

    @property
    def wall_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def output_tokens(self) -> int:
        return sum(len(r.output) for r in self.requests)


class Engine:
    """Runs requests to completion with the given scheduler, decoder, attention and cache."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        attention: AttentionBackend,
        cache_factory: KVCacheFactory,
        scheduler: Scheduler,
        decoder: Decoder,
        config: EngineConfig | None = None,
        draft: LlamaModel | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        compile: str = "off",
    ) -> None:
        check_mode(compile, model.device)
        self.config = config or EngineConfig()
        self.scheduler = scheduler
        self.decoder = decoder
        gen = torch.Generator(device=model.device).manual_seed(seed) if temperature > 0 else None
        self.ctx = StepContext(
            model=model,
            attention=attention,
            cache_factory=cache_factory,
            layout=layout_of(model),
            temperature=temperature,
            generator=gen,
            draft=draft,
            compiled=None if compile == "off" else CompiledStep(compile, model.device.type),
        )
        self.decoder.prepare(self.ctx)
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.finished: list[Request] = []
        self.steps: list[StepRecord] = []
        self.preemptions = 0
        self._bounded = self.config.kv_memory_cap is not None or cache_factory.bounded
        # Wraps each iteration's work, called with (step index, "prefill" | "decode"): e.g. a
        # profiler annotation ``ProfilerStep#N`` or an energy window per phase (None: nothing).
        self.step_context: Callable[[int, str], AbstractContextManager] | None = None

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def budget(self) -> Budget:
        """The limits of this iteration, with the KV memory left: the tighter of the engine's
        cap and the factory's own pool, minus what the live caches hold.
        """
        if not self._bounded:  # no cap anywhere: skip summing the live caches' bytes
            return Budget(self.config.max_batch, self.config.max_tokens)
        mem = self.ctx.cache_factory.memory()
        caps = [c for c in (self.config.kv_memory_cap, mem.capacity_bytes) if c is not None]
        tokens = sum(r.computed for r in self.running)
        per_token = (mem.used_bytes / tokens if tokens and mem.used_bytes
                     else self.ctx.layout.full_bytes_per_token)
        return Budget(self.config.max_batch, self.config.max_tokens,
                      free_kv_bytes=min(caps) - mem.used_bytes, kv_bytes_per_token=per_token)

    def _preempt_for(self, chosen: list[tuple[Request, int]], budget: Budget
                     ) -> list[tuple[Request, int]]:
        """Drop the newest running requests (recompute preemption) until the step's new tokens
        fit in KV memory; they go back to the front of the queue.
        """
        extra = self.decoder.lookahead  # drafts written into the caches under verification

        def need(entries: list[tuple[Request, int]]) -> int:
            return sum(n + (extra if r.prompt_left == 0 else 0) for r, n in entries)

        while not budget.fits(need(chosen)) and len(self.running) > 1:
            victim = max(self.running, key=lambda r: (r.start_ns or 0, r.rid))
            self.running.remove(victim)
            self.decoder.release(victim)
            victim.preempt()
            self.waiting.insert(0, victim)
            self.preemptions += 1
            freed = self.budget()
            budget = freed
            chosen = [(r, n) for r, n in chosen if r is not victim]
        if not chosen or not budget.fits(need(chosen)):
            raise RuntimeError(
                f"KV memory ({budget.free_kv_bytes:.0f} B free) is too small for one request: "
                f"the step needs {need(chosen) * budget.kv_bytes_per_token:.0f} B"
            )
        return chosen

    def step(self) -> StepRecord:
        """Run one iteration: schedule, feed and emit; finished requests leave the batch.

        The iteration's phase is ``prefill`` when it feeds any prompt tokens, else ``decode``.
        With a KV memory limit, the scheduler admits what fits and the engine preempts the
        newest running requests (by recompute) when running ones outgrow it.
        """
        budget = self.budget()
        chosen = self.scheduler.schedule(tuple(self.waiting), tuple(self.running), budget)
        if not chosen:
            raise RuntimeError(
                f"scheduler {type(self.scheduler).__name__} chose nothing with "
                f"{len(self.waiting)} waiting and {len(self.running)} running"
            )
        if budget.free_kv_bytes != float("inf"):
            chosen = self._preempt_for(list(chosen), budget)
        start = self.ctx.now()
        for req, n in chosen:
            if req.phase is Phase.WAITING:
                self.waiting.remove(req)
                self.running.append(req)
                req.phase = Phase.PREFILL
                req.start_ns = req.start_ns if req.start_ns is not None else start
                req.cache = self.ctx.cache_factory.new_cache(self.ctx.layout)
            if req.prompt_left == 0 and n != 1:
                raise RuntimeError(f"scheduler fed {n} tokens to decoding request {req.rid}")
        batch = StepBatch(list(chosen))
        prefill_tokens = sum(n for _, n in batch.prefills)
        decode_requests = len(batch.decodes)
        before = sum(len(r.output) for r, _ in chosen)
        if self.step_context is None:
            self.decoder.step(self.ctx, batch)
        else:
            phase = "prefill" if prefill_tokens else "decode"
            with self.step_context(len(self.steps), phase):
                self.decoder.step(self.ctx, batch)
        end = self.ctx.now()
        rec = StepRecord(
            start_ns=start,
            end_ns=end,
            prefill_tokens=prefill_tokens,
            decode_requests=decode_requests,
            emitted_tokens=sum(len(r.output) for r, _ in chosen) - before,
            batch=len(chosen),
        )
        self.steps.append(rec)
        for req in [r for r in self.running if r.phase is Phase.FINISHED]:
            self.running.remove(req)
            self.decoder.release(req)
            req.cache = None
            self.finished.append(req)
        return rec

    def run(self, requests: Iterable[Request], *, realtime: bool = False) -> EngineResult:
        """Serve ``requests``; with ``realtime`` each joins at ``arrival_ns`` after the start.

        Offline runs (``realtime=False``) put every request in the queue at once. Timestamps of
        arrivals and emissions are absolute ``perf_counter_ns`` values.
        """
        pending = sorted(requests, key=lambda r: r.arrival_ns)
        total = len(pending)
        self.steps = []
        self.preemptions = 0
        with torch.inference_mode():
            t0 = self.ctx.now()
            for r in pending:
                r.arrival_ns = t0 + (r.arrival_ns if realtime else 0)
            i = 0
            while len(self.finished) < total:
                now = time.perf_counter_ns()
                while i < total and pending[i].arrival_ns <= now:
                    self.add(pending[i])
                    i += 1
                if self.busy:
                    self.step()
                elif i < total:
                    time.sleep(max(0.0, (pending[i].arrival_ns - now) / 1e9))
            t1 = self.ctx.now()
        compiled = self.ctx.compiled
        if compiled is not None:
            compiled.release()  # its scratch slots go back to the pools
        done = sorted(self.finished, key=lambda r: r.rid)
        self.finished = []
        return EngineResult(done, list(self.steps), t0, t1, self.decoder.stats(),
                            self.preemptions, compiled.stats() if compiled else None)
