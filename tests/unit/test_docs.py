"""The docs are a contract, checked against the source.

- Every metric declared by the code that produces it (effbench.suite.metrics: the level runners,
  the family modules, the runner's failure record) has an entry in docs/METRICS.md, and the
  summary table there states the declared unit and direction and lists nothing undeclared; every
  profiler metric declared in profilers/metrics.py is named in its "Profiler metrics" section. The
  level runners cannot emit an undeclared metric (``from_samples``/``scalar`` refuse it), so the
  declarations are what the code emits.
- docs/ADDING_A_TECHNIQUE.md: every repository path it names exists; its Python snippets parse,
  import names that exist (modules of the ``effbench`` namespace, resolved to the repository's
  folders; a bare ``suite.``/``kernels_ref.`` import is an error), copy real signatures, and call
  ``register``/``Param`` with real keywords; its preset snippet is a valid preset.
- docs/ARCHITECTURE.md: every repository path it names exists; in both docs every backticked
  ``effbench.<package>...`` name is a module or a top-level name of one.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from functools import cache
from pathlib import Path

import pytest

from effbench.suite import levels, metrics
from effbench.suite.metrics import MetricSpec
from effbench.suite.serving_metrics import LATENCY_METRICS
from effbench.suite.serving_metrics import METRICS as SERVING_METRICS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = ROOT / "docs" / "METRICS.md"
ADDING_MD = ROOT / "docs" / "ADDING_A_TECHNIQUE.md"
LEVEL_SOURCES = ("kernel", "engine", "serving")
TABLE_SOURCES = (*LEVEL_SOURCES, "runner")  # the summary table: level metrics, failure record
HELPERS = ("from_samples", "scalar")
# Both helpers are ``(metric, <samples|value>, unit, direction)``, as METRICS.md describes them.
ARG_POSITIONS = {"metric": 0, "unit": 2, "direction": 3}
PROJECT_PACKAGES = ("suite", "kernels_ref", "adapters")
NAMESPACE = "effbench"  # every project module imports as effbench.<folder>... (setup.py)
PATH_RE = re.compile(
    r"(?<![\w/.-])((?:adapters|kernels_ref|suite|tests|docs)/[\w./-]*?\.(?:py|toml|md))\b"
)


# --------------------------------------------------------------------------------------------
# Source side


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _declared(*sources: str) -> dict[str, MetricSpec]:
    """Declared metrics of the given sources (level names, ``runner``, ``profiler``) by name."""
    return {s.name: s for s in metrics.declared() if s.source in sources}


# --------------------------------------------------------------------------------------------
# Markdown side


def _strip_fences(text: str) -> list[str]:
    """Lines of ``text`` outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _documented(text: str) -> set[str]:
    """Backticked names in headings and in the first cell of table rows."""
    names: set[str] = set()
    for line in _strip_fences(text):
        s = line.strip()
        if s.startswith("#"):
            names.update(re.findall(r"`([^`]+)`", s))
        elif s.startswith("|"):
            names.update(re.findall(r"`([^`]+)`", _cells(s)[0]))
    return names


def _summary_table(text: str) -> dict[str, dict[str, str]]:
    """Rows of the METRICS.md table whose header has metric, unit, direction and kind columns."""
    lines = _strip_fences(text)
    for i, line in enumerate(lines):
        header = [c.lower() for c in _cells(line)] if line.strip().startswith("|") else []
        if not {"metric", "unit", "direction", "kind"} <= set(header):
            continue
        rows: dict[str, dict[str, str]] = {}
        for row_line in lines[i + 2 :]:
            if not row_line.strip().startswith("|"):
                break
            row = dict(zip(header, _cells(row_line)))
            rows[row["metric"].strip("`")] = {k: v.strip("`") for k, v in row.items()}
        return rows
    raise AssertionError(
        "docs/METRICS.md has no table with metric | unit | direction | kind columns"
    )


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


# --------------------------------------------------------------------------------------------
# METRICS.md


def test_metric_helpers_take_metric_unit_direction_at_known_positions():
    for helper in HELPERS:
        params = list(inspect.signature(getattr(levels, helper)).parameters)
        for key, pos in ARG_POSITIONS.items():
            assert params[pos] == key, f"{helper}{tuple(params)}: expected {key} at {pos}"


def test_every_level_declares_metrics_and_serving_declares_its_metric_table():
    for source in LEVEL_SOURCES:
        assert _declared(source), f"no metric declared by the {source} level"
    serving = _declared("serving")
    assert set(serving) == set(SERVING_METRICS), "the serving level declares another table"
    assert set(LATENCY_METRICS) <= set(serving)
    for name, info in SERVING_METRICS.items():
        assert (serving[name].unit, serving[name].direction) == (info.unit, info.direction)


def test_every_declared_metric_has_an_entry_in_metrics_md():
    documented = _documented(METRICS_MD.read_text(encoding="utf-8"))
    missing = {m: s.source for m, s in _declared(*TABLE_SOURCES).items() if m not in documented}
    assert not missing, (
        f"metrics declared by the code but without a heading or table row in docs/METRICS.md: "
        f"{missing}"
    )


