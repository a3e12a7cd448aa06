"""Where host (CPU) time goes: py-spy samples of this process over the measured region.

``py-spy record`` runs in a subprocess against our own pid (with ``--native`` where it works, so
ATen/C++ frames appear under the Python ones) and is stopped with SIGINT, which makes it write
its output; the raw collapsed-stack file is kept as an artifact. The summary is the top
self-time frames (the leaf of each sample) and the share of samples whose leaf is Python code
versus native code. py-spy needs ptrace permission on the target; containers often deny it,
and ``available()`` then says exactly that.

It is not free: each sample pauses the process, and ``--native`` adds symbol loading (the
first ~0.5 s after attaching yields few samples) and unwinding. On a 2-core CPU box a 0.4 s
engine run took ~2.2x as long with ``--native`` at 100 Hz and ~1.1x without
(tests/benchmarks/bench_profiler_overhead.py), so profile host time in its own run, not in
the run whose latency is reported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from effbench.profilers.base import ProfileResult

_FRAME = re.compile(r"^(?P<fn>.*) \((?P<loc>[^()]*)\)$")
_PY_LOC = re.compile(r"(\.pyx?|>):\d+$")


@dataclass(frozen=True)
class HotFrame:
    """A leaf frame and the share of all samples spent in it (self time)."""

    function: str
    location: str  # file:line for Python, the library for native frames
    samples: int
    share: float


@dataclass(frozen=True)
class HostSummary:
    samples: int
    python_share: float
    native_share: float
    top: tuple[HotFrame, ...]


def split_frame(frame: str) -> tuple[str, str]:
    """``'fn (file.py:12)'`` -> ``('fn', 'file.py:12')``; a bare frame has no location."""
    m = _FRAME.match(frame)
    return (m.group("fn"), m.group("loc")) if m else (frame, "")


def is_python_frame(frame: str) -> bool:
    """Python frames carry ``file.py:line`` (or ``<string>:line``); native ones a library."""
    return bool(_PY_LOC.search(split_frame(frame)[1]))


def parse_raw(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: one ``frame;frame;...;leaf COUNT`` line per distinct stack."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def summarize(stacks: Counter[tuple[str, ...]], top: int = 10) -> HostSummary:
    """Top self-time frames and the Python/native split of the samples' leaf frames."""
    total = sum(stacks.values())
    leaves: Counter[str] = Counter()
    for stack, n in stacks.items():
        leaves[stack[-1]] += n
    if total == 0:
        return HostSummary(0, 0.0, 0.0, ())
    python = sum(n for f, n in leaves.items() if is_python_frame(f))
    hot = tuple(HotFrame(*split_frame(f), n, n / total) for f, n in leaves.most_common(top))
    return HostSummary(total, python / total, 1 - python / total, hot)


def _pyspy_probe(binary: str, pid: int, native: bool) -> tuple[bool, str]:
    cmd = [binary, "dump", "--pid", str(pid)] + (["--native"] if native else [])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"py-spy failed to run: {e}"
    if r.returncode == 0:
        return True, ""
    err = (r.stderr or r.stdout).strip().splitlines()
    msg = err[-1] if err else f"exit {r.returncode}"
    if "ermission" in msg or "ptrace" in msg.lower() or "EPERM" in msg:
        return False, f"py-spy lacks permission to attach (ptrace): {msg}"
    return False, f"py-spy cannot attach to pid {pid}: {msg}"


def _unblock_sigint() -> None:
    """In py-spy's process before exec: SIGINT (how ``stop`` ends it) unblocked.

    A child inherits its parent's blocked signals; a Ray worker (the Ray executor's cases)
    runs with SIGINT blocked, so py-spy would never see the signal and be killed after 30 s
    with no output.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


class HostProfiler:
    """py-spy over the region between ``start()`` and ``stop()``, on ``pid`` (default: us).

    By default each sample pauses the target while py-spy reads its stacks (``--native``
    unwinding makes that pause longer); ``nonblocking`` reads without pausing, cheaper but
    "may lead to inaccurate results" (py-spy's help). ``rate_hz`` trades detail for overhead.
    """

    name = "host"

    def __init__(
        self,
        device: str = "cpu",
        artifacts_dir: Path | None = None,
        *,
        pid: int | None = None,
        rate_hz: int = 100,
        native: bool = True,
        nonblocking: bool = False,
        top: int = 10,
        binary: str = "py-spy",
    ) -> None:
        self.device = device
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir else None
        self.pid = pid or os.getpid()
        self.rate_hz, self.native, self.nonblocking, self.top = rate_hz, native, nonblocking, top
        self.binary = shutil.which(binary) or ""
        self._checked: tuple[bool, str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Path | None = None
        self._log: Path | None = None
        self.summary: HostSummary | None = None

    def available(self) -> tuple[bool, str]:
        """Whether py-spy can attach here; falls back from ``--native`` when only that fails."""
        if self._checked is None:
            if not self.binary:
                self._checked = (False, "py-spy not installed (pip install py-spy)")
            else:
                ok, why = _pyspy_probe(self.binary, self.pid, self.native)
                if not ok and self.native and "permission" not in why:
                    ok, why = _pyspy_probe(self.binary, self.pid, False)
                    self.native = not ok  # plain attach works: sample without --native
                self._checked = (ok, why)
        return self._checked

    def start(self) -> None:
        out_dir = self.artifacts_dir or Path(tempfile.mkdtemp(prefix="effbench-host-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        self._out, self._log = out_dir / "pyspy.raw.txt", out_dir / "pyspy.log"
        cmd = [self.binary, "record", "-o", str(self._out), "-f", "raw", "-r", str(self.rate_hz),
               "--pid", str(self.pid)] + (["--native"] if self.native else [])
        cmd += ["--nonblocking"] if self.nonblocking else []
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          preexec_fn=_unblock_sigint)
        deadline = time.monotonic() + 5.0  # wait until it is sampling, so the start is covered
        while time.monotonic() < deadline and self._proc.poll() is None:
            if b"Sampling" in self._log.read_bytes():
                break
            time.sleep(0.01)

    def stop(self) -> ProfileResult:
        assert self._proc is not None and self._out is not None and self._log is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        rc, self._proc = self._proc.returncode, None
        if not self._out.exists():
            tail = self._log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            return ProfileResult(self.name, unavailable=f"py-spy wrote no output (exit {rc}): "
                                 f"{tail[0]}")
        self.summary = summarize(parse_raw(self._out.read_text(errors="replace")), self.top)
        top_path = self._out.with_name("host_top.json")
        top_path.write_text(json.dumps(asdict(self.summary), indent=1))
        s = self.summary
        metrics = {
            "samples": (float(s.samples), "count"),
            "python_share": (s.python_share, "fraction"),
            "native_share": (s.native_share, "fraction"),
            "native_frames": (float(self.native), "flag"),
        }
        if s.top:
            metrics["top1_share"] = (s.top[0].share, "fraction")
        return ProfileResult(self.name, metrics, (str(self._out), str(top_path)))
