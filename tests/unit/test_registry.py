"""The registry, technique specs and the one-way dependency rule."""

import ast
from pathlib import Path

import pytest

from effbench.suite import registry
from effbench.suite.errors import ConfigError
from effbench.suite.protocols import AttentionBackend, Decoder, KVCacheFactory, Scheduler
from effbench.suite.technique import Param, Technique

ROOT = Path(__file__).parents[2]
PROTOCOL = {"attention": AttentionBackend, "kvcache": KVCacheFactory, "scheduling": Scheduler,
            "decoding": Decoder}


def test_every_family_has_a_baseline_and_a_technique_from_the_seeds():
    for fam in PROTOCOL:
        techs = registry.techniques(fam)
        assert registry.baseline_of(fam).baseline
        assert any(t.paper and not t.baseline for t in techs), fam


@pytest.mark.parametrize("tech", registry.techniques(), ids=lambda t: t.name)
def test_factories_build_objects_satisfying_their_family_protocol(tech):
    obj = tech.build()
    assert isinstance(obj, PROTOCOL[tech.family])
    for p in tech.params:
        for v in p.sweep:
            assert isinstance(tech.build({p.name: v}), PROTOCOL[tech.family])


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ConfigError, match="did you mean streaming-llm"):
        registry.get("streaming-lm")
    with pytest.raises(ConfigError, match="valid families"):
        registry.techniques("memory")


def test_param_validation_names_the_range():
    kivi = registry.get("kivi")
    with pytest.raises(ConfigError, match=r"not one of \[2, 4\]"):
        kivi.resolve({"bits": 3})
    with pytest.raises(ConfigError, match="must be int"):
        kivi.resolve({"bits": 2.0})
    with pytest.raises(ConfigError, match="valid parameters"):
        kivi.resolve({"bitz": 2})
    assert kivi.resolve({"bits": 4})["bits"] == 4


def test_spec_rejects_bad_declarations():
    with pytest.raises(ValueError):
        Technique("x", "memory", "s", factory=lambda: None)
    with pytest.raises(ConfigError):
        Param("p", "int", 0, min=1)


PROJECT = ("suite", "adapters", "kernels_ref", "profilers", "dashboards")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] + "." + a.name.split(".")[1] if "." in a.name
                    else a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


SPEC_LAYER = {"suite.registry", "suite.technique", "suite.errors", "suite", "suite.protocols"}


@pytest.mark.parametrize(
    "package, forbidden",
    [("kernels_ref", ("suite", "adapters", "profilers", "dashboards")),
     ("profilers", ("suite", "adapters", "dashboards")),
     ("adapters", ("dashboards", "profilers")),
     ("suite", ("dashboards",))],
)
def test_dependencies_point_one_way(package, forbidden):
    for f in (ROOT / package).rglob("*.py"):
        for mod in _imports(f):
            assert mod.split(".")[0] not in PROJECT, f"{f} imports {mod}: use effbench.{mod}"
            mod = mod.removeprefix("effbench.")
            top = mod.split(".")[0]
            assert top not in forbidden, f"{f} imports {mod}"
            if package == "adapters" and top == "suite":
                assert mod in SPEC_LAYER, f"{f} imports {mod}: adapters use the spec layer only"
