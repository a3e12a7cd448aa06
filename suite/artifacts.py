"""Where a level writes files of its own for the case it is running (its artifacts folder).

A level that keeps more than records (the serving level's per-request timelines) writes them
under ``<run>/artifacts/<case index>/``, the folder the profilers of a profiled case also use,
and names the file in its records by its path relative to the run folder, so a results root
can be moved or copied as a whole.

The runner puts a :class:`CaseArtifacts` in ``ctx.memo[KEY]`` for the timed pass of each case
(and removes it for a profiled case's second pass, whose files would not match the records it
keeps). A level called without a runner (a test, a notebook) finds none: ``for_case`` returns
None and the level writes nothing, so nothing breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "case_artifacts"
"""The ``RunContext.memo`` key holding the current case's :class:`CaseArtifacts`."""


@dataclass(frozen=True)
class CaseArtifacts:
    """The artifacts folder of one case: ``<run_dir>/artifacts/<index:04d>/``."""

    run_dir: Path
    index: int

    @property
    def rel_dir(self) -> str:
        """The folder relative to the run folder (POSIX separators, as stored in records)."""
        return f"artifacts/{self.index:04d}"

    @property
    def dir(self) -> Path:
        return Path(self.run_dir) / self.rel_dir

    def path(self, name: str, fresh: bool = True) -> tuple[Path, str]:
        """``(absolute path, path relative to the run folder)`` for a file ``name`` in the
        folder, which is created if needed.

        With ``fresh`` an existing file is never reused: ``<stem>-2<suffix>``, ``-3``, ... is
        given instead. A case can run its timed pass more than once (re-measured when noisy,
        the cleanest attempt kept; or re-run on resume after a crash), so each attempt keeps
        its own file and the kept records name theirs, never a later attempt's.
        """
        folder = self.dir
        folder.mkdir(parents=True, exist_ok=True)
        stem, dot, suffix = name.partition(".")
        chosen, k = name, 1
        while fresh and (folder / chosen).exists():
            k += 1
            chosen = f"{stem}-{k}{dot}{suffix}"
        return folder / chosen, f"{self.rel_dir}/{chosen}"


def for_case(ctx: Any) -> CaseArtifacts | None:
    """The running case's artifacts folder, or None when no runner set one."""
    memo = getattr(ctx, "memo", None)
    return memo.get(KEY) if isinstance(memo, dict) else None