def test_metrics_table_matches_declared_unit_direction_and_kind():
    table = _summary_table(METRICS_MD.read_text(encoding="utf-8"))
    declared = _declared(*TABLE_SOURCES)
    wrong = []
    for metric, spec in declared.items():
        row = table.get(metric)
        if row is None:
            wrong.append(f"{metric} ({spec.source}): no row in the summary table")
            continue
        unit = "" if row["unit"] == "(empty)" else row["unit"]  # how the table shows no unit
        docs = (unit, row["direction"], row.get("kind"))
        if docs != (spec.unit, spec.direction, spec.kind):
            wrong.append(
                f"{metric} ({spec.source}): declared unit={spec.unit!r} "
                f"direction={spec.direction!r} kind={spec.kind!r}, docs say unit={docs[0]!r} "
                f"direction={docs[1]!r} kind={docs[2]!r}"
            )
    stale = set(table) - set(declared)
    wrong += [f"{m}: in the summary table but declared by no level or the runner" for m in stale]
    assert not wrong, "docs/METRICS.md summary table is out of date:\n" + "\n".join(wrong)


def test_every_declared_profiler_metric_is_named_in_metrics_md():
    text = METRICS_MD.read_text(encoding="utf-8")
    section = text[text.index("## Profiler metrics"):]
    declared = _declared("profiler")
    assert declared, "no profiler metric declared: profilers/metrics.py not read?"
    missing = []
    for name in declared:
        local = name.split(".", 1)[1]  # docs name them without the <profiler>. prefix
        if f"`{name}`" not in section and f"`{local}`" not in section:
            missing.append(name)
    assert not missing, (
        f"profiler metrics declared in profilers/metrics.py but not named (as `name` or "
        f"`<profiler>.name`) in docs/METRICS.md, Profiler metrics: {missing}"
    )


# --------------------------------------------------------------------------------------------
# ADDING_A_TECHNIQUE.md


def test_adding_a_technique_paths_exist():
    text = ADDING_MD.read_text(encoding="utf-8")
    paths = sorted(set(PATH_RE.findall(text)))
    assert "adapters/attention/streaming_llm.py" in paths and len(paths) >= 5, paths
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing, f"docs/ADDING_A_TECHNIQUE.md names files that do not exist: {missing}"


def _project_module(module: str) -> str | None:
    """``suite.x`` for ``effbench.suite.x``: the repository-relative dotted name of a module of
    the ``effbench`` namespace (setup.py maps ``effbench.<folder>`` to ``<folder>/``); None for
    a module outside it (torch, the standard library, a plugin's own package).
    """
    head, _, rest = module.partition(".")
    return rest if head == NAMESPACE and rest else None


def _module_file(module: str) -> Path | None:
    """The file of an ``effbench.`` module (package ``__init__.py`` or module), else None."""
    rel = _project_module(module)
    if rel is None or rel.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*rel.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@cache
def _definitions() -> dict[str, list[ast.AST]]:
    """Top-level functions and classes of the project and its unit tests, by name."""
    index: dict[str, list[ast.AST]] = {}
    for folder in (*PROJECT_PACKAGES, "tests/unit"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in _parse(path).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    index.setdefault(node.name, []).append(node)
    return index


def _signature(fn: ast.FunctionDef) -> str:
    return ast.dump(fn.args) + " -> " + (ast.dump(fn.returns) if fn.returns else "None")


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _python_snippets() -> list[ast.Module]:
    blocks = _blocks(ADDING_MD.read_text(encoding="utf-8"), "python")
    assert len(blocks) >= 4, "expected the walkthrough's python snippets"
    trees = []
    for i, block in enumerate(blocks):
        try:
            trees.append(ast.parse(block))
        except SyntaxError as e:
            pytest.fail(f"python snippet #{i + 1} does not parse: {e}")
    return trees


def test_adding_a_technique_snippet_imports_exist():
    """Every ``effbench.`` import of the snippets names a real module and real names in it;
    a bare ``suite.``/``kernels_ref.``/``adapters.`` import (the pre-namespace spelling, which
    no longer imports) is an error too.
    """
    bad, checked = [], 0
    for tree in _python_snippets():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PROJECT_PACKAGES:
                        bad.append(f"import {a.name} (no effbench. prefix)")
                    elif _project_module(a.name) is not None:
                        checked += 1
                        if _module_file(a.name) is None:
                            bad.append(f"module {a.name}")
                continue
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.split(".")[0] in PROJECT_PACKAGES:
                bad.append(f"from {node.module} (no effbench. prefix)")
                continue
            if _project_module(node.module) is None:
                continue  # torch, the standard library, a plugin's own package
            checked += 1
            path = _module_file(node.module)
            if path is None:
                bad.append(f"module {node.module}")
                continue
            defined = _top_level_names(_parse(path))
            bad += [f"{node.module}.{a.name}" for a in node.names if a.name not in defined]
    assert checked >= 5, f"only {checked} effbench imports in the snippets: parser out of date?"
    assert not bad, f"docs/ADDING_A_TECHNIQUE.md imports names that do not exist: {bad}"


def test_adding_a_technique_snippets_copy_real_signatures():
    index = _definitions()
    bad, checked = [], 0
    for tree in _python_snippets():
        for node in tree.body:
            real = [d for d in index.get(getattr(node, "name", ""), []) if type(d) is type(node)]
            if not real:
                continue  # a new example (e.g. the plugin's scheduler), not a copy
            if isinstance(node, ast.FunctionDef):
                checked += 1
                if _signature(node) not in {_signature(r) for r in real}:
                    bad.append(f"def {node.name}")
            elif isinstance(node, ast.ClassDef):
                for name, method in _methods(node).items():
                    checked += 1
                    sigs = {_signature(m) for r in real if (m := _methods(r).get(name))}
                    if _signature(method) not in sigs:
                        bad.append(f"{node.name}.{name}")
    # The walkthrough copies about 50 (protocols, base classes, kernels, register, from_kernel);
    # far fewer means snippets stopped matching by name and are no longer checked.
    assert checked >= 30, f"only {checked} snippet signatures matched repository definitions"
    assert not bad, f"snippets whose signature differs from the code: {bad}"


def _keyword_params(fn: ast.FunctionDef) -> set[str]:
    a = fn.args
    return {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)}


