"""The docs are a contract, checked against the source.

- Every metric the level runners emit has an entry in docs/METRICS.md, and the summary table there
  states the unit and direction the code uses. Metric names are read from the source with ``ast``
  (first argument of every ``from_samples(...)`` / ``scalar(...)`` call), resolving loop variables
  over literal tuples; a call whose metric cannot be resolved fails the test instead of being
  skipped.
- docs/ADDING_A_TECHNIQUE.md: every repository path it names exists; its Python snippets parse,
  import names that exist, copy real signatures, and call ``register``/``Param`` with real
  keywords; its preset snippet is a valid preset.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = ROOT / "docs" / "METRICS.md"
ADDING_MD = ROOT / "docs" / "ADDING_A_TECHNIQUE.md"
LEVELS_DIR = ROOT / "suite" / "levels"
LEVEL_FILES = ("kernel.py", "engine.py")  # serving.py emits exactly serving_metrics.METRICS
HELPERS = ("from_samples", "scalar")
# Both helpers are ``(metric, <samples|value>, unit, direction)``; checked below.
ARG_POSITIONS = {"metric": 0, "unit": 2, "direction": 3}
PROJECT_PACKAGES = ("suite", "kernels_ref", "adapters")
PATH_RE = re.compile(
    r"(?<![\w/.-])((?:adapters|kernels_ref|suite|tests|docs)/[\w./-]*?\.(?:py|toml|md))\b"
)


# --------------------------------------------------------------------------------------------
# Source side


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _literal_strings(node: ast.AST) -> list[str] | None:
    """``["x"]`` for a string constant, the items of a tuple/list of string constants, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts:
        items = [_literal_strings(e) for e in node.elts]
        if all(i is not None and len(i) == 1 for i in items):
            return [i[0] for i in items]
    return None


