"""One module per technique, grouped by family; each registers itself with effbench.suite.registry.

Adapters import only the spec layer of suite (effbench.suite.registry, effbench.suite.technique,
effbench.suite.errors)
and the reference kernels; the runner finds them through ``effbench.suite.registry.load_all``.
"""
