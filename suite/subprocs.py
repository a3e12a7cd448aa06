"""Child processes that never outlive the command that started them.

A long-running effbench command that starts a child (``effbench dash`` its Streamlit server,
``effbench gate --ab`` each side's ``effbench run``, later ``effbench serve`` and the Ray
executor's workers) must not leave that child behind when it is told to stop. A supervisor, a
CI step or ``kill`` sends SIGTERM to the command's pid only; with Python's default disposition
the command dies at once and its child is re-parented to init, still running and, for a
server, still listening on its port. :class:`ChildGuard` is the one pattern every such command
uses instead:

- children start in a session (process group) of their own, so a signal can reach the child and
  everything it started in turn (``os.killpg``), and a terminal's Ctrl-C reaches the command
  only, which forwards it once;
- while the guard is active, SIGTERM and SIGINT are caught: each live child's group is sent the
  same signal, the command waits for it at most ``grace_s`` seconds, then SIGKILLs the group;
  a second signal while children are still stopping SIGKILLs them at once;
- once the children are gone, :class:`Terminated` (a ``SystemExit`` with the conventional code
  ``128 + signum``: 143 for SIGTERM, 130 for SIGINT) is raised in the main thread, so
  ``finally`` blocks run (a worktree is removed, a temporary folder deleted) and the command
  exits with that code. A signal that arrives while no child is running raises it at once;
  signals after that are ignored, so they cannot interrupt the cleanup they started;
- on Linux each child also asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``), which covers the one case no handler can: the command being
  SIGKILLed. The kernel ties this to the *thread* that started the child, so a child started
  from a short-lived worker thread needs ``ChildGuard(pdeathsig=False)``;
- leaving the guard (normally or by an exception) stops any child still running, the same way.

Signal handlers can only be installed from the main thread; elsewhere the guard still starts,
tracks and stops its children, without catching signals.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

FORWARDED = (signal.SIGTERM, signal.SIGINT)
"""The signals a guard catches and forwards: what a supervisor, ``kill`` and Ctrl-C send."""
DEFAULT_GRACE_S = 10.0
"""How long a child may take to stop after a forwarded signal before it is SIGKILLed."""
_POLL_S = 0.5  # how often a waiting guard wakes to check its grace deadline
_POLL_STOPPING_S = 0.05
_PR_SET_PDEATHSIG = 1
_active: list[ChildGuard] = []
_libc: list[Any] = []  # loaded once in the parent: nothing is loaded between fork and exec


class Terminated(SystemExit):
    """The command was told to stop by ``signum``; its exit code is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _load_libc() -> Any:
    """The C library (for ``prctl``) on Linux, loaded once; None elsewhere or if it fails."""
    if not _libc:
        lib = None
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError):
                lib = ctypes.CDLL(None, use_errno=True)
        _libc.append(lib)
    return _libc[0]


def _child_setup(libc: Any, unblock: Sequence[int]) -> None:
    """Runs in the child between fork and exec: unblock the signals the parent held while
    forking (the mask is inherited), and ask for SIGTERM when the parent dies (``libc`` given:
    Linux ``PR_SET_PDEATHSIG``).
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, unblock)
    if libc is not None:
        with contextlib.suppress(Exception):
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the child's process group (its session), or to the child alone."""
    if proc.poll() is not None:
        return
    try:
        if os.getpgid(proc.pid) == proc.pid:  # it leads its own group: reach its children too
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


