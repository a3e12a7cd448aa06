"""What else the machine was doing while a case was timed, and whether that makes it noisy.

A timing taken while another process competes for the same cores is not the number a quiet
machine gives: on a 2-core machine one CPU-bound neighbour made ``effbench run smoke`` 2.6x
slower with two torch threads. The runner therefore observes every case's timed pass with an
``InterferenceObserver`` and stores what it saw beside the case's metrics (records
``interference.<x>``, declared in effbench.profilers.metrics), with a ``noisy`` mark when the
``NoisyRule`` says the case was measured under interference. Nothing here fails a case: a part
that cannot be read on this machine is left out and said (``Observation.unavailable``).

What is observed over the window (``start()`` .. ``stop()``):

- **CPU time taken by other processes**, from ``/proc/stat``: the busy ticks (user, nice,
  system, irq, softirq) of the CPUs this process may run on (its affinity set), minus this
  process tree's own CPU time (``/proc/self/stat``: utime + stime of every thread, plus cutime +
  cstime of reaped children). This is chosen over summing ``/proc/[pid]/stat`` of every other
  process because it costs two reads whatever the process count (a pid scan reads hundreds of
  files twice per case), it cannot miss a process that starts and exits inside the window, and
  it includes kernel work (interrupts, kernel threads) that also takes the cores from the run.
  Its error is the run's own children still running at ``stop()`` (not yet in cstime) and tick
  rounding, a few 10 ms ticks per CPU, which the rule's absolute floor absorbs.
- **Steal time**, the ``steal`` column of the same CPUs: time a hypervisor ran another guest
  while this one had work (0 on bare metal; absent on kernels that do not report it).
- **Load average** (1 minute) at start and end: context only, see ``NoisyRule``.
- **CPU frequency** min/max over the window's two samples, from ``scaling_cur_freq`` where
  cpufreq is readable (often not in VMs): context only.
- **GPU utilisation by other processes** on a CUDA device, from NVML's per-process SM
  utilisation samples since ``start()`` (``effbench.profilers.nvml``): the samples of every pid
  but this one. Unavailable (no NVML, a device without per-process accounting, or pids from
  another pid namespace so this process cannot be told apart) is said, not fatal.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from effbench.profilers.base import ProfileResult

PROC_STAT = "/proc/stat"
PROC_SELF_STAT = "/proc/self/stat"
CPUFREQ = "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"
NAME = "interference"


def clock_ticks() -> int:
    """USER_HZ, the unit of ``/proc/stat`` and ``/proc/<pid>/stat`` times (100 almost always)."""
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def affinity() -> tuple[int, ...]:
    """The CPUs this process may run on (``sched_getaffinity``), else all of ``os.cpu_count``."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------
# /proc readers (each returns None where the file is missing or unreadable)


@dataclass(frozen=True)
class CpuTicks:
    """Summed ``/proc/stat`` columns of some CPUs, in clock ticks.

    ``busy`` = user + nice + system + irq + softirq (guest time is already inside user and
    nice), ``steal`` the steal column (None when the kernel has no such column), ``total`` every
    column up to steal (busy + idle + iowait + steal): the CPUs' elapsed ticks.
    """

    busy: int
    steal: int | None
    total: int


def parse_proc_stat(text: str, cpus: Collection[int] | None = None) -> CpuTicks | None:
    """``CpuTicks`` of the ``cpuN`` lines of ``cpus`` (all of them, the ``cpu`` line, if None)."""
    busy = total = 0
    steal: int | None = 0
    found = False
    wanted = None if cpus is None else {f"cpu{c}" for c in cpus}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            continue
        if (wanted is None and name != "cpu") or (wanted is not None and name not in wanted):
            continue
        cols = [int(x) for x in rest.split()]
        if len(cols) < 4:
            continue
        user, nice, system, idle = cols[:4]
        iowait, irq, softirq = (cols[4:7] + [0, 0, 0])[:3]
        busy += user + nice + system + irq + softirq
        total += user + nice + system + idle + iowait + irq + softirq
        if len(cols) > 7 and steal is not None:
            steal += cols[7]
            total += cols[7]
        else:
            steal = None
        found = True
    return CpuTicks(busy, steal, total) if found else None


def read_cpu_ticks(cpus: Collection[int] | None = None, path: str = PROC_STAT
                   ) -> CpuTicks | None:
    try:
        with open(path, encoding="ascii") as f:
            return parse_proc_stat(f.read(), cpus)
    except (OSError, ValueError):
        return None