class _MetricCalls(ast.NodeVisitor):
    """Collects ``(metric, unit, direction, file:line)`` of every helper call in one module."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop_vars: dict[str, list[str]] = {}
        self.found: list[tuple[str, str, str, str]] = []
        self.unresolved: list[str] = []

    def _resolve(self, node: ast.AST | None) -> list[str] | None:
        if node is None:
            return None
        if isinstance(node, ast.Name) and node.id in self.loop_vars:
            return self.loop_vars[node.id]
        return _literal_strings(node) if isinstance(node, ast.Constant) else None

    def visit_For(self, node: ast.For) -> None:
        values = _literal_strings(node.iter)
        if not isinstance(node.target, ast.Name) or values is None:
            self.generic_visit(node)
            return
        name = node.target.id
        saved = self.loop_vars.get(name)
        self.loop_vars[name] = values
        for child in (*node.body, *node.orelse):
            self.visit(child)
        if saved is None:
            del self.loop_vars[name]
        else:
            self.loop_vars[name] = saved

    def visit_Call(self, node: ast.Call) -> None:
        if _call_name(node) in HELPERS:
            where = f"{_rel(self.path)}:{node.lineno}"
            kw = {k.arg: k.value for k in node.keywords}
            got = {}
            for key, pos in ARG_POSITIONS.items():
                arg = node.args[pos] if pos < len(node.args) else kw.get(key)
                got[key] = self._resolve(arg)
            ok = all(v is not None for v in got.values())
            if not ok or len(got["unit"]) != 1 or len(got["direction"]) != 1:
                self.unresolved.append(where)
            else:
                for metric in got["metric"]:
                    self.found.append((metric, got["unit"][0], got["direction"][0], where))
        self.generic_visit(node)


@cache
def emitted() -> dict[str, dict[str, tuple[str, str, str, str]]]:
    """Per level file: metric -> (metric, unit, direction, where)."""
    out: dict[str, dict[str, tuple[str, str, str, str]]] = {}
    unresolved: list[str] = []
    for name in LEVEL_FILES:
        visitor = _MetricCalls(LEVELS_DIR / name)
        visitor.visit(_parse(LEVELS_DIR / name))
        unresolved += visitor.unresolved
        out[name] = {m[0]: m for m in visitor.found}
    assert not unresolved, (
        "metric name, unit or direction not resolvable from the source (use string literals or "
        f"a loop over a literal tuple): {unresolved}"
    )
    return out


def _serving_emitted() -> dict[str, tuple[str, str, str, str]]:
    """serving.py takes every name, unit and direction from serving_metrics.METRICS."""
    from effbench.suite.serving_metrics import METRICS

    src = (LEVELS_DIR / "serving.py").read_text()
    assert "METRICS[name].unit" in src and "METRICS[k].unit" in src
    return {m: (m, i.unit, i.direction, "suite/serving_metrics.py") for m, i in METRICS.items()}


def _all_emitted() -> dict[str, tuple[str, str, str, str]]:
    out = {m: info for per_file in emitted().values() for m, info in per_file.items()}
    return {**out, **_serving_emitted()}


def _module_assignment(path: Path, name: str) -> ast.AST:
    for node in _parse(path).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.value
    raise AssertionError(f"{_rel(path)} has no top-level {name} =")


def _failure_metrics() -> set[str]:
    """Metric names the runner writes itself: the failure record.

    Read from ``_not_measured(case, device, run_id, "<metric>", ...)`` calls with a literal
    metric name (an f-string, like a profiler's ``<name>.unavailable``, is not a fixed name).
    """
    names = set()
    for node in ast.walk(_parse(ROOT / "suite" / "runner.py")):
        if isinstance(node, ast.Call) and _call_name(node) == "_not_measured":
            arg = node.args[3] if len(node.args) > 3 else None
            if isinstance(arg, ast.Constant):
                names.add(arg.value)
    assert names, "suite/runner.py writes no literal failure metric: parser out of date?"
    return names


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
    """Rows of the METRICS.md table whose header has metric, unit and direction columns."""
    lines = _strip_fences(text)
    for i, line in enumerate(lines):
        header = [c.lower() for c in _cells(line)] if line.strip().startswith("|") else []
        if not {"metric", "unit", "direction"} <= set(header):
            continue
        rows: dict[str, dict[str, str]] = {}
        for row_line in lines[i + 2 :]:
            if not row_line.strip().startswith("|"):
                break
            row = dict(zip(header, _cells(row_line)))
            rows[row["metric"].strip("`")] = {k: v.strip("`") for k, v in row.items()}
        return rows
    raise AssertionError("docs/METRICS.md has no table with metric | unit | direction columns")


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


# --------------------------------------------------------------------------------------------
# METRICS.md


def test_metric_helpers_take_metric_unit_direction_at_known_positions():
    tree = _parse(LEVELS_DIR / "__init__.py")
    functions = [f for f in tree.body if isinstance(f, ast.FunctionDef)]
    sigs = {f.name: [a.arg for a in f.args.args] for f in functions}
    for helper in HELPERS:
        params = sigs.get(helper)
        assert params is not None, f"suite/levels/__init__.py no longer defines {helper}"
        for key, pos in ARG_POSITIONS.items():
            assert params[pos] == key, f"{helper}{tuple(params)}: expected {key} at {pos}"


def test_every_level_emits_metrics_and_serving_uses_the_metric_table():
    per_file = emitted()
    for name in LEVEL_FILES:
        assert per_file[name], f"no metric found in suite/levels/{name}: parser out of date?"
    latency = _literal_strings(_module_assignment(ROOT / "suite" / "serving_metrics.py",
                                                  "LATENCY_METRICS"))
    assert latency, "suite/serving_metrics.py LATENCY_METRICS is not a literal tuple"
    assert set(latency) <= set(_serving_emitted())


def test_every_emitted_metric_has_an_entry_in_metrics_md():
    documented = _documented(METRICS_MD.read_text(encoding="utf-8"))
    missing = {m: info[3] for m, info in _all_emitted().items() if m not in documented}
    assert not missing, (
        f"metrics emitted by the code but without a heading or table row in docs/METRICS.md: "
        f"{missing}"
    )


def test_metrics_table_matches_code_unit_and_direction():
    table = _summary_table(METRICS_MD.read_text(encoding="utf-8"))
    wrong = []
    for metric, unit, direction, where in _all_emitted().values():
        row = table.get(metric)
        if row is None:
            wrong.append(f"{metric} ({where}): no row in the summary table")
        elif (row["unit"], row["direction"]) != (unit, direction):
            wrong.append(
                f"{metric} ({where}): code says unit={unit!r} direction={direction!r}, "
                f"docs say unit={row['unit']!r} direction={row['direction']!r}"
            )
    stale = set(table) - set(_all_emitted()) - _failure_metrics()
    wrong += [f"{m}: in the summary table but emitted by no level or the runner" for m in stale]
    assert not wrong, "docs/METRICS.md summary table is out of date:\n" + "\n".join(wrong)


def test_serving_metric_catalogue_is_mentioned_in_metrics_md():
    catalogue = _module_assignment(ROOT / "suite" / "serving_metrics.py", "METRICS")
    assert isinstance(catalogue, ast.Dict)
    names = [k.value for k in catalogue.keys if isinstance(k, ast.Constant)]
    assert names, "suite/serving_metrics.py METRICS has no literal keys"
    text = METRICS_MD.read_text(encoding="utf-8")
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"serving_metrics.METRICS keys not mentioned in docs/METRICS.md: {missing}"


# --------------------------------------------------------------------------------------------
# ADDING_A_TECHNIQUE.md


def test_adding_a_technique_paths_exist():
    text = ADDING_MD.read_text(encoding="utf-8")
    paths = sorted(set(PATH_RE.findall(text)))
    assert "adapters/attention/streaming_llm.py" in paths and len(paths) >= 5, paths
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert not missing, f"docs/ADDING_A_TECHNIQUE.md names files that do not exist: {missing}"


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
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
    bad = []
    for tree in _python_snippets():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.split(".")[0] not in PROJECT_PACKAGES:
                continue
            path = _module_file(node.module)
            if path is None:
                bad.append(f"module {node.module}")
                continue
            defined = _top_level_names(_parse(path))
            bad += [f"{node.module}.{a.name}" for a in node.names if a.name not in defined]
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
    assert checked >= 10, f"only {checked} snippet signatures matched repository definitions"
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
