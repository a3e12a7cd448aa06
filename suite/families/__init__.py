"""One module per family, each declaring its ``Family`` (see effbench.suite.family)."""
