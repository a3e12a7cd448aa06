"""The scheduling family's behavioural contract, run over every registered scheduler.

Each scheduler (built with its defaults and with each other value of its default sweep) is
called on seeded random snapshots of the engine's state (waiting requests, fresh or preempted;
running ones in prefill or decode) under random budgets, with and without a KV memory cap, and
must respect the budget: at most ``max_batch`` running plus admitted requests, one token per
decoding request, prefill chunks within what is left of the prompt, admitted prompts within
free KV memory, and the per-iteration token limit the policy promises (``TOKEN_PROMISES``;
a scheduler without an entry is held to the engine's ``max_tokens``). A simulated run checks
that every request finishes. Finally the real engine on the tiny model, with a KV memory cap
small enough to force preemption, must finish every request with the uncapped greedy output.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import pytest
from registry_configs import technique_configs

from effbench.kernels_ref.engine import Engine, EngineConfig, layout_of
from effbench.kernels_ref.protocols import Budget, Scheduler
from effbench.kernels_ref.requests import Phase, Request
from effbench.suite import registry

SNAPSHOTS = 300
MAX_NEW = 16


CONFIGS = technique_configs("scheduling")
DEFAULTS = [c for c in CONFIGS if not c.values[1]]


# ----------------------------------------------------------------------------- promises
# What a policy promises about one iteration beyond the shared budget rules, given the
# scheduler, the budget, the state and its choice; a scheduler without an entry must keep
# each iteration within ``max_tokens`` (a lone prefill, or the decodes alone, may exceed it).

Entries = Sequence[tuple[Request, int]]


def _tokens(chosen: Entries) -> int:
    return sum(n for _, n in chosen)


def _decodes(chosen: Entries) -> list[tuple[Request, int]]:
    return [(r, n) for r, n in chosen if r.prompt_left == 0]


def generic_promise(sched, budget: Budget, waiting, running, chosen: Entries) -> None:
    decodes = _decodes(chosen)
    prefills = [e for e in chosen if e[0].prompt_left > 0]
    if len(prefills) == 1 and not decodes:
        return  # one prompt larger than the limit must still be able to run
    assert _tokens(chosen) <= max(budget.max_tokens, len(decodes)), "max_tokens exceeded"


def chunked_prefill_promise(sched, budget, waiting, running, chosen) -> None:
    """Sarathi: every running decode rides along; prefill chunks fill the rest of
    min(token_budget, max_tokens) and nothing when the decodes alone use it up.
    """
    cap = min(sched.token_budget, budget.max_tokens)
    decodes = _decodes(chosen)
    assert {r.rid for r, _ in decodes} == {r.rid for r in running if r.prompt_left == 0}
    assert _tokens(chosen) - len(decodes) <= max(0, cap - len(decodes))
    assert _tokens(chosen) <= max(cap, len(decodes))


def continuous_batching_promise(sched, budget, waiting, running, chosen) -> None:
    """Orca-style prefill-first: an iteration that admits requests is prefill-only (whole
    prompts, within max_tokens but for a lone first one); otherwise every running decodes.
    """
    admitted = [(r, n) for r, n in chosen if r.phase is Phase.WAITING]
    if admitted:
        assert len(admitted) == len(chosen), "an admitting iteration is prefill-only"
        assert all(n == r.prompt_left for r, n in admitted), "prompts prefill whole"
        assert len(admitted) == 1 or _tokens(admitted) <= budget.max_tokens
    elif running:
        assert {r.rid for r, _ in chosen} == {r.rid for r in running}


def static_batching_promise(sched, budget, waiting, running, chosen) -> None:
    """A batch forms only when nothing runs, prefills whole (no per-iteration token limit:
    the whole batch prefills at once) and runs until every request in it is done.
    """
    if running:
        assert all(r.phase is not Phase.WAITING for r, _ in chosen), "admitted while running"
    assert all(n == r.prompt_left for r, n in chosen if r.prompt_left > 0)


TOKEN_PROMISES: dict[str, Callable[..., None]] = {
    "chunked-prefill": chunked_prefill_promise,
    "continuous-batching": continuous_batching_promise,
    "static-batching": static_batching_promise,
}


# ----------------------------------------------------------------------------- random states


def random_request(rng: random.Random, rid: int) -> Request:
    return Request(rid, [rng.randrange(4096) for _ in range(rng.randint(1, 120))],
                   rng.randint(1, MAX_NEW))


def running_request(rng: random.Random, rid: int) -> Request:
    """A started request: mid-prefill (maybe of a recompute after preemption) or decoding."""
    r = random_request(rng, rid)
    r.max_new_tokens = max(r.max_new_tokens, 3)
    if rng.random() < 0.2:  # preempted once after some output, prefilling prompt + output
        r.output = [5] * rng.randint(1, r.max_new_tokens - 2)
        r.preempt()
    if rng.random() < 0.5 and r.prefill_len > 1:
        r.computed = rng.randint(1, r.prefill_len - 1)
        r.phase = Phase.PREFILL
    else:  # the prefill is done and emitted a token, which is fed next
        r.output = r.output + [7]
        r.computed = len(r.tokens) - 1
        r.phase = Phase.DECODE
    r.start_ns = 1
    return r


def waiting_request(rng: random.Random, rid: int) -> Request:
    r = random_request(rng, rid)
    if rng.random() < 0.2 and r.max_new_tokens > 1:
        r.output = [5] * rng.randint(1, r.max_new_tokens - 1)
        r.preempt()
    return r


def random_state(rng: random.Random, memory: bool):
    max_batch = rng.randint(1, 8)
    max_tokens = rng.choice([1, 4, 16, 64, 128, 512])
    running = [running_request(rng, i) for i in range(rng.randint(0, max_batch))]
    waiting = [waiting_request(rng, 100 + i) for i in range(rng.randint(0, 10))]
    if not running and not waiting:
        waiting.append(waiting_request(rng, 99))
    if memory:
        per_token = rng.choice([1.0, 2048.0])
        budget = Budget(max_batch, max_tokens, free_kv_bytes=per_token * rng.randint(0, 300),
                        kv_bytes_per_token=per_token)
    else:
        budget = Budget(max_batch, max_tokens)
    return waiting, running, budget


def check_choice(tech, sched, waiting, running, budget, chosen) -> None:
    """The budget rules every scheduler obeys, then the policy's own promise."""
    ids = [id(r) for r, _ in chosen]
    assert len(ids) == len(set(ids)), "a request was scheduled twice"
    in_waiting = {id(r) for r in waiting}
    in_running = {id(r) for r in running}
    admitted = [(r, n) for r, n in chosen if id(r) in in_waiting]
    assert all(id(r) in in_waiting | in_running for r, _ in chosen), "unknown request"
    assert len(running) + len(admitted) <= budget.max_batch, "max_batch exceeded"
    for r, n in chosen:
        assert isinstance(n, int) and n >= 1
        if r.prompt_left == 0:
            assert n == 1, f"decoding request {r.rid} fed {n} tokens"
        else:
            assert n <= r.prompt_left, f"chunk of {n} > {r.prompt_left} prompt tokens left"
    new_prompts = sum(r.prompt_left for r, _ in admitted)
    assert budget.fits(new_prompts), (
        f"admitted {new_prompts} prompt tokens with room for "
        f"{budget.free_kv_bytes / max(budget.kv_bytes_per_token, 1e-9):.0f}"
    )
    promise = TOKEN_PROMISES.get(tech.name, generic_promise)
    promise(sched, budget, waiting, running, chosen)
    if math.isinf(budget.free_kv_bytes):
        assert chosen, "nothing scheduled with work pending and no memory cap"


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("tech,params", CONFIGS)
def test_registered_scheduler_satisfies_protocol(tech, params):
    assert isinstance(tech.build(params), Scheduler)


