"""No orphans: SIGTERM to an effbench command stops the children it started.

A supervisor, a CI step or ``kill`` sends SIGTERM to the command's pid only. Each test starts
the command as a subprocess, finds its children through /proc (by parent pid) before the
signal, sends SIGTERM to the command alone, and checks within a bounded time that the command
exited with 143 (128 + SIGTERM), that no child is left and, for the dashboard, that its port is
free again. Any process a test started and finds still alive is SIGKILLed by pid at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[1] == pid:
                out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_free(port: int) -> bool:
    """Nothing listens and the port can be bound (SO_REUSEADDR: TIME_WAIT does not count)."""
    if listening(port):
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def until(cond, timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _cleanup(proc: subprocess.Popen, pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_sigterm_to_effbench_dash_stops_the_streamlit_server(tmp_path):
    pytest.importorskip("streamlit")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "effbench.suite.cli", "dash", "--results", str(tmp_path),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    kids: list[int] = []
    try:
        assert until(lambda: listening(port) or proc.poll() is not None, 90), "never listened"
        assert proc.poll() is None, f"dash exited early with {proc.returncode}"
        kids = children_of(proc.pid)
        assert kids and any("streamlit" in cmdline(k) for k in kids)
        os.kill(proc.pid, signal.SIGTERM)  # the launcher only, as a supervisor would
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert until(lambda: port_free(port), 10), f"port {port} still in use"
        assert until(lambda: not any(alive(k) for k in kids), 10), "a child was left running"
    finally:
        _cleanup(proc, kids)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout


def test_sigterm_to_gate_ab_stops_the_side_run_and_removes_the_worktree(tmp_path):
    """``ab_sides`` with the side's ``effbench run`` replaced by a long sleep (the command is
    not what is tested, only that it is stopped and the worktree cleaned)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README").write_text("x\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    script = textwrap.dedent("""
        import sys
        from effbench.suite import gate_ab
        gate_ab.side_command = lambda *a, **k: [
            sys.executable, "-c", "import time; time.sleep(600)  # fake-side-run"]
        gate_ab.ab_sides("HEAD", "mini", 1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    side: list[int] = []
    try:
        def side_started() -> bool:
            side[:] = [k for k in children_of(proc.pid) if "fake-side-run" in cmdline(k)]
            return bool(side) or proc.poll() is not None

        assert until(side_started, 60) and proc.poll() is None, proc.stderr.read()
        trees = _git(repo, "worktree", "list", "--porcelain").split("\n\n")
        worktree = Path(next(t for t in trees if "detached" in t).split()[1])
        assert worktree.is_dir()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert until(lambda: not any(alive(k) for k in side), 10), "side run left running"
        assert not worktree.exists() and not worktree.parent.exists()
        assert len(_git(repo, "worktree", "list").strip().splitlines()) == 1
    finally:
        _cleanup(proc, side)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(f"""
        import sys
        from effbench.suite.subprocs import ChildGuard
        stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "time.sleep(600)  # stubborn-child")
        try:
            with ChildGuard(grace_s=0.5) as guard:
                guard.wait(guard.popen([sys.executable, "-c", stubborn]))
        finally:
            open({str(marker)!r}, "w").close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    kids: list[int] = []
    try:
        def started() -> bool:
            kids[:] = [k for k in children_of(proc.pid) if "stubborn-child" in cmdline(k)]
            return bool(kids) or proc.poll() is not None

        assert until(started, 30) and proc.poll() is None, proc.stderr.read()
        time.sleep(0.3)  # let the child install its SIG_IGN
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        assert time.monotonic() - t0 < 10
        assert until(lambda: not any(alive(k) for k in kids), 5)
        assert marker.exists()  # finally blocks ran: Terminated is a SystemExit
    finally:
        _cleanup(proc, kids)
