"""Energy of named, nestable windows: GPU (NVML) and CPU package/DRAM (RAPL), gross and net.

``with prof.window("prefill"): ...`` reads the counters at both edges. GPU energy comes from
NVML's total-energy counter (mJ) when the device has one, else from a background thread that
samples board power and integrates it (trapezoid). CPU energy comes from RAPL when the kernel
exposes it. An idle baseline (power with nothing running, measured in ``start()``) turns gross
joules into net ones; both are reported, never net alone. A window shorter than a counter's
update period (NVML's energy counter moves every few tens of ms) would read ~0 J, so it is
flagged ``short_window``; with the counter its GPU energy is then estimated as instant power x
duration instead (Zeus's ``approx_instant_energy``), with power sampling it is integrated from
the samples taken at its edges.

Several GPUs can be measured at once (a case spread over devices, e.g. prefill and decode
disaggregated): GPU joules are summed over them, and each device's share is kept per window
(``gpu_j_by_device``) and, with more than one GPU, as metrics ``<window>.gpu<N>_J``. Torch's
``cuda:N`` is translated to NVML's index through ``CUDA_VISIBLE_DEVICES``
(:func:`effbench.profilers.nvml.nvml_index`), so the counters read are those of the boards the
work runs on.

The pure helpers at the bottom turn windows and token counts into J/token and J/request per
phase (ML.ENERGY's convention: J/request = J/token x output tokens).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from effbench.profilers.base import ProfileResult
from effbench.profilers.nvml import (
    NotSupported,
    NullNVML,
    NVMLLike,
    open_nvml,
    visible_nvml_index,
)
from effbench.profilers.rapl import RAPL, NullRAPL, open_rapl


@dataclass(frozen=True)
class Baseline:
    """Idle power measured over ``seconds``: GPU watts (None without a GPU source), CPU per zone.

    ``gpu_w`` is the sum over the measured GPUs; ``gpu_w_by_device`` keeps each one's, keyed
    ``gpu<N>`` for torch's ``cuda:N``.
    """

    seconds: float
    gpu_w: float | None
    cpu_w: dict[str, float] = field(default_factory=dict)
    gpu_w_by_device: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EnergyWindow:
    """One measured window. ``path`` joins the enclosing window names with ``/``.

    ``gpu_source`` is ``counter``, ``sampled`` (integrated power), ``instant`` (short window:
    power x duration) or empty when no GPU energy was measured. Net = gross - idle power x time.
    ``gpu_j`` sums every measured GPU; ``gpu_j_by_device`` (and its net twin) keep each GPU's
    joules, keyed ``gpu<N>`` for torch's ``cuda:N``.
    """

    name: str
    path: str
    seconds: float
    gpu_j: float | None = None
    gpu_net_j: float | None = None
    gpu_source: str = ""
    cpu_j: dict[str, float] = field(default_factory=dict)
    cpu_net_j: dict[str, float] = field(default_factory=dict)
    short_window: bool = False
    gpu_j_by_device: dict[str, float] = field(default_factory=dict)
    gpu_net_j_by_device: dict[str, float] = field(default_factory=dict)

    def total_j(self, net: bool = False) -> float | None:
        """GPU + CPU packages + DRAM joules (subzones like ``core`` are inside their package)."""
        gpu = self.gpu_net_j if net else self.gpu_j
        cpu = self.cpu_net_j if net else self.cpu_j
        if gpu is None and not cpu:
            return None
        return (gpu or 0.0) + sum(v for k, v in cpu.items() if additive_zone(k))


def additive_zone(key: str) -> bool:
    """RAPL zones that add up without double counting: packages and their ``dram`` subzone."""
    return "/" not in key or key.endswith("/dram")


def integrate_power(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Joules over ``[t0, t1]`` from time-sorted ``(seconds, watts)`` samples (trapezoid).

    Power between samples is linear; before the first and after the last it is held constant.
    """
    if not samples or t1 <= t0:
        return 0.0
    times = [t for t, _ in samples]

    def at(t: float) -> float:
        i = bisect.bisect_left(times, t)
        if i == 0:
            return samples[0][1]
        if i == len(samples):
            return samples[-1][1]
        (ta, pa), (tb, pb) = samples[i - 1], samples[i]
        return pa if tb == ta else pa + (pb - pa) * (t - ta) / (tb - ta)

    lo, hi = bisect.bisect_right(times, t0), bisect.bisect_left(times, t1)
    pts = [(t0, at(t0)), *samples[lo:hi], (t1, at(t1))]
    return sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in zip(pts, pts[1:]))