def parse_own_ticks(text: str) -> int:
    """The CPU ticks of a ``/proc/<pid>/stat`` line: utime + stime + cutime + cstime.

    The command name (field 2) may hold spaces and parentheses, so fields are counted from the
    last ``)``: state is field 3, utime..cstime are fields 14..17.
    """
    fields = text[text.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15])


def read_own_ticks(path: str = PROC_SELF_STAT) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_own_ticks(f.read())
    except (OSError, ValueError, IndexError):
        return None


def read_load1() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def read_cpu_mhz(cpus: Collection[int], pattern: str = CPUFREQ) -> list[float]:
    """Current frequency (MHz) of each CPU whose cpufreq ``scaling_cur_freq`` is readable."""
    out = []
    for cpu in cpus:
        try:
            with open(pattern.format(cpu=cpu), encoding="ascii") as f:
                out.append(int(f.read().strip()) / 1000.0)  # kHz -> MHz
        except (OSError, ValueError):
            continue
    return out


def busy_cores(interval_s: float = 0.25, cpus: Collection[int] | None = None) -> float | None:
    """Cores' worth of CPU time other processes used over a short sample of ``interval_s``.

    The same subtraction as the observer (busy ticks of ``cpus`` minus this process's own),
    divided by the sample's elapsed ticks per CPU. None where ``/proc/stat`` is unreadable.
    """
    cpus = affinity() if cpus is None else cpus
    a, own_a = read_cpu_ticks(cpus), read_own_ticks()
    time.sleep(interval_s)
    b, own_b = read_cpu_ticks(cpus), read_own_ticks()
    if a is None or b is None:
        return None
    elapsed = (b.total - a.total) / max(1, len(cpus))
    if elapsed <= 0:
        return None
    own = (own_b - own_a) if own_a is not None and own_b is not None else 0
    steal = (b.steal - a.steal) if a.steal is not None and b.steal is not None else 0
    return max(0.0, (b.busy - a.busy - own + steal) / elapsed)


# ---------------------------------------------------------------------------------------------
# The rule


@dataclass(frozen=True)
class NoisyRule:
    """When a case counts as measured under interference (``noisy``).

    Noisy when, over the timed pass, other processes (and a hypervisor's steal) took more than
    ``max_share`` (10 %) of the CPU capacity the run could use, and at least ``min_cpu_s``
    (0.05 s) of CPU time in all; or, on a GPU, other processes used more than
    ``max_gpu_other_pct`` (10 %) of its SMs.

    The capacity is ``usable cores x wall time``. Other processes' time on CPUs of the affinity
    set beyond the usable cores (a CPU quota smaller than the affinity set) is not counted: it
    fits beside the run. On a machine whose usable cores are all its CPUs, every core-second
    another process takes counts, even one on a core the run's threads left free: that core
    still shares caches, memory bandwidth and often a physical core (SMT siblings) with the
    run. On the 2-core machine of the issue a run with one thread beside one CPU-bound
    neighbour was 11 % slower than quiet, more than the gate's 5 % timing threshold.

    Why 10 %: a quiet machine's background (shells, logging, the kernel) stays at a few
    percent; one CPU-bound neighbour on 2 cores is 50 %, on 8 cores 12.5 %, so the threshold
    sits between them and catches a single competing process up to 8 cores. The 0.05 s floor
    (5 ticks) keeps tick rounding from marking short cases. The load average is recorded but
    not used: it is a one-minute average (a 1.5 s case barely moves it) that counts the run's
    own threads and tasks blocked on I/O.
    """

    max_share: float = 0.10
    min_cpu_s: float = 0.05
    max_gpu_other_pct: float = 10.0

    def share(self, other_cpu_s: float, steal_s: float, wall_s: float, usable: int,
              cpus: int) -> float:
        """Fraction of the run's CPU capacity taken by others (0 when nothing is known)."""
        if wall_s <= 0 or usable <= 0:
            return 0.0
        contending = max(0.0, (other_cpu_s + steal_s) / wall_s - max(0, cpus - usable))
        return contending / usable

    def judge(self, share: float, other_cpu_s: float, steal_s: float,
              gpu_other_pct: float | None = None) -> tuple[bool, str]:
        """(noisy, why): why names the measurement that crossed its threshold."""
        why = []
        if share > self.max_share and other_cpu_s + steal_s >= self.min_cpu_s:
            why.append(f"other processes took {share:.0%} of the CPU capacity the run could use "
                       f"(> {self.max_share:.0%})")
        if gpu_other_pct is not None and gpu_other_pct > self.max_gpu_other_pct:
            why.append(f"other processes used {gpu_other_pct:.0f}% of the GPU "
                       f"(> {self.max_gpu_other_pct:.0f}%)")
        return bool(why), "; ".join(why)


