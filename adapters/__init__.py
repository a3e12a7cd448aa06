"""One module per technique, grouped by family; each registers itself with suite.registry.

Adapters import only the spec layer of suite (suite.registry, suite.technique, suite.errors)
and the reference kernels; the runner finds them through ``suite.registry.load_all``.
"""
