"""One module per technique, grouped by family, named for the registered technique; each
registers itself with effbench.suite.registry.

An adapter wraps either a reference kernel (effbench.kernels_ref.<family>.<technique>) or a real
library's implementation. Adapters import only the spec layer of suite (registry, technique,
family, errors, protocols); the runner finds them through ``effbench.suite.registry.load_all``.
"""