# ---------------------------------------------------------------------------------------------
# The observation


@dataclass(frozen=True)
class Observation:
    """What one observed window saw.

    ``metrics``: ``name -> (value, unit)``, stored as ``interference.<name>`` records.
    ``noisy``/``reason``: the rule's verdict. ``score``: how much interference, to pick the
    cleanest of several attempts (CPU share plus the GPU share; 0 is quiet). ``unavailable``:
    what could not be observed here, each with why.
    """

    metrics: dict[str, tuple[float, str]] = field(default_factory=dict)
    noisy: bool = False
    reason: str = ""
    score: float = 0.0
    unavailable: tuple[str, ...] = ()

    def result(self) -> ProfileResult:
        """The observation as a profiler result (the protocol of effbench.profilers.base)."""
        if not self.metrics and self.unavailable:
            return ProfileResult(NAME, unavailable="; ".join(self.unavailable))
        return ProfileResult(NAME, dict(self.metrics))


INIT_PID_NS = "pid:[4026531836]"
"""``/proc/self/ns/pid`` of the kernel's initial pid namespace (``PROC_PID_INIT_INO``)."""


def initial_pid_namespace() -> bool | None:
    """Whether this process sees the host's pids (NVML reports those); None if unknown."""
    try:
        return os.readlink("/proc/self/ns/pid") == INIT_PID_NS
    except OSError:
        return None


class ProcessUtilization:
    """NVML per-process SM utilisation of one GPU since a timestamp (the part that may fail).

    NVML names processes by their pid in the host's pid namespace; in a container this
    process has another pid, so its own samples could not be told from others'. Then the
    reading is unavailable (said), unless the pids are known to agree (``pid_namespace``).
    """

    def __init__(self, nvml: Any, index: int,
                 pid_namespace: Callable[[], bool | None] = initial_pid_namespace) -> None:
        self.nvml, self.index, self.pid_namespace = nvml, index, pid_namespace

    def others(self, since_us: int, own_pid: int) -> tuple[float | None, str]:
        """(percent of SMs used by other pids, "") or (None, why it is unknown)."""
        ok, why = self.nvml.available()
        if not ok:
            return None, why
        read = getattr(self.nvml, "process_utilization", None)
        if read is None:
            return None, "this NVML wrapper has no per-process utilisation"
        try:
            samples = read(self.index, since_us)
        except Exception as e:  # noqa: BLE001 - an observer never fails the case
            return None, f"NVML per-process utilisation: {type(e).__name__}: {e}"
        initial = self.pid_namespace()
        if initial is False or (initial is None and samples
                                and own_pid not in {pid for pid, _ in samples}):
            return None, ("NVML reports pids of the host's pid namespace and this process "
                          "runs in another (a container): it cannot be told apart")
        per_pid: dict[int, list[float]] = {}
        for pid, sm in samples:
            per_pid.setdefault(pid, []).append(float(sm))
        other = sum(sum(v) / len(v) for pid, v in per_pid.items() if pid != own_pid)
        return min(100.0, other), ""


