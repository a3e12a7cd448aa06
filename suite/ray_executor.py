"""The Ray executor: one Ray task per case; the driver journals each result as it arrives.

``effbench run PRESET --executor ray [--address ADDR] [--ray-retries N]``. The runner does
everything it does for the local executor (validation, the run store, canaries, finalising);
this module replaces only the loop over cases (``RayExecutor.outcomes``):

- each case is one task (effbench.suite.ray_task.run_case) calling the same
  ``runner.measure_case`` as the local executor; a case on a CUDA device asks Ray for one GPU
  (``num_gpus=1``, ``num_cpus=1``), a CPU case for as many CPUs as its torch threads, so Ray
  packs CPU cases on a node by their declared cores;
- a task whose worker is lost (killed, out of memory, its node gone) is retried by Ray up to
  ``retries`` times (``max_retries``); after that, or for any other Ray error, the case is one
  failed ``error`` record naming it, and the sweep goes on. A case's own exception is never a
  Ray error: the task records it as the local runner does, so it is not retried;
- results are taken with ``ray.wait`` as each task ends and handed to the runner, which
  journals them at once: a driver killed with SIGKILL loses no finished case and
  ``--resume`` skips them as today;
- files a case wrote (serving timelines, profiler traces) come back as bytes with its records
  and are written under the run folder before the records are journaled.

The cluster is the one at ``address`` (``--address``, else ``RAY_ADDRESS``), the one this
process already joined (``ray.init`` called before, as the tests do), else a local cluster
started here on loopback (effbench.suite.ray_cluster) and shut down at the end.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from effbench.suite import ray_cluster
from effbench.suite.errors import ConfigError, DeviceError


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else ""


class RayExecutor:
    """The Ray side of one run: connect (``with``), check, run cases, disconnect.

    Constructing it only checks that Ray is installed and the options are sane, so bad input
    fails before anything starts; ``__enter__`` joins or starts the cluster.
    """

    def __init__(
        self, address: str | None, retries: int = 2, *, log: Callable[[str], None] = print
    ) -> None:
        self.ray = ray_cluster.require_ray()
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(
                f"--ray-retries must be an integer >= 0, got {retries!r}", "--ray-retries"
            )
        self.retries = retries
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        if self.address:  # well-formed and answering, before anything runs
            ray_cluster.check_answers(self.address)
        self.joined = self.ray.is_initialized()  # ray.init already called in this process
        if self.address and self.joined:
            raise ConfigError(
                f"this process already joined a Ray cluster; it cannot also join {self.address}",
                "--address",
            )
        self.log = log
        self.started = False
        self.device = "cpu"
        self.start_s: float | None = None
        self._sigterm: Any = None

    @property
    def starts_local(self) -> bool:
        """Whether this executor starts its own cluster on this machine (no address given)."""
        return not self.address and not self.joined

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> RayExecutor:
        t0 = time.perf_counter()
        if self.address:
            ray_cluster.connect(self.address)
        elif not self.joined:
            from effbench.suite.threads import usable_cores

            bound = ray_cluster.start_local(usable_cores())
            self.started = True
            if bound != ray_cluster.LOOPBACK:
                self.log(
                    f"ray: the local cluster listens on {bound}, not on "
                    f"{ray_cluster.LOOPBACK}: this Ray version ignored the request"
                )
        self.start_s = time.perf_counter() - t0
        nodes = ray_cluster.alive_nodes()
        how = "started" if self.started else "joined"
        self.log(
            f"ray {getattr(self.ray, '__version__', '?')}: {self.where()} {how} in "
            f"{self.start_s:.1f} s: {len(nodes)} node(s), "
            f"{sum(n.cpus for n in nodes):g} CPUs, {sum(n.gpus for n in nodes):g} GPUs"
        )
        if threading.current_thread() is threading.main_thread():
            # SIGTERM unwinds like Ctrl-C does, so __exit__ cancels the tasks and stops the
            # local cluster instead of leaving its processes behind
            self._sigterm = signal.signal(signal.SIGTERM, _terminate)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None
        if self.started:
            self.ray.shutdown()
            self.started = False

    # -- checks ----------------------------------------------------------------------------
    def where(self) -> str:
        """The cluster in words, for messages: its address, or the local one."""
        if self.address:
            return f"the Ray cluster at {self.address}"
        return "the Ray cluster this process joined" if self.joined else "the local Ray cluster"

    def choose_threads(self, flag: int | str | None, setting: int | str, where: str) -> Any:
        """The run's thread count against the cluster's largest node (connected first).

        On a cluster this process did not start, ``auto`` cannot see other load on the nodes:
        it gives the largest node's CPU count, so a CPU case has a node to itself.
        """
        from effbench.suite.threads import choose_threads

        largest = max((int(n.cpus) for n in ray_cluster.alive_nodes()), default=0)
        if largest < 1:
            raise ConfigError(f"{self.where()} has no node with a CPU", "--executor ray")
        choice = choose_threads(
            flag, setting, usable=largest, setting_where=where, measure=lambda: (None, "")
        )
        return dataclasses.replace(choice, rule=f"{choice.rule} (largest Ray node: {largest} CPUs)")

    def check(self, device: str, threads: int, cases: list[Any]) -> None:
        """Resolve the cases' device for the cluster and refuse what it cannot run.

        ``cuda:N`` names one GPU of one machine, which Ray does not place: refused, with
        ``cuda`` suggested. ``cuda`` needs a GPU in the cluster; ``auto`` is ``cuda`` when it
        has one, else ``cpu``. A CPU case needs a node with ``threads`` CPUs; a task no node
        can hold would wait forever, so it is refused here with the largest node's count.
        """
        nodes = ray_cluster.alive_nodes()
        gpus = sum(n.gpus for n in nodes)
        if device.startswith("cuda:"):
            raise ConfigError(
                f"device '{device}' pins one GPU of one machine; with --executor "
                "ray each case is given a GPU by Ray: use --device cuda",
                "--device",
            )
        if device == "cuda" and gpus < 1:
            raise DeviceError(
                f"device 'cuda' requested but {self.where()} has no GPU; use --device cpu"
            )
        self.device = "cuda" if device == "cuda" or (device == "auto" and gpus >= 1) else "cpu"
        largest = max((n.cpus for n in nodes), default=0.0)
        if self.device == "cpu" and cases and largest < threads:
            raise ConfigError(
                f"threads = {threads} but the largest node of {self.where()} has "
                f"{largest:g} CPUs; use --threads N with N <= {largest:g}",
                "--threads",
            )

    def describe(self) -> dict[str, Any]:
        """The executor's block of the manifest's config: cluster, nodes, retries, device."""
        return {
            "kind": "ray",
            "address": self.address or ("joined" if self.joined else "local"),
            "ray_version": getattr(self.ray, "__version__", None),
            "retries": self.retries,
            "device": self.device,
            "start_s": self.start_s,
            "nodes": [n.to_json() for n in ray_cluster.alive_nodes()],
        }

    def resources(self, threads: int) -> dict[str, int]:
        """What each case's task asks Ray for: one GPU (and one CPU) on CUDA, else its threads.

        A GPU task also gets ``max_calls=1`` (Ray's default for GPU tasks, said explicitly): a
        fresh worker per case, since a reused one would keep the first GPU it initialised
        whatever ``CUDA_VISIBLE_DEVICES`` Ray sets for the next task.
        """
        if self.device == "cuda":
            return {"num_gpus": 1, "num_cpus": 1, "max_calls": 1}
        return {"num_gpus": 0, "num_cpus": threads}

    # -- the sweep -------------------------------------------------------------------------
    def outcomes(
        self,
        todo: list[Any],
        preset: Any,
        store: Any,
        index: dict[str, int],
        *,
        profile: list[str] | None,
        choice: Any,
        retry_noisy: int,
    ) -> Iterator[tuple[Any, Any]]:
        """Submit every case, then yield ``(case, CaseOutcome)`` as each task ends.

        Leaving early (an exception, Ctrl-C, SIGTERM, the consumer closing the generator)
        cancels the tasks still pending or running (``force=True`` stops their workers).
        """
        from effbench.suite import ray_task

        ray = self.ray
        task = ray.remote(
            max_retries=self.retries, retry_exceptions=False, **self.resources(choice.threads)
        )(ray_task.run_case)
        preset_ref = ray.put(preset)
        pending: dict[Any, Any] = {}
        for case in todo:
            spec = ray_task.TaskSpec(
                case,
                store.run_id,
                index[case.case_id],
                self.device,
                choice,
                retry_noisy,
                tuple(profile or ()),
            )
            ref = task.options(name=f"effbench {case.case_id}").remote(preset_ref, spec)
            pending[ref] = case
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    case = pending.pop(ref)
                    yield case, self._outcome(ref, case, store, choice)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass

    def _outcome(self, ref: Any, case: Any, store: Any, choice: Any) -> Any:
        """One finished task as a ``CaseOutcome``: its records, or a failed record naming the
        Ray error; its files written under the run folder first.
        """
        from effbench.suite import runner
        from effbench.suite.store_rows import _record_from_row

        try:
            got = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            msg = (
                f"{type(e).__name__}: {_first_line(e)} (Ray task; retried up to "
                f"{self.retries} time(s) when its worker was lost)"
            )
            self.log(f"case failed: {case.case_id}: {msg}")
            rec = runner._not_measured(case, self.device, store.run_id, "error", "failed", msg)
            return runner.CaseOutcome(runner._stamped([rec], choice, None, 0), True, False)
        for line in got["log"]:
            self.log(f"[{got['host']}] {line}")
        write_artifacts(Path(store.run_dir), got["artifacts"])
        if got["left_on_worker"]:
            self.log(
                f"{case.case_id}: artifacts over {_ship_limit_mb()} MB left on the "
                f"worker at {got['left_on_worker']}"
            )
        records = [_record_from_row(row) for row in got["rows"]]
        return runner.CaseOutcome(records, bool(got["failed"]), bool(got["noisy"]))


def _ship_limit_mb() -> int:
    from effbench.suite.ray_task import MAX_SHIP_BYTES

    return MAX_SHIP_BYTES // (1024 * 1024)


def write_artifacts(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a case's shipped files under ``run_dir`` at the relative paths its records name.

    Only paths under ``artifacts/`` are accepted (a path that climbs out is refused), and each
    file is written atomically, so a driver killed mid-write leaves no half file.
    """
    from effbench.suite.store_files import _write_atomic

    root = (run_dir / "artifacts").resolve()
    for rel, data in files.items():
        path = (run_dir / rel).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"artifact path {rel!r} is outside the run's artifacts folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)


def _terminate(signum: int, frame: Any) -> None:
    from effbench.suite.subprocs import Terminated

    raise Terminated(signum)
