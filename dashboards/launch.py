"""``effbench dash``: start the Streamlit dashboard on a results root (127.0.0.1 by default).

``python -m effbench.dashboards.launch --results DIR [--host H] [--port N]`` works on its own; the
CLI
calls ``main(argv)`` by file path so that ``suite`` never imports ``dashboards``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

APP = Path(__file__).with_name("app.py")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="effbench dash", description="Open the results dashboard.")
    ap.add_argument("--results", default="results", help="results root (default: results)")
    ap.add_argument("--host", default=DEFAULT_HOST,
                    help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8501)")
    return ap.parse_args(argv)


def streamlit_command(results: str, host: str, port: int) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the app headless."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--", "--results", str(Path(results).resolve()),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dashboard in the foreground until interrupted; returns Streamlit's exit code.

    The Streamlit server is a child under ``effbench.suite.subprocs.ChildGuard``: a SIGTERM or
    SIGINT sent to this process (a supervisor, a CI step, ``kill``, Ctrl-C) is forwarded to the
    server, which is waited for (SIGKILLed after the grace period), and this process then exits
    with ``128 + signum`` (``Terminated``); the server is never left running, re-parented to
    init and still holding the port.
    """
    from effbench.suite.subprocs import ChildGuard

    args = parse_args(argv)
    cmd = streamlit_command(args.results, args.host, args.port)
    print(f"effbench dashboard on http://{args.host}:{args.port} (results: {args.results})",
          flush=True)
    try:
        with ChildGuard() as guard:
            return guard.wait(guard.popen(cmd))
    except KeyboardInterrupt:  # a SIGINT before the guard was in place
        return 130


if __name__ == "__main__":
    sys.exit(main())
