"""A/B on this machine: the preset run with a base commit's code and the working tree's, in turns.

``gate --ab BASE_REF --run PRESET`` measures both sides now: ``ab_sides`` checks out BASE_REF in
a temporary git worktree and runs ``python -m effbench.suite.cli run`` for base and head
alternately (A B, B A, ...), each side importing its own code through a namespace shim on
``PYTHONPATH``, then pools each side's samples. Interleaving spreads slow machine drift
(thermals, neighbours) over both sides alike; a step in the machine's speed (a competing process
starting mid-way) is caught by the runs' canaries, and only rounds whose two runs saw the same
machine speed (as each other and as the fastest run) are pooled, or each run is normalised by its
canary (effbench.suite.gate_ab_canary).
The worktree is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from effbench.suite import gate_ab_canary, subprocs
from effbench.suite.canary import run_canary
from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.gate_sides import Side
from effbench.suite.store import load_records, read_manifest


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             check=False, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"git {args[0]} failed: {e}", "--ab") from e
    if out.returncode != 0:
        msg = (out.stderr.strip().splitlines() or ["failed"])[-1]
        raise ConfigError(f"git {' '.join(args[:2])}: {msg}", "--ab")
    return out.stdout.strip()


def side_command(preset: str, results: Path, levels: Sequence[str] | None,
                 techniques: Sequence[str] | None) -> list[str]:
    """The ``effbench run`` subprocess of one A/B round (the side is chosen by its cwd)."""
    cmd = [sys.executable, "-m", "effbench.suite.cli", "run", preset, "--results", str(results),
           "--no-progress"]
    for level in levels or ():
        cmd += ["--level", level]
    for tech in techniques or ():
        cmd += ["--technique", tech]
    return cmd


def namespace_shim(folder: Path, root: Path) -> Path:
    """A folder whose ``effbench`` entry is ``root``: put first on PYTHONPATH, it makes
    ``effbench.suite`` etc. import from ``root`` (a worktree) instead of the installed tree.

    ``effbench`` is a namespace package, so the path entry found first supplies its portion;
    ``root`` itself also goes on the path for bases older than the namespace (top-level
    ``suite``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "effbench"
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    return folder


def interleave(
    sides: dict[str, Path],
    rounds: int,
    run_side: Callable[[str, Path, int], None],
) -> list[tuple[str, int]]:
    """Call ``run_side(name, root, round)`` for every side each round, alternating who goes
    first (A B, B A, ...) so neither side always runs on a cooler or warmer machine.
    Returns the order the calls were made in.
    """
    names = list(sides)
    order = []
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run_side(name, sides[name], r)
            order.append((name, r))
    return order


@subprocs.ChildGuard()
def ab_sides(base_ref: str, preset: str, rounds: int, levels: Sequence[str] | None = None,
             techniques: Sequence[str] | None = None, canary: str = "drop",
             canary_shift: float = gate_ab_canary.gate_canary.DEFAULT_MIN_SHIFT,
             ) -> tuple[Side, Side]:
    """Run ``preset`` with BASE_REF's code and with the working tree's, interleaved.

    ``canary``: ``drop`` (pool only rounds whose two runs' canaries agree), ``normalize``
    (normalise each run by its canary) or ``ignore`` (pool every round, as without canaries);
    see effbench.suite.gate_ab_canary (``canary_shift``: its ``min_shift``). A canary is also
    timed here before each side run and after the last, standing in for runs whose code records
    none (an older base commit).

    Guarded (``effbench.suite.subprocs.ChildGuard``): a SIGTERM/SIGINT while it runs stops the
    side run it is waiting on (forwarded, then SIGKILL after the grace period), removes the
    worktree and the temporary folder, and exits with ``128 + signum``.
    """
    repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
    sha = _git(repo, "rev-parse", "--verify", f"{base_ref}^{{commit}}")
    preset_arg = str(Path(preset).resolve()) if Path(preset).exists() else preset
    tmp = Path(tempfile.mkdtemp(prefix="effbench-ab-"))
    worktree = tmp / "base"
    try:
        _git(repo, "worktree", "add", "--detach", str(worktree), sha)
        sides = {"base": worktree, "head": repo}
        gaps: list[dict] = []  # stand-in canaries: before each side run, after the last

        def run_side(name: str, root: Path, r: int) -> None:
            if canary != "ignore":
                gaps.append(run_canary(f"before {name} round {r + 1}"))
            results = tmp / f"results-{name}"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                (str(namespace_shim(tmp / f"shim-{name}", root)), str(root)))}
            print(f"ab round {r + 1}/{rounds}: {name}", file=sys.stderr)
            done = subprocs.run(side_command(preset_arg, results, levels, techniques),
                                cwd=root, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise StoreError(f"{name} side ({root}) run failed: {tail}")

        order = interleave(sides, rounds, run_side)
        if canary != "ignore":
            gaps.append(run_canary("after the last run"))
        harness = gate_ab_canary.attach_harness(order, gaps)
        runs = []
        for name in sides:
            dirs = sorted((tmp / f"results-{name}" / "runs").iterdir())
            runs += [gate_ab_canary.SideRun(name, r, load_records(d), read_manifest(d),
                                            harness.get((name, r), ()))
                     for r, d in enumerate(dirs)]

        def label(name: str, n: int) -> str:
            kept = f"{n} runs" if n == rounds else f"{n} of {rounds} runs"
            return f"{name} ({sha[:10] if name == 'base' else 'working tree'}, {kept})"

        return gate_ab_canary.pool(runs, rounds, canary, label, canary_shift)
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(worktree)],
                       capture_output=True, check=False)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True,
                       check=False)
        shutil.rmtree(tmp, ignore_errors=True)
