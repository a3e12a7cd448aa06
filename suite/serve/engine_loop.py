"""The engine on a background thread, fed by HTTP requests while it runs.

The reference engine (effbench.kernels_ref.engine.Engine) already exposes what a server needs:
``add`` puts a request in its waiting queue and ``step`` runs one iteration. This module drives
those from one thread of its own, so the engine itself is unchanged (offline and realtime runs
keep their code path and timings):

- HTTP handlers call :meth:`EngineLoop.submit` from the event loop; the job goes into a
  thread-safe inbox, bounded by ``max_queue`` jobs admitted and not yet finished (the server
  answers 503 beyond it). The loop thread moves jobs from the inbox into the engine between
  iterations, in arrival order.
- After every iteration each live request's new emissions are handed back through the job's
  ``deliver`` callback, which the server binds to ``loop.call_soon_threadsafe`` and the
  request's own ``asyncio.Queue``: one :class:`Emission` per engine emission (a speculative
  step emits several tokens at once, as one emission).
- Sampling temperature is one value per engine step (``StepContext.temperature``). Requests
  with the temperature of the running batch join it; one with another temperature waits
  (first in, first out) until the batch drains, and then the loop switches the temperature.
  A stream of single-temperature traffic, what benchmarks send, batches fully.
- A client that goes away is cancelled (:meth:`EngineLoop.cancel`): its request leaves the
  engine at the next iteration boundary and its KV cache is freed.
- An iteration that raises fails every request then in the engine (each gets an ``error``
  emission) and the loop continues with a freshly built engine.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from effbench.kernels_ref.engine import Engine
from effbench.kernels_ref.requests import Phase, Request

IDLE_WAIT_S = 0.05
"""How long the idle loop sleeps between checks of its inbox (a submit wakes it at once)."""


@dataclass(frozen=True)
class Emission:
    """What one engine emission gave a request: its tokens, and whether it was the last.

    ``finish_reason`` is ``stop`` (EOS) or ``length`` (``max_tokens``) on the last emission;
    ``error`` replaces everything when the engine failed or the job was refused.
    """

    tokens: tuple[int, ...] = ()
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class Job:
    """One request to serve; ``deliver`` is called from the loop thread with each emission."""

    rid: int
    prompt: list[int]
    max_tokens: int
    eos_id: int | None
    temperature: float
    deliver: Callable[[Emission], None]
    request: Request | None = field(default=None, repr=False)
    sent_emissions: int = 0
    sent_tokens: int = 0


class EngineLoop:
    """Owns an engine made by ``make_engine`` and runs it on a daemon thread (module doc)."""

    def __init__(
        self, make_engine: Callable[[], Engine], max_queue: int = 64, seed: int = 0
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._make = make_engine
        self.max_queue = max_queue
        self.seed = seed
        self._inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._cancels: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0
        self._backlog: deque[Job] = deque()
        self._active: dict[int, Job] = {}
        self._thread = threading.Thread(target=self._run, name="effbench-engine", daemon=True)
        self.engine = make_engine()
        self.steps = 0

    # -- called from the server's event loop -----------------------------------------------
    @property
    def pending(self) -> int:
        """Jobs admitted and not yet finished (waiting, running, or in the inbox)."""
        with self._lock:
            return self._pending

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False (nothing queued) when ``max_queue`` jobs are pending."""
        with self._lock:
            if self._pending >= self.max_queue:
                return False
            self._pending += 1
        self._inbox.put(job)
        self._wake.set()
        return True

    def cancel(self, rid: int) -> None:
        """Drop request ``rid`` at the next iteration boundary (a client went away)."""
        self._cancels.put(rid)
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the loop thread --------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                self._take_inbox()
                self._admit()
                if not self.engine.busy:
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                try:
                    self.engine.step()
                except Exception as e:  # noqa: BLE001 - one bad iteration must not end serving
                    self._fail_active(f"engine step failed: {type(e).__name__}: {e}")
                    self.engine = self._make()
                    continue
                self.steps += 1
                self.engine.steps.clear()  # a server runs forever: keep no per-step log
                self._publish()

    def _done(self, job: Job) -> None:
        self._active.pop(job.rid, None)
        with self._lock:
            self._pending -= 1

    def _send(self, job: Job, emission: Emission) -> None:
        try:
            job.deliver(emission)
        except RuntimeError:  # the server's event loop is closed: nobody is listening
            pass

    def _take_inbox(self) -> None:
        while True:
            try:
                self._backlog.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        while True:
            try:
                rid = self._cancels.get_nowait()
            except queue.Empty:
                break
            self._drop(rid)

    def _drop(self, rid: int) -> None:
        """Remove a cancelled request wherever it is; its cache is freed with it."""
        for job in list(self._backlog):
            if job.rid == rid:
                self._backlog.remove(job)
                self._done(job)
                return
        job = self._active.get(rid)
        if job is None or job.request is None:
            return
        req, eng = job.request, self.engine
        if req in eng.waiting:
            eng.waiting.remove(req)
        elif req in eng.running:
            eng.running.remove(req)
            eng.decoder.release(req)
        req.cache = None
        self._done(job)

    def _set_temperature(self, temperature: float) -> None:
        ctx = self.engine.ctx
        ctx.temperature = temperature
        if temperature > 0 and ctx.generator is None:
            ctx.generator = torch.Generator(device=ctx.layout.device).manual_seed(self.seed)

    def _admit(self) -> None:
        """Move backlog jobs into the engine, first in first out, one temperature at a time."""
        while self._backlog:
            job = self._backlog[0]
            if self.engine.busy and job.temperature != self.engine.ctx.temperature:
                break
            if not self.engine.busy:
                self._set_temperature(job.temperature)
            self._backlog.popleft()
            job.request = Request(job.rid, list(job.prompt), job.max_tokens, eos_id=job.eos_id)
            self.engine.add(job.request)
            self._active[job.rid] = job

    def _publish(self) -> None:
        """Hand every live request's new emissions to its job; retire finished ones."""
        for job in list(self._active.values()):
            req = job.request
            assert req is not None
            finished = req.phase is Phase.FINISHED
            new = req.emissions[job.sent_emissions :]
            for i, (_, n) in enumerate(new):
                tokens = tuple(req.output[job.sent_tokens : job.sent_tokens + n])
                job.sent_tokens += n
                last = finished and i == len(new) - 1
                self._send(job, Emission(tokens, last, _reason(req) if last else None))
            job.sent_emissions += len(new)
            if finished:
                if not new:
                    self._send(job, Emission((), True, _reason(req)))
                self._done(job)
        self.engine.finished.clear()

    def _fail_active(self, message: str) -> None:
        for job in list(self._active.values()):
            if job.request is not None:
                job.request.cache = None
            self._send(job, Emission(finished=True, error=message))
            self._done(job)


def _reason(req: Request) -> str:
    """``stop`` when the request ended on its EOS token, else ``length``."""
    return "stop" if req.eos_id is not None and req.output[-1:] == [req.eos_id] else "length"
