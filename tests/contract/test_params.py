"""Parameters are declared once: every registered technique's ``Param`` defaults are the
defaults of the class its factory builds, and the factory passes each parameter through.

This catches an adapter drifting from its kernel: a default restated by hand that no longer
matches, a parameter the kernel does not take, or a factory that drops or swaps arguments.
"""

from __future__ import annotations

import inspect

import pytest

from effbench.suite import registry
from effbench.suite.family import implementation_of

TECHNIQUES = [pytest.param(t, id=t.name) for t in registry.techniques()]
WITH_PARAMS = [pytest.param(t, id=t.name) for t in registry.techniques() if t.params]


def test_registry_is_not_empty():
    assert TECHNIQUES and WITH_PARAMS


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_param_defaults_are_the_implementations(tech):
    impl = implementation_of(tech.factory)
    assert impl is not None, f"{tech.name}: the factory declares no class"
    sig = inspect.signature(impl)
    for p in tech.params:
        arg = sig.parameters.get(p.name)
        assert arg is not None, f"{tech.name}: {impl.__qualname__} takes no {p.name!r}"
        assert arg.default is not inspect.Parameter.empty, (
            f"{tech.name}: {impl.__qualname__}.{p.name} has no default to declare"
        )
        assert p.default == arg.default and type(p.default) is type(arg.default), (
            f"{tech.name}: Param {p.name} default {p.default!r} != "
            f"{impl.__qualname__} default {arg.default!r}"
        )
        p.check(p.default)  # the kernel's default is inside the declared range


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_factory_function_defaults_agree(tech):
    """A factory function that is not the class itself takes every declared param, and a
    default it restates (a second place for the same value) must agree.
    """
    if inspect.isclass(tech.factory):
        return
    sig = inspect.signature(tech.factory)
    for p in tech.params:
        arg = sig.parameters.get(p.name)
        assert arg is not None, f"{tech.name}: the factory takes no {p.name!r}"
        if arg.default is not inspect.Parameter.empty:
            assert arg.default == p.default, (
                f"{tech.name}: factory default {p.name}={arg.default!r} != Param {p.default!r}"
            )


@pytest.mark.parametrize("tech", TECHNIQUES)
def test_built_with_defaults_has_the_defaults(tech):
    obj = tech.build()
    impl = implementation_of(tech.factory)
    assert isinstance(obj, impl)
    for p in tech.params:
        if hasattr(obj, p.name):
            assert getattr(obj, p.name) == p.default, (
                f"{tech.name}: built {p.name}={getattr(obj, p.name)!r}, default {p.default!r}"
            )


def _non_default_values(p) -> list:
    values = list(p.sweep) + list(p.choices)
    if p.type == "bool":
        values.append(not p.default)
    return [v for v in dict.fromkeys(values) if v != p.default]


@pytest.mark.parametrize("tech", WITH_PARAMS)
def test_factory_passes_every_param_through(tech):
    """Built with another value of one parameter, the object carries that value and the
    defaults of the rest (a dropped or swapped argument shows here).
    """
    checked = 0
    for p in tech.params:
        for value in _non_default_values(p):
            obj = tech.build({p.name: value})
            for q in tech.params:
                if hasattr(obj, q.name):
                    want = value if q.name == p.name else q.default
                    assert getattr(obj, q.name) == want, (
                        f"{tech.name} built with {p.name}={value!r}: "
                        f"{q.name}={getattr(obj, q.name)!r}, expected {want!r}"
                    )
                    checked += q.name == p.name
    swept = [p for p in tech.params if _non_default_values(p)]
    if swept:
        assert checked, f"{tech.name}: no swept parameter is visible on the built object"
