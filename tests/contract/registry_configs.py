"""The parametrisation every family contract shares: each registered technique of a family
with its defaults, then once per other value of each parameter's sweep."""

from __future__ import annotations

import pytest

from effbench.suite import registry


def technique_configs(family: str) -> list:
    """``pytest.param(technique, params)`` for every registered ``family`` technique: its
    defaults (``{}``), then each non-default sweep value of each parameter alone."""
    out = []
    for t in registry.techniques(family):
        out.append(pytest.param(t, {}, id=t.name))
        for p in t.params:
            for value in p.sweep:
                if value != p.default:
                    out.append(pytest.param(t, {p.name: value}, id=f"{t.name}-{p.name}={value}"))
    return out