def test_adding_a_technique_register_and_param_calls_use_real_keywords():
    register = next(
        n for n in _parse(ROOT / "suite" / "registry.py").body
        if isinstance(n, ast.FunctionDef) and n.name == "register"
    )
    param_cls = next(
        n for n in _parse(ROOT / "suite" / "technique.py").body
        if isinstance(n, ast.ClassDef) and n.name == "Param"
    )
    valid = {
        "register": _keyword_params(register),
        "Param": {s.target.id for s in param_cls.body if isinstance(s, ast.AnnAssign)},
    }
    bad, calls = [], 0
    for tree in _python_snippets():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) in valid:
                calls += 1
                name = _call_name(node)
                bad += [f"{name}({k.arg}=...)" for k in node.keywords
                        if k.arg not in valid[name]]
    assert calls >= 3, "expected register(...) and Param(...) calls in the snippets"
    assert not bad, f"snippets call with keywords the code does not accept: {bad}"


def test_adding_a_technique_toml_snippets_are_valid():
    from effbench.suite.presets import parse

    blocks = _blocks(ADDING_MD.read_text(encoding="utf-8"), "toml")
    presets = [b for b in blocks if "[[bench]]" in b]
    assert presets, "expected a preset snippet in docs/ADDING_A_TECHNIQUE.md"
    for block in blocks:
        tomllib.loads(block)
    for block in presets:
        preset = parse(block, "docs/ADDING_A_TECHNIQUE.md")
        assert any(b.technique == "streaming-llm" for b in preset.benches)


# --------------------------------------------------------------------------------------------
# ARCHITECTURE.md (and the dotted names of both architecture docs)

ARCHITECTURE_MD = ROOT / "docs" / "ARCHITECTURE.md"
ARCH_PATH_RE = re.compile(
    r"(?<![\w/.-])((?:adapters|kernels_ref|suite|profilers|dashboards|tests|docs)/[\w./-]*?"
    r"\.(?:py|toml|md))\b"
)
# A backticked ``effbench.<folder>.<module>[.<name>]`` (entry-point groups such as
# ``effbench.techniques`` have no folder as second component and are not module names).
DOTTED_RE = re.compile(r"`(effbench(?:\.\w+)+)`")
ALL_PACKAGES = (*PROJECT_PACKAGES, "profilers", "dashboards")


def test_architecture_paths_exist():
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    paths = sorted(set(ARCH_PATH_RE.findall(text)))
    assert len(paths) >= 20, f"expected the module map's paths, found {paths}"
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def _resolve_dotted(name: str) -> str | None:
    """None if ``effbench.a.b[.c]`` is a module, or a top-level name of the longest module
    prefix; else what is missing.
    """
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        rel = ROOT.joinpath(*parts[1:cut])
        path = next((p for p in (rel.with_suffix(".py"), rel / "__init__.py") if p.is_file()),
                    None)
        if path is None and rel.is_dir() and cut == len(parts):
            return None  # a folder without __init__.py imports as a namespace package
        if path is None:
            continue
        rest = parts[cut:]
        if not rest or rest[0] in _top_level_names(_parse(path)):
            return None
        return f"{name}: {'.'.join(parts[:cut])} has no top-level {rest[0]}"
    return f"{name}: no such module"


@pytest.mark.parametrize("doc", [ARCHITECTURE_MD, ADDING_MD, ROOT / "docs" / "ENGINE.md"],
                         ids=lambda p: p.name)
def test_architecture_docs_effbench_names_resolve(doc):
    names = {n for n in DOTTED_RE.findall(doc.read_text(encoding="utf-8"))
             if len(n.split(".")) > 1 and n.split(".")[1] in ALL_PACKAGES}
    assert names, f"no effbench.<package> name in {doc.name}: pattern out of date?"
    bad = sorted(filter(None, map(_resolve_dotted, names)))
    assert not bad, f"docs/{doc.name} names modules or objects that do not exist: {bad}"
