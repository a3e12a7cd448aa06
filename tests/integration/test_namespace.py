"""One namespace: effbench installs everything under ``effbench.*`` and no generic top-level
name, so it coexists with a distribution that owns the top-level module ``adapters``.

In a fresh virtual environment (no system site packages) we install, with ``--no-deps
--no-build-isolation``, a generated stub distribution owning ``adapters`` and then effbench
itself (a regular, non-editable install), and check from that environment's interpreter that
both import side by side. Importing ``effbench.adapters`` for real needs torch, which the
fresh environment lacks, so ``importlib.util.find_spec`` and the installed file lists stand in.

effbench is installed from a copy of the repository's source (tests, docs, results and git
data left out): building in place would write ``build/`` and ``*.egg-info`` into the working
tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GENERIC = ("suite", "kernels_ref", "profilers", "dashboards", "adapters")
COPY_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "results", "tests", "docs", "*.egg-info", "__pycache__", ".venv",
    ".ruff_cache", ".pytest_cache", ".benchmarks", "node_modules",
)

PROBE = textwrap.dedent("""
    import importlib.metadata as md
    import importlib.util
    import json
    import sysconfig

    import adapters

    site = sysconfig.get_paths()["purelib"]
    specs = {}
    for name in ("effbench.adapters", "effbench.suite", "effbench.kernels_ref",
                 "effbench.profilers", "effbench.dashboards"):
        spec = importlib.util.find_spec(name)
        specs[name] = None if spec is None else spec.origin
    print(json.dumps({
        "stub": getattr(adapters, "STUB", False),
        "adapters_file": adapters.__file__,
        "site": site,
        "specs": specs,
        "effbench_files": [str(f) for f in md.files("effbench")],
        "stub_files": [str(f) for f in md.files("adapters-stub")],
    }))
""")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _write_stub(where: Path) -> Path:
    stub = where / "adapters-stub"
    (stub / "adapters").mkdir(parents=True)
    (stub / "adapters" / "__init__.py").write_text('"""Not effbench."""\nSTUB = True\n')
    (stub / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "adapters-stub"
        version = "1.0"

        [tool.setuptools]
        packages = ["adapters"]
    """))
    return stub


@pytest.fixture(scope="module")
def venv_probe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("namespace")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if made.returncode != 0 or not py.exists():
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-300:]}")
    if _run([str(py), "-m", "pip", "--version"], tmp).returncode != 0:
        pytest.skip("the new virtual environment has no pip (ensurepip unavailable)")
    # --no-build-isolation builds with the environment's own setuptools; it must build wheels
    # by itself (bdist_wheel moved into setuptools in 70.1; Python 3.11's venv ships 65.5).
    has_bdist = _run([str(py), "-c", "import setuptools.command.bdist_wheel"], tmp)
    if has_bdist.returncode != 0:
        up = _run([str(py), "-m", "pip", "install", "-q", "setuptools>=70.1"], tmp)
        if up.returncode != 0:
            pytest.skip(f"cannot install setuptools>=70.1 into the venv: {up.stderr[-300:]}")
    src = tmp / "src" / "effbench"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    stub = _write_stub(tmp)
    flags = ["--no-deps", "--no-build-isolation", "--no-index", "-q"]
    _check(_run([str(py), "-m", "pip", "install", *flags, str(stub)], tmp), "installing the stub")
    _check(_run([str(py), "-m", "pip", "install", *flags, str(src)], tmp), "installing effbench")
    probe = _run([str(py), "-I", "-c", PROBE], tmp)
    _check(probe, "the import probe")
    return json.loads(probe.stdout.strip().splitlines()[-1])


def test_stub_adapters_and_effbench_adapters_coexist(venv_probe):
    site = Path(venv_probe["site"])
    assert venv_probe["stub"] is True, "top-level `adapters` is not the stub's"
    assert Path(venv_probe["adapters_file"]) == site / "adapters" / "__init__.py"
    for name, origin in venv_probe["specs"].items():
        want = site.joinpath(*name.split(".")) / "__init__.py"
        assert origin is not None, f"{name} is not importable"
        assert Path(origin) == want, f"{name} resolves to {origin}, not {want}"


def test_effbench_installs_no_generic_top_level_name(venv_probe):
    site = Path(venv_probe["site"])
    top = sorted(p.name for p in site.iterdir())
    for name in GENERIC:
        if name == "adapters":  # present: the stub's, holding only the stub's files
            stub_files = sorted(p.name for p in (site / "adapters").iterdir())
            assert set(stub_files) <= {"__init__.py", "__pycache__"}, stub_files
            assert "STUB = True" in (site / "adapters" / "__init__.py").read_text()
        else:
            assert name not in top and f"{name}.py" not in top, f"{name} in {top}"
    outside = [f for f in venv_probe["effbench_files"]
               if f.split("/")[0] not in {"effbench", "effbench-0.1.0.dist-info", ".."}]
    assert not outside, f"effbench installed files outside its namespace: {outside[:5]}"
    assert any(f.startswith("effbench/adapters/") for f in venv_probe["effbench_files"])
    assert not [f for f in venv_probe["stub_files"] if f.startswith("effbench")]


def test_wheel_ships_only_the_project_packages(venv_probe):
    stray = [f for f in venv_probe["effbench_files"]
             if f.startswith("effbench/") and f.count("/") == 1 and f.endswith(".py")]
    assert not stray, f"root-level modules installed into effbench/: {stray}"
