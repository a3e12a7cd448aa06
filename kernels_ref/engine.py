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
from dataclasses import dataclass, field
from typing import Any

import torch
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.protocols import (
    AttentionBackend,
    Budget,
    CacheLayout,
    Decoder,
    KVCache,
    KVCacheFactory,
    Scheduler,
)
from effbench.kernels_ref.requests import Phase, Request


@dataclass(frozen=True)
class EngineConfig:
    """Batch limits: at most ``max_batch`` running requests and ``max_tokens`` fed per step."""

    max_batch: int = 8
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_tokens < 1:
            raise ValueError("max_batch and max_tokens must be >= 1")


@dataclass(frozen=True)
class StepRecord:
    """What one iteration did, for the engine's step log."""

    start_ns: int
    end_ns: int
    prefill_tokens: int
    decode_requests: int
    emitted_tokens: int


@dataclass
class StepBatch:
    """The scheduler's choice for one iteration, split by phase for the decoder."""

    entries: list[tuple[Request, int]]

    @property
    def prefills(self) -> list[tuple[Request, int]]:
        return [(r, n) for r, n in self.entries if r.prompt_left > 0]

    @property
    def decodes(self) -> list[Request]:
        return [r for r, _ in self.entries if r.prompt_left == 0]


def layout_of(model: LlamaModel) -> CacheLayout:
    cfg = model.config
    return CacheLayout(
        num_layers=cfg.num_hidden_layers,
        kv_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        dtype=model.dtype,
        device=model.device,
    )


@dataclass
class Feed:
    """Tokens of one sequence to push through a model: ``tokens`` start at ``start``."""

    cache: KVCache
    tokens: list[int]
    start: int
    logits: str = "last"  # "none" | "last" | "all"


def run_forward(
    model: LlamaModel, attention: AttentionBackend, feeds: Sequence[Feed]
) -> list[torch.Tensor | None]:
    """One packed forward pass over several sequences; logits rows as each feed asked."""
    device = model.device
    ids: list[int] = []
    pos: list[int] = []
    rows: list[int] = []
    spans: list[tuple[int, int] | None] = []
    for f in feeds:
        base = len(ids)
        ids.extend(f.tokens)
        pos.extend(range(f.start, f.start + len(f.tokens)))
        if f.logits == "all":
            spans.append((len(rows), len(rows) + len(f.tokens)))
            rows.extend(range(base, base + len(f.tokens)))
        elif f.logits == "last":
            spans.append((len(rows), len(rows) + 1))
            rows.append(base + len(f.tokens) - 1)
        else:
            spans.append(None)
    logits = model.forward_batch(
        torch.tensor(ids, device=device),
        torch.tensor(pos, device=device),
        [len(f.tokens) for f in feeds],
        [f.cache for f in feeds],
        attention,
        logits_for=torch.tensor(rows, device=device, dtype=torch.long),
    )
    return [None if s is None else logits[s[0] : s[1]] for s in spans]


@dataclass
class StepContext:
    """What a decoder may use during a step: the models, their parts, a clock and a sampler."""

    model: LlamaModel
    attention: AttentionBackend
    cache_factory: KVCacheFactory
    layout: CacheLayout
    temperature: float = 0.0
    generator: torch.Generator | None = None
    draft: LlamaModel | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def now(self) -> int:
        """A timestamp taken after the device has finished the work queued so far."""
        if self.layout.device.type == "cuda":
            torch.cuda.synchronize(self.layout.device)
        return time.perf_counter_ns()

    def forward(self, feeds: Sequence[Feed]) -> list[torch.Tensor | None]:
        return run_forward(self.model, self.attention, feeds)

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
    ) -> None:
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
        )
        self.decoder.prepare(self.ctx)
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.finished: list[Request] = []
        self.steps: list[StepRecord] = []
        # Wraps each iteration's work, called with (step index, "prefill" | "decode"): e.g. a
        # profiler annotation ``ProfilerStep#N`` or an energy window per phase (None: nothing).
        self.step_context: Callable[[int, str], AbstractContextManager] | None = None

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> StepRecord:
        """Run one iteration: schedule, feed and emit; finished requests leave the batch.

        The iteration's phase is ``prefill`` when it feeds any prompt tokens, else ``decode``.
        """
        budget = Budget(self.config.max_batch, self.config.max_tokens)
        chosen = self.scheduler.schedule(tuple(self.waiting), tuple(self.running), budget)
        if not chosen:
            raise RuntimeError(
                f"scheduler {type(self.scheduler).__name__} chose nothing with "
                f"{len(self.waiting)} waiting and {len(self.running)} running"
            )
        start = self.ctx.now()
        for req, n in chosen:
            if req.phase is Phase.WAITING:
                self.waiting.remove(req)
                self.running.append(req)
                req.phase = Phase.PREFILL
                req.start_ns = start
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
        )
        self.steps.append(rec)
        for req in [r for r in self.running if r.phase is Phase.FINISHED]:
            self.running.remove(req)
            req.cache = None
            req.draft_cache = None
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
        done = sorted(self.finished, key=lambda r: r.rid)
        self.finished = []
        return EngineResult(done, list(self.steps), t0, t1, self.decoder.stats())