@pytest.mark.parametrize("memory", [False, True], ids=["no-cap", "kv-cap"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_schedule_respects_budget_on_random_states(tech, params, seed, memory):
    sched = tech.build(params)
    rng = random.Random(f"{tech.name}-{params}-{seed}-{memory}")
    for _ in range(SNAPSHOTS):
        waiting, running, budget = random_state(rng, memory)
        before = [(r.computed, r.prefill_len, r.phase, len(r.output)) for r in waiting + running]
        chosen = sched.schedule(tuple(waiting), tuple(running), budget)
        after = [(r.computed, r.prefill_len, r.phase, len(r.output)) for r in waiting + running]
        assert before == after, "schedule must not change the requests (the engine does)"
        check_choice(tech, sched, waiting, running, budget, chosen)


def simulate(sched, tech, rng: random.Random, budget: Budget, n_requests: int = 30) -> int:
    """Run the scheduler's choices through a model-free engine (one token emitted when a
    prefill completes or a request decodes), with random arrivals; return the iterations.
    """
    queue = [random_request(rng, i) for i in range(n_requests)]
    waiting: list[Request] = []
    running: list[Request] = []
    done: list[Request] = []
    steps = 0
    while len(done) < n_requests:
        for _ in range(rng.randint(0, 3)):
            if queue:
                waiting.append(queue.pop(0))
        if not waiting and not running:
            waiting.append(queue.pop(0))
        chosen = sched.schedule(tuple(waiting), tuple(running), budget)
        check_choice(tech, sched, waiting, running, budget, chosen)
        for r, n in chosen:
            if r.phase is Phase.WAITING:
                waiting.remove(r)
                running.append(r)
                r.phase = Phase.PREFILL
            r.computed += n
            if r.prompt_left == 0:
                r.emit([3], steps)
        for r in [r for r in running if r.phase is Phase.FINISHED]:
            running.remove(r)
            done.append(r)
        steps += 1
        assert steps < 5000, "the run does not finish"
    assert all(len(r.output) == r.max_new_tokens for r in done)
    return steps


@pytest.mark.parametrize("max_batch,max_tokens", [(4, 32), (8, 512), (1, 8)])
@pytest.mark.parametrize("tech,params", CONFIGS)
def test_simulated_run_finishes_every_request(tech, params, max_batch, max_tokens):
    sched = tech.build(params)
    rng = random.Random(f"sim-{tech.name}-{params}-{max_batch}")
    simulate(sched, tech, rng, Budget(max_batch, max_tokens))


# ----------------------------------------------------------------------------- engine


def run_engine(tech, tiny_target, tiny_draft, prompts, cap=None, check_cap=False):
    model, _ = tiny_target
    engine = Engine(
        model,
        attention=registry.baseline_of("attention").build(),
        cache_factory=registry.baseline_of("kvcache").build(),
        scheduler=tech.build(),
        decoder=registry.baseline_of("decoding").build(),
        config=EngineConfig(max_batch=8, max_tokens=512, kv_memory_cap=cap),
        draft=tiny_draft,
    )
    if check_cap:
        engine.step_context = _cap_checker(engine, cap)
    return engine.run([Request(i, list(p), MAX_NEW) for i, p in enumerate(prompts)])


def _cap_checker(engine: Engine, cap: int):
    """A step hook that asserts, after each iteration, that the caches hold at most ``cap``."""
    from contextlib import contextmanager

    @contextmanager
    def ctx(step: int, phase: str):
        yield
        used = engine.ctx.cache_factory.memory().used_bytes
        assert used <= cap, f"step {step}: {used} B of KV held, cap {cap} B"

    return ctx


@pytest.fixture(scope="module")
def uncapped(tiny_target, tiny_draft, eval_prompts):
    res = run_engine(registry.baseline_of("scheduling"), tiny_target, tiny_draft, eval_prompts)
    return [r.output for r in res.requests]


@pytest.mark.parametrize("tech,params", DEFAULTS)
def test_engine_preempts_under_kv_cap_and_keeps_greedy_output(
    tech, params, tiny_target, tiny_draft, eval_prompts, uncapped
):
    model, _ = tiny_target
    per_token = layout_of(model).full_bytes_per_token
    longest = max(len(p) for p in eval_prompts) + MAX_NEW
    # Room for about four prompts but not for four whole sequences: admission fits, decoding
    # outgrows it, so the engine must preempt (by recompute).
    cap = int(3.75 * longest * per_token)
    assert cap < len(eval_prompts) * longest * per_token
    res = run_engine(tech, tiny_target, tiny_draft, eval_prompts, cap=cap, check_cap=True)
    assert [r.output for r in res.requests] == uncapped
    assert all(r.phase is Phase.FINISHED and len(r.output) == MAX_NEW for r in res.requests)
    assert res.preemptions > 0, "the cap was meant to force preemption"
    assert sum(r.preemptions for r in res.requests) == res.preemptions
    plain = run_engine(tech, tiny_target, tiny_draft, eval_prompts)
    assert [r.output for r in plain.requests] == uncapped
    assert plain.preemptions == 0
