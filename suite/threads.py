"""How many intra-op threads a run uses, chosen on purpose and recorded.

torch's default is one thread per core. Its intra-op parallel regions end in a barrier, so an
op waits for its slowest thread, and a thread whose core another process also wants stalls the
whole op: on a 2-core machine with one CPU-bound neighbour ``effbench run smoke`` took 104 s
with torch's two threads and 40 s with one. The count is therefore chosen, in this order:

1. ``--threads N`` on the command line;
2. ``EFFBENCH_THREADS``, which ``effbench gate --run/--ab`` sets so that the runs it starts (in
   process, or as subprocesses on both sides of an A/B) use the one count it chose;
3. ``[run] threads = N`` in the preset;
4. ``OMP_NUM_THREADS``, the variable every OpenMP program (and torch) honours, when it is a
   count in range (an ambient value meant for another machine is ignored, not an error);
5. ``auto`` (the default): the cores that are really free, ``auto_threads`` below.

An explicit count must be between 1 and the usable cores (``usable_cores``: the CPUs this
process may run on, capped by a cgroup CPU quota); 0 or more is refused before anything runs,
with one line naming the source and the valid range. The choice and how it was made go into the
manifest (``ThreadChoice.to_json``) and every record's ``stats["threads"]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from effbench.suite.errors import ConfigError

AUTO = "auto"
THREADS_ENV = "EFFBENCH_THREADS"
OMP_ENV = "OMP_NUM_THREADS"
SLACK_CORES = 0.25
"""Other processes' load a core may carry and still count as free (see ``auto_threads``)."""
SAMPLE_S = 0.25
"""Length of the ``/proc/stat`` sample ``auto`` takes (25 ticks per CPU at USER_HZ=100)."""


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count of a run and how it was chosen.

    ``source``: ``--threads``, ``EFFBENCH_THREADS``, ``[run] threads``, ``OMP_NUM_THREADS`` or
    ``auto``. ``usable_cores``: the cores this process may use. ``busy_cores``: other processes'
    load measured for ``auto`` (cores' worth, None otherwise); ``measured_by`` says how
    (``/proc/stat`` sample or 1-minute load average). ``rule``: the sentence a reader needs.
    """

    threads: int
    source: str
    usable_cores: int
    busy_cores: float | None = None
    measured_by: str = ""
    rule: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the run's log: ``threads: 1 (auto: 2 usable cores, 1.02 busy ...)``."""
        return f"threads: {self.threads} ({self.rule})"


def auto_threads(usable: int, busy: float) -> int:
    """Threads for ``usable`` cores of which others keep ``busy`` cores' worth busy.

    The rule: ``floor(usable - busy + 0.25)``, at least 1 and at most ``usable``. A core counts
    as free when other processes use at most a quarter of it on average: ordinary background
    (a shell, logging, the kernel) stays well under that, while sustained work above it means
    the core is shared, and a shared core costs a barrier-synchronised op far more than the
    1/N of throughput one thread fewer does. On 2 cores: quiet (busy ~0.05) gives 2; one
    CPU-bound neighbour (busy ~1.0) gives 1; two give 1 (never 0).
    """
    if usable < 1:
        return 1
    return max(1, min(usable, math.floor(usable - max(0.0, busy) + SLACK_CORES)))


def cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """Cores allowed by this process's cgroup CPU quota (v2 ``cpu.max``, v1 cfs), or None."""
    try:
        with open(os.path.join(root, "cpu.max"), encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as f:
            quota_us = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as f:
            period_us = int(f.read())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def usable_cores() -> int:
    """The cores this process may use: its affinity set, capped by a cgroup CPU quota."""
    from effbench.profilers.interference import affinity

    n = len(affinity())
    quota = cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def measure_busy() -> tuple[float | None, str]:
    """Other processes' load in cores: a ``SAMPLE_S`` ``/proc/stat`` sample, else load average.

    The sample subtracts this process's own CPU time, so it measures others only. The
    1-minute load average is the fallback where ``/proc/stat`` is unreadable; it lags by a
    minute and counts this process too, which is why it is not the first choice.
    """
    from effbench.profilers.interference import busy_cores

    busy = busy_cores(SAMPLE_S)
    if busy is not None:
        return busy, f"/proc/stat over {SAMPLE_S:g} s"
    try:
        return float(os.getloadavg()[0]), "1-minute load average"
    except (AttributeError, OSError):
        return None, ""


def parse_threads(text: str) -> int | str:
    """``--threads`` / an environment variable's text: ``auto`` or an integer (not checked)."""
    text = str(text).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an integer nor 'auto'") from None


def check_count(n: int, usable: int, where: str) -> int:
    """``n`` when 1 <= n <= usable; else ConfigError, one line naming ``where`` and the range."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= usable:
        raise ConfigError(f"threads = {n!r} is out of range: valid values are 1..{usable} (the "
                          f"CPU cores this process may use) or 'auto'", where)
    return n


def choose_threads(
    flag: int | str | None = None,
    setting: int | str = AUTO,
    *,
    env: Mapping[str, str] | None = None,
    usable: int | None = None,
    measure: Callable[[], tuple[float | None, str]] = measure_busy,
    setting_where: str = "[run] threads",
) -> ThreadChoice:
    """The run's thread count from the flag, the environment, the preset, else ``auto``.

    ``usable`` (default ``usable_cores()``) bounds every explicit count; ``measure`` gives
    other processes' busy cores for ``auto``. Raises ConfigError for an explicit count out of
    range or an environment value that is not a count.
    """
    env = os.environ if env is None else env
    usable = usable_cores() if usable is None else usable
    omp = _env_value(env, OMP_ENV, lenient=True)
    if isinstance(omp, int) and not 1 <= omp <= usable:
        omp = None  # an ambient OpenMP setting for another machine: not an error here
    candidates: list[tuple[str, int | str | None]] = [
        ("--threads", flag), (THREADS_ENV, _env_value(env, THREADS_ENV)),
        (setting_where, setting), (OMP_ENV, omp)]
    for source, value in candidates:
        if value is None or value == AUTO:
            if source == "--threads" and value == AUTO:
                break  # an explicit --threads auto overrides everything below it
            continue
        n = check_count(value, usable, source)
        return ThreadChoice(n, source, usable, rule=f"{source} = {n}")
    busy, how = measure()
    if busy is None:
        n = usable
        rule = f"auto: {usable} usable core(s), other load unknown -> {n}"
    else:
        n = auto_threads(usable, busy)
        rule = (f"auto: {usable} usable core(s), {busy:.2f} busy with other work ({how}); "
                f"floor({usable} - {busy:.2f} + {SLACK_CORES}) -> {n}")
    return ThreadChoice(n, AUTO, usable, busy, how, rule)


def _env_value(env: Mapping[str, str], var: str, lenient: bool = False) -> int | str | None:
    """The variable as a count; a bad value is an error, or ignored (``lenient``: OpenMP's own
    variable may hold a list such as ``4,2`` that only OpenMP reads).
    """
    text = env.get(var)
    if text is None or not text.strip():
        return None
    try:
        return parse_threads(text)
    except ValueError as e:
        if lenient:
            return None
        raise ConfigError(str(e), var) from None


def apply_threads(n: int) -> dict[str, int]:
    """Set torch's intra-op threads to ``n`` and its inter-op threads too where still allowed.

    torch allows ``set_num_interop_threads`` once, before any inter-op work; a second run in the
    same process keeps the count the first one set. Returns what torch now uses.
    """
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # already set, or inter-op work already started: keep what is there
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
