"""Package list for the ``effbench`` namespace (everything else is in pyproject.toml).

The project's folders stay at the top of the repository (suite/, adapters/, kernels_ref/,
profilers/, dashboards/) but install as ``effbench.suite``, ``effbench.adapters``, ... so that
no generic top-level name (``adapters`` is also a PyPI package) lands in site-packages. The
package list is computed here because pyproject's ``packages.find`` cannot add a prefix; a new
family folder is picked up without editing anything.
"""

from setuptools import find_namespace_packages, setup

TOP = ("suite", "adapters", "kernels_ref", "profilers", "dashboards")
found = find_namespace_packages(include=[f"{t}" for t in TOP] + [f"{t}.*" for t in TOP])
packages = [p for p in found if all(part.isidentifier() for part in p.split("."))]

# ``effbench`` itself is a namespace package (not listed), so nothing at the repository root
# (setup.py) is installed with it.
setup(packages=[f"effbench.{p}" for p in packages], package_dir={"effbench": "."})