class PowerSampler:
    """A daemon thread polling NVML board power every ``period_s`` into ``(t, W)`` samples."""

    def __init__(
        self, nvml: NVMLLike, index: int, period_s: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.nvml, self.index, self.period_s, self.clock = nvml, index, period_s, clock
        self._samples: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self) -> float:
        """Take one sample now (window edges) and return its time."""
        w = self.nvml.power_mw(self.index) / 1000.0
        t = self.clock()
        with self._lock:
            bisect.insort(self._samples, (t, w))
        return t

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.mark()
            except Exception:  # noqa: BLE001 - a failed poll leaves a gap, not a crash
                continue

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="effbench-power", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def energy_j(self, t0: float, t1: float) -> float:
        with self._lock:
            samples = list(self._samples)
        return integrate_power(samples, t0, t1)


@dataclass(frozen=True)
class _Edge:
    t: float
    gpu_mj: dict[str, int] | None  # per GPU key, counter mode only
    cpu_uj: dict[str, int]


def _devices(device: str | torch.device | Sequence[str | torch.device]) -> list[torch.device]:
    """``"cuda:1"``, ``"cuda:0,cuda:1"`` or a sequence of devices -> distinct devices, in order.

    A bare ``cuda`` is ``cuda:0``, so the same GPU named twice is measured (and counted) once.
    """
    if isinstance(device, torch.device):
        items: list = [device]
    elif isinstance(device, str):
        items = [d.strip() for d in device.split(",") if d.strip()]
    else:
        items = list(device)
    out: list[torch.device] = []
    for item in items:
        dev = torch.device(item)
        if dev.type == "cuda":
            dev = torch.device("cuda", dev.index or 0)
        if dev not in out:
            out.append(dev)
    if not out:
        raise ValueError(f"no device to measure in {device!r}")
    return out


