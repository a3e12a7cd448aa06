"""Test-wide settings: one torch thread, so a busy neighbour cannot stall the suite.

With torch's default of one thread per core, any other process on a 2-core machine makes
torch's spinning worker threads contend and small ops slow down by orders of magnitude; the
tests time nothing, so a single thread costs little and keeps the suite's wall time stable.
Subprocesses (the CLI tests) inherit the same limit through OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