class InterferenceObserver:
    """Observe one window (``start()`` .. ``stop()``): a profiler of what else ran.

    ``threads`` is the run's intra-op thread count, ``usable`` the cores it may use (affinity,
    capped by a CPU quota), ``cpus`` the CPUs whose ticks are read (default: the affinity
    set). ``gpu`` (a ``ProcessUtilization``) is given on a CUDA device only. After ``stop()``,
    ``observation`` holds the full verdict; ``stop()`` itself returns the metrics as a
    ``ProfileResult``.
    """

    name = NAME

    def __init__(self, threads: int, usable: int | None = None,
                 cpus: Collection[int] | None = None, gpu: ProcessUtilization | None = None,
                 rule: NoisyRule | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.cpus = tuple(affinity() if cpus is None else cpus)
        self.usable = usable or len(self.cpus)
        self.threads = threads
        self.gpu = gpu
        self.rule = rule or NoisyRule()
        self.clock = clock
        self.tick = clock_ticks()
        self._start: dict[str, Any] | None = None
        self.observation = Observation()

    def available(self) -> tuple[bool, str]:
        if read_cpu_ticks(self.cpus) is None:
            return False, f"{PROC_STAT} is not readable here"
        return True, ""

    def _sample(self) -> dict[str, Any]:
        return {"t": self.clock(), "cpu": read_cpu_ticks(self.cpus), "own": read_own_ticks(),
                "load": read_load1(), "mhz": read_cpu_mhz(self.cpus),
                "wall_us": int(time.time() * 1e6)}

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> ProfileResult:
        self.observation = self._observe(self._sample())
        return self.observation.result()

    def _observe(self, end: dict[str, Any]) -> Observation:
        begin = self._start
        if begin is None:
            return Observation(unavailable=("stop() without start()",))
        metrics: dict[str, tuple[float, str]] = {}
        missing: list[str] = []
        wall = max(0.0, end["t"] - begin["t"])
        metrics["wall_s"] = (wall, "s")
        for key, sample in (("load_start", begin), ("load_end", end)):
            if sample["load"] is not None:
                metrics[key] = (sample["load"], "tasks")
        other_s = steal_s = 0.0
        share = 0.0
        a, b = begin["cpu"], end["cpu"]
        if a is None or b is None:
            missing.append(f"CPU time of other processes: {PROC_STAT} is not readable")
        else:
            own = end["own"] - begin["own"] if None not in (begin["own"], end["own"]) else 0
            other_s = max(0, b.busy - a.busy - own) / self.tick
            metrics["other_cpu_s"] = (other_s, "s")
            if a.steal is not None and b.steal is not None:
                steal_s = max(0, b.steal - a.steal) / self.tick
                metrics["steal_s"] = (steal_s, "s")
            share = self.rule.share(other_s, steal_s, wall, self.usable, len(self.cpus))
            metrics["other_cpu_share"] = (share, "fraction")
        mhz = begin["mhz"] + end["mhz"]
        if mhz:
            metrics["cpu_mhz_min"] = (min(mhz), "MHz")
            metrics["cpu_mhz_max"] = (max(mhz), "MHz")
        gpu_pct = None
        if self.gpu is not None:
            gpu_pct, why = self.gpu.others(begin["wall_us"], os.getpid())
            if gpu_pct is None:
                missing.append(f"GPU utilisation by other processes: {why}")
            else:
                metrics["gpu_other_util"] = (gpu_pct, "%")
        noisy, reason = self.rule.judge(share, other_s, steal_s, gpu_pct)
        metrics["noisy"] = (1.0 if noisy else 0.0, "flag")
        score = share + (gpu_pct or 0.0) / 100.0
        return Observation(metrics, noisy, reason, score if math.isfinite(score) else 0.0,
                           tuple(missing))


class NullInterference:
    """Observes nothing (no ``/proc`` here): never noisy, and says why."""

    name = NAME

    def __init__(self, reason: str = f"{PROC_STAT} is not readable here") -> None:
        self.reason = reason
        self.observation = Observation(unavailable=(reason,))

    def available(self) -> tuple[bool, str]:
        return True, ""

    def start(self) -> None:
        pass

    def stop(self) -> ProfileResult:
        return self.observation.result()


def make_observer(threads: int, usable: int | None = None, device: str = "cpu",
                  nvml: Any = None) -> InterferenceObserver | NullInterference:
    """The observer for a run on ``device``: the real one where ``/proc/stat`` is readable.

    On a CUDA device the GPU part reads NVML (``nvml``, or a session opened once per process);
    torch's ``cuda:N`` is mapped to NVML's index through ``CUDA_VISIBLE_DEVICES``.
    """
    cpus = affinity()
    if read_cpu_ticks(cpus) is None:
        return NullInterference()
    gpu = None
    if device.startswith("cuda"):
        from effbench.profilers.nvml import visible_nvml_index

        nv = nvml if nvml is not None else _shared_nvml()
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        try:
            gpu = ProcessUtilization(nv, visible_nvml_index(index, nv))
        except ValueError as e:
            gpu = ProcessUtilization(_Unavailable(str(e)), 0)
    return InterferenceObserver(threads, usable, cpus, gpu)


class _Unavailable:
    """An NVML stand-in that only says why (a device index NVML cannot map)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason


_NVML: list[Any] = []


def _shared_nvml() -> Any:
    """One NVML session for the process, opened on first use (``open_nvml``: never raises)."""
    if not _NVML:
        from effbench.profilers.nvml import open_nvml

        _NVML.append(open_nvml())
    return _NVML[0]