class ChildGuard(contextlib.ContextDecorator):
    """Start children that are stopped with the command; see the module docstring.

    Use as a context manager (``with ChildGuard() as g: g.wait(g.popen(cmd))``) or as a
    decorator on a function whose subprocesses go through :func:`run` or :func:`popen`.
    Guards nest: module-level :func:`run` and :func:`popen` register with the innermost one.
    """

    def __init__(self, grace_s: float = DEFAULT_GRACE_S, pdeathsig: bool = True,
                 signals: Sequence[int] = FORWARDED) -> None:
        self.grace_s = grace_s
        self.pdeathsig = pdeathsig
        self.signals = tuple(signals)
        self.signalled: int | None = None
        self._signal_at = 0.0
        self._children: list[subprocess.Popen] = []
        self._previous: dict[int, Any] = {}
        self._raised = False

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> ChildGuard:
        self.signalled, self._raised = None, False
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        _active.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            self.stop_all()
        finally:
            with contextlib.suppress(ValueError):
                _active.remove(self)
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()
        if exc_type is None and self.signalled is not None and not self._raised:
            self._raised = True
            raise Terminated(self.signalled)
        return False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        live = [p for p in self._children if p.poll() is None]
        if self.signalled is not None:  # a second signal: stop now, or let cleanup finish
            for p in live:
                _signal_group(p, signal.SIGKILL)
            return
        self.signalled, self._signal_at = signum, time.monotonic()
        for p in live:
            _signal_group(p, signum)
        if not live:
            self._raised = True
            raise Terminated(signum)

    # -- children ---------------------------------------------------------------------------
    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(cmd, **kwargs)`` in a new session, tracked by this guard.

        The forwarded signals are blocked around the fork so one arriving then is handled
        only once the child is tracked (and the child starts with them unblocked).
        Raises :class:`Terminated` instead of starting when a signal already came.
        """
        if self.signalled is not None:
            self._raised = True
            raise Terminated(self.signalled)
        kwargs.setdefault("start_new_session", True)
        setup = kwargs.pop("preexec_fn", None)
        libc = _load_libc() if self.pdeathsig else None

        def child() -> None:
            _child_setup(libc, self.signals)
            if setup is not None:
                setup()

        old = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        try:
            proc = subprocess.Popen(list(cmd), preexec_fn=child, **kwargs)
            self._children.append(proc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return proc

    def _reap(self, proc: subprocess.Popen, step: Any) -> Any:
        """Call ``step(timeout)`` until it returns (the child ended), enforcing the grace
        period after a forwarded signal; then raise Terminated if a signal came.
        """
        try:
            while True:
                try:
                    out = step(_POLL_S if self.signalled is None else _POLL_STOPPING_S)
                    break
                except subprocess.TimeoutExpired:
                    if (self.signalled is not None
                            and time.monotonic() - self._signal_at > self.grace_s):
                        _signal_group(proc, signal.SIGKILL)
        finally:
            if proc.poll() is not None and proc in self._children:
                self._children.remove(proc)
        if self.signalled is not None and not self._raised:
            self._raised = True
            raise Terminated(self.signalled)
        return out

    def wait(self, proc: subprocess.Popen) -> int:
        """Wait for a child this guard started; its return code, or Terminated on a signal."""
        return self._reap(proc, lambda t: proc.wait(timeout=t))

    def communicate(self, proc: subprocess.Popen, input: Any = None) -> tuple[Any, Any]:
        """``proc.communicate(input)`` with the same signal handling as :meth:`wait`."""
        sent = [input]

        def step(t: float) -> tuple[Any, Any]:
            data, sent[0] = sent[0], None  # input goes once; later calls resume the transfer
            return proc.communicate(data, timeout=t)

        return self._reap(proc, step)

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` to the child's group, wait ``grace_s``, then SIGKILL it; its code."""
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        if proc in self._children:
            self._children.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every child still running (SIGTERM, grace period, SIGKILL); reap the others."""
        for proc in list(self._children):
            if proc.poll() is None:
                self.stop(proc)
            elif proc in self._children:
                self._children.remove(proc)


def _guard() -> tuple[ChildGuard, bool]:
    """The innermost active guard, or a fresh one to enter (and whether it is fresh)."""
    return (_active[-1], False) if _active else (ChildGuard(), True)


def run(cmd: Sequence[str], *, capture_output: bool = False, text: bool = False,
        input: Any = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` (``check=False``) for a guarded child: under the innermost active
    guard, or a guard of its own for the call. A forwarded SIGTERM/SIGINT stops the child and
    raises :class:`Terminated` once it is gone; any other exception stops it too.
    """
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    guard, fresh = _guard()
    with guard if fresh else contextlib.nullcontext():
        proc = guard.popen(cmd, text=text, **kwargs)
        try:
            out, err = guard.communicate(proc, input)
        except BaseException:
            if proc.poll() is None:
                guard.stop(proc)
            raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Start a child under the innermost active guard (there must be one)."""
    if not _active:
        raise RuntimeError("subprocs.popen needs an active ChildGuard (use it as `with`)")
    return _active[-1].popen(cmd, **kwargs)