class EnergyProfiler:
    """Profiler protocol over a ``run`` window, plus user windows via :meth:`window`.

    ``device`` picks the GPUs: one device (``cuda:N``), several (a sequence, or
    ``"cuda:0,cuda:1"``), each mapped to its NVML index through ``CUDA_VISIBLE_DEVICES``
    unless ``nvml_index`` (one index per GPU, in order) says otherwise; a ``cpu`` device
    measures RAPL only. GPU energy is summed over the devices and kept per device. All GPUs
    are read the same way: by energy counter when every one has it, else by sampled power.
    An entry of ``CUDA_VISIBLE_DEVICES`` that cannot be mapped makes the profiler unavailable,
    with a one-line reason naming the variable and its value.

    ``nvml``/``rapl`` default to the real readers and are parameters so tests can pass fakes.
    ``counter_period_s`` is the NVML energy counter's update period, ``poll_s`` the
    power-sampling period, ``rapl_period_s`` RAPL's (~1 ms). ``clock`` and ``sleep`` are
    injectable so tests can drive time.
    """

    name = "energy"

    def __init__(
        self,
        device: str | torch.device | Sequence[str | torch.device] = "cuda:0",
        artifacts_dir: Path | None = None,
        *,
        nvml: NVMLLike | None = None,
        rapl: RAPL | NullRAPL | None = None,
        idle_s: float = 1.0,
        counter_period_s: float = 0.1,
        poll_s: float = 0.05,
        rapl_period_s: float = 0.001,
        nvml_index: int | Sequence[int] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.devices = _devices(device)
        self.device = self.devices[0]
        self.gpus = [d for d in self.devices if d.type == "cuda"]
        self.keys = [f"gpu{d.index}" for d in self.gpus]  # per-device keys of windows/metrics
        self.artifacts_dir = artifacts_dir
        self.idle_s = idle_s
        self.counter_period_s, self.poll_s, self.rapl_period_s = (
            counter_period_s, poll_s, rapl_period_s)
        self._indices: list[int] | None = None
        if nvml_index is not None:
            given = [nvml_index] if isinstance(nvml_index, int) else list(nvml_index)
            if len(given) != len(self.gpus):
                raise ValueError(f"nvml_index {nvml_index!r} must give one index per GPU of "
                                 f"{[str(d) for d in self.gpus]}")
            self._indices = given
        self._nvml_given, self._rapl_given = nvml, rapl
        self._nvml: NVMLLike | None = None
        self._rapl: RAPL | NullRAPL | None = None
        self._gpu_mode: str | None = None  # "counter", "sampled" or "" (none)
        self._samplers: dict[str, PowerSampler] = {}
        self._stack: list[str] = []
        self._run: _Edge | None = None
        self.baseline: Baseline | None = None
        self.windows: list[EnergyWindow] = []
        self.notes: list[str] = []

    # -- sources -------------------------------------------------------------------------

    def _sources(self) -> tuple[NVMLLike, RAPL | NullRAPL]:
        if self._nvml is None:
            if not self.gpus:
                self._nvml = NullNVML(f"device is {self.device}: no GPU energy")
            elif self._nvml_given is not None:
                self._nvml = self._nvml_given
            else:
                self._nvml = open_nvml()
        if self._rapl is None:
            self._rapl = self._rapl_given if self._rapl_given is not None else open_rapl()
        return self._nvml, self._rapl

    @property
    def index(self) -> int:
        """NVML index of the first GPU (the single-device view of :meth:`indices`)."""
        return self.indices()[0] if self.gpus else 0

    @property
    def _sampler(self) -> PowerSampler | None:
        """The first GPU's power sampler (the single-device view of ``_samplers``)."""
        return next(iter(self._samplers.values()), None)

    def indices(self) -> list[int]:
        """NVML index of each GPU, in order; ValueError (one line) when one cannot be mapped."""
        if self._indices is None:
            nvml, _ = self._sources()
            self._indices = [visible_nvml_index(d.index, nvml) for d in self.gpus]
        return self._indices

    def available(self) -> tuple[bool, str]:
        nvml, rapl = self._sources()
        gpu_ok, gpu_why = nvml.available()
        if gpu_ok:
            try:
                self.indices()
            except ValueError as e:  # measuring the wrong GPU, or none, is worse than not at all
                return False, str(e)
        cpu_ok, cpu_why = rapl.available()
        if gpu_ok or cpu_ok:
            return True, ""
        return False, f"{gpu_why}; {cpu_why}"

    def _mode(self) -> str:
        """How GPU energy is read: the counter, power sampling, or not at all (decided once)."""
        if self._gpu_mode is None:
            nvml, _ = self._sources()
            self._gpu_mode = ""
            if nvml.available()[0] and self.gpus:
                indices = self.indices()
                try:
                    for i in indices:
                        nvml.total_energy_mj(i)
                    self._gpu_mode = "counter"
                except NotSupported as e:
                    self.notes.append(f"energy counter not supported ({e}); sampling power")
                    try:
                        for i in indices:
                            nvml.power_mw(i)
                        self._gpu_mode = "sampled"
                        self._samplers = {k: PowerSampler(nvml, i, self.poll_s, self.clock)
                                          for k, i in zip(self.keys, indices)}
                    except NotSupported as e2:
                        self.notes.append(f"power not supported either ({e2}); no GPU energy")
        return self._gpu_mode

    def _sync(self) -> None:
        if self.gpus and torch.cuda.is_available():
            for d in self.gpus:
                torch.cuda.synchronize(d)

    def _edge(self) -> _Edge:
        self._sync()
        nvml, rapl = self._sources()
        mode = self._mode()
        gpu = None
        if mode == "counter":
            gpu = {k: nvml.total_energy_mj(i) for k, i in zip(self.keys, self.indices())}
        marks = [s.mark() for s in self._samplers.values()] if mode == "sampled" else []
        t = marks[0] if marks else self.clock()
        return _Edge(t, gpu, rapl.read_uj())

    def _period(self, mode: str, has_cpu: bool) -> float:
        gpu = {"counter": self.counter_period_s, "sampled": self.poll_s}.get(mode, 0.0)
        return max(gpu, self.rapl_period_s if has_cpu else 0.0)

    def _close(self, name: str, path: str, a: _Edge, b: _Edge) -> EnergyWindow:
        nvml, rapl = self._sources()
        mode = self._mode()
        dt = b.t - a.t
        short = dt < self._period(mode, bool(a.cpu_uj))
        by_device: dict[str, float] = {}
        source = mode
        if mode == "counter" and not short:
            by_device = {k: (b.gpu_mj[k] - a.gpu_mj[k]) / 1000.0  # type: ignore[index]
                         for k in self.keys}
        elif mode == "counter":
            source = "instant"
            try:
                by_device = {k: nvml.power_mw(i) / 1000.0 * dt
                             for k, i in zip(self.keys, self.indices())}
            except NotSupported:
                source = ""
        elif mode == "sampled" and self._samplers:
            by_device = {k: s.energy_j(a.t, b.t) for k, s in self._samplers.items()}
        gpu_j = sum(by_device.values()) if by_device else None
        cpu_j = rapl.delta_j(a.cpu_uj, b.cpu_uj)
        base = self.baseline
        gpu_net = None
        net_by_device: dict[str, float] = {}
        if gpu_j is not None and base is not None and base.gpu_w is not None:
            gpu_net = gpu_j - base.gpu_w * dt
            if set(by_device) <= set(base.gpu_w_by_device):
                net_by_device = {k: v - base.gpu_w_by_device[k] * dt
                                 for k, v in by_device.items()}
        cpu_net = {k: v - base.cpu_w[k] * dt for k, v in cpu_j.items()
                   if base is not None and k in base.cpu_w}
        return EnergyWindow(name, path, dt, gpu_j, gpu_net, source, cpu_j, cpu_net, short,
                            by_device, net_by_device)

    # -- windows -------------------------------------------------------------------------

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Measure the block as window ``name`` (nested inside any open window)."""
        path = "/".join([*self._stack, name])
        self._stack.append(name)
        a = self._edge()
        try:
            yield
        finally:
            b = self._edge()
            self._stack.pop()
            self.windows.append(self._close(name, path, a, b))

    def measure_baseline(self, seconds: float | None = None) -> Baseline:
        """Idle power over ``seconds`` of sleep (default ``idle_s``); used for net joules."""
        s = self.idle_s if seconds is None else seconds
        for sampler in self._samplers.values():
            sampler.start()
        a = self._edge()
        self.sleep(s)
        b = self._edge()
        w = self._close("idle", "idle", a, b)
        dt = max(w.seconds, 1e-9)
        gpu_w = None if w.gpu_j is None else w.gpu_j / dt
        self.baseline = Baseline(w.seconds, gpu_w, {k: v / dt for k, v in w.cpu_j.items()},
                                 {k: v / dt for k, v in w.gpu_j_by_device.items()})
        return self.baseline

    # -- profiler protocol ----------------------------------------------------------------

    def start(self) -> None:
        self._mode()
        for sampler in self._samplers.values():
            sampler.start()
        if self.baseline is None and self.idle_s > 0:
            self.measure_baseline()
        self._run = self._edge()

    def stop(self) -> ProfileResult:
        if self._run is None:
            raise RuntimeError("EnergyProfiler.stop() without start()")
        b = self._edge()
        self.windows.append(self._close("run", "run", self._run, b))
        self._run = None
        for sampler in self._samplers.values():
            sampler.stop()
        if self._nvml_given is None and self._nvml is not None:
            self._nvml.shutdown()  # a session we opened; the next window reopens one
            self._nvml, self._gpu_mode, self._samplers = None, None, {}
        artifacts = ()
        if self.artifacts_dir is not None:
            out = Path(self.artifacts_dir) / "energy_windows.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            indices = self._indices or [None] * len(self.gpus)
            out.write_text(json.dumps({
                "baseline": asdict(self.baseline) if self.baseline else None,
                "devices": [{"device": str(d), "key": k, "nvml_index": i}
                            for d, k, i in zip(self.gpus, self.keys, indices)],
                "notes": self.notes,
                "windows": [asdict(w) for w in self.windows],
            }, indent=1))
            artifacts = (str(out),)
        return ProfileResult(self.name, window_metrics(self.windows, self.baseline), artifacts)


def window_metrics(
    windows: Sequence[EnergyWindow], baseline: Baseline | None = None
) -> dict[str, tuple[float, str]]:
    """Metrics per window path (repeated windows summed): s, J gross/net, W, short count.

    GPU figures sum every measured GPU; with more than one, each GPU's share is added as
    ``<path>.gpu<N>_J`` / ``_net_J`` (and ``idle.gpu<N>_W``), ``N`` being torch's ``cuda:N``.
    """
    out: dict[str, tuple[float, str]] = {}
    if baseline is not None:
        out["idle.s"] = (baseline.seconds, "s")
        if baseline.gpu_w is not None:
            out["idle.gpu_W"] = (baseline.gpu_w, "W")
        if len(baseline.gpu_w_by_device) > 1:
            out.update({f"idle.{k}_W": (v, "W") for k, v in baseline.gpu_w_by_device.items()})
        out.update({f"idle.cpu.{k}_W": (v, "W") for k, v in baseline.cpu_w.items()})
    groups: dict[str, list[EnergyWindow]] = {}
    for w in windows:
        groups.setdefault(w.path, []).append(w)
    for path, ws in groups.items():
        s = sum(w.seconds for w in ws)
        out[f"{path}.s"] = (s, "s")
        out[f"{path}.windows"] = (float(len(ws)), "count")
        out[f"{path}.short_windows"] = (float(sum(w.short_window for w in ws)), "count")
        gpu = _sum([w.gpu_j for w in ws])
        if gpu is not None:
            out[f"{path}.gpu_J"] = (gpu, "J")
            out[f"{path}.gpu_W"] = (gpu / s if s > 0 else 0.0, "W")
        gnet = _sum([w.gpu_net_j for w in ws])
        if gnet is not None:
            out[f"{path}.gpu_net_J"] = (gnet, "J")
        for field_, suffix in (("gpu_j_by_device", "J"), ("gpu_net_j_by_device", "net_J")):
            keys = list(getattr(ws[0], field_))
            if len(keys) > 1:
                for key in keys:
                    j = sum(getattr(w, field_).get(key, 0.0) for w in ws)
                    out[f"{path}.{key}_{suffix}"] = (j, "J")
        for key in ws[0].cpu_j:
            out[f"{path}.cpu.{key}_J"] = (sum(w.cpu_j.get(key, 0.0) for w in ws), "J")
        for key in ws[0].cpu_net_j:
            out[f"{path}.cpu.{key}_net_J"] = (sum(w.cpu_net_j.get(key, 0.0) for w in ws), "J")
    return out


def _sum(values: Sequence[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values)  # type: ignore


# -- per-phase helpers (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class PhaseEnergy:
    """All windows of one name summed: joules gross and net (None when unmeasured)."""

    phase: str
    windows: int
    seconds: float
    joules: float | None
    net_joules: float | None
    short_windows: int


def phase_energy(windows: Sequence[EnergyWindow]) -> dict[str, PhaseEnergy]:
    """Group windows by their (leaf) name, e.g. every ``decode`` window of a run together."""
    groups: dict[str, list[EnergyWindow]] = {}
    for w in windows:
        groups.setdefault(w.name, []).append(w)
    return {
        name: PhaseEnergy(
            name, len(ws), sum(w.seconds for w in ws),
            _sum([w.total_j() for w in ws]), _sum([w.total_j(net=True) for w in ws]),
            sum(w.short_window for w in ws),
        )
        for name, ws in groups.items()
    }


def joules_per_token(
    phases: Mapping[str, PhaseEnergy], tokens: Mapping[str, int], net: bool = False
) -> dict[str, float]:
    """J/token for each phase that has both energy and a positive token count."""
    out = {}
    for name, n in tokens.items():
        p = phases.get(name)
        j = None if p is None else (p.net_joules if net else p.joules)
        if j is not None and n > 0:
            out[name] = j / n
    return out


def joules_per_request(
    phases: Mapping[str, PhaseEnergy], requests: int, net: bool = False
) -> dict[str, float]:
    """Each phase's energy divided by the requests served in it."""
    if requests <= 0:
        raise ValueError("requests must be positive")
    out = {}
    for name, p in phases.items():
        j = p.net_joules if net else p.joules
        if j is not None:
            out[name] = j / requests
    return out


def request_joules(j_per_token: float, output_tokens: int) -> float:
    """One request's energy as J/token x its output tokens (ML.ENERGY's per-response energy)."""
    return j_per_token * output_tokens
