"""The run manifest: everything needed to know where, when and from what code a run came.

A result without its context cannot be compared or reproduced, so every run directory holds a
``manifest.json`` built here once at the start of the run. Every probe tolerates absence (no git,
no CUDA, a package not installed, no ``/proc``) so that building a manifest never fails a run.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 1
PACKAGES = ("effbench", "torch", "numpy", "pandas", "transformers")
_REPO_DIR = Path(__file__).resolve().parent.parent
_GIT_TIMEOUT_S = 5.0


def build_manifest(config: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Return the JSON-ready manifest of a run that starts now with ``config``.

    ``config`` is stored as given (the store serialises unknown types with ``str``); the
    ``device`` key is a short label for run listings, e.g. ``"cpu"`` or ``"cuda (NVIDIA H100)"``.
    """
    cuda = cuda_info()
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run_id,
        "started": utc_now(),
        "finished": None,
        "command": shlex.join(sys.argv),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "git": git_info(_REPO_DIR),
        "host": host_info(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": package_versions(PACKAGES),
        "cuda": cuda,
        "device": device_label(config, cuda),
        # the run's torch thread count and how it was chosen (effbench.suite.threads)
        "threads": config.get("threads"),
        "config": config,
    }


def utc_now() -> str:
    """Return the current time as ISO 8601 UTC text with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat()


def git_info(repo_dir: Path) -> dict[str, Any]:
    """Commit sha and dirty flag of the git checkout at ``repo_dir``; ``sha`` is None without git.

    ``dirty`` only looks at tracked files, so scratch files and results do not mark a run dirty.
    """
    sha = _git(repo_dir, "rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "dirty": None, "branch": None}
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no")
    branch = _git(repo_dir, "rev-parse", "--abbrev-ref", "HEAD")
    return {"sha": sha, "dirty": None if status is None else bool(status), "branch": branch}


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def host_info() -> dict[str, Any]:
    """Hostname, OS, CPU model, core counts and total memory of this machine."""
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": usable,
        "memory_bytes": total_memory_bytes(),
    }


def cpu_model() -> str:
    """Return the CPU's name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def total_memory_bytes() -> int | None:
    """Physical memory in bytes, or None where ``sysconf`` cannot tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution in ``names``; None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cuda_info() -> dict[str, Any]:
    """Whether torch sees CUDA, and the name of each visible device."""
    try:
        import torch
    except ImportError:
        return {"available": False, "torch_cuda": None, "devices": []}
    try:
        available = bool(torch.cuda.is_available())
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not fail the run's bookkeeping
        available, devices = False, []
    return {"available": available, "torch_cuda": torch.version.cuda, "devices": devices}


def device_label(config: dict[str, Any], cuda: dict[str, Any]) -> str:
    """Short device label for listings: the configured device, with the GPU name for CUDA."""
    requested = str(config.get("device") or "auto")
    if requested == "auto":
        requested = "cuda" if cuda.get("available") else "cpu"
    if requested.startswith("cuda") and cuda.get("devices"):
        return f"{requested} ({cuda['devices'][0]})"
    return requested
