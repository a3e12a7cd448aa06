"""Reaching a Ray cluster for the Ray executor: import, connect or start, describe.

One job: everything about the cluster itself, nothing about cases. Ray is an optional extra
(``pip install 'effbench[ray]'``), so this module imports it only inside functions and turns
its absence into one line naming the extra (``require_ray``). An address that does not answer
is found with a plain TCP connect of a few seconds before ``ray.init`` is called (which would
otherwise retry for a long time), and reported with the address.

Without an address (and no ``RAY_ADDRESS``) a local cluster is started in this process, made
safe for a shared machine: bound to loopback (Ray otherwise binds the first non-loopback
interface), no dashboard, usage stats off, an object store of ``OBJECT_STORE_BYTES`` instead of
Ray's default (30 % of memory), and the CPU count this process may use. It is stopped with
``ray.shutdown()`` by whoever started it; nothing here ever runs ``ray stop``, which would kill
every Ray process on the machine, other users' included.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from effbench.suite.errors import ConfigError

EXTRA = "effbench[ray]"
MISSING = f"the Ray executor needs Ray, which is not installed: pip install '{EXTRA}'"
OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""The object store of a local cluster: results and shipped artifacts only, so 200 MB."""
ANSWER_TIMEOUT_S = 3.0
"""How long a cluster address may take to accept a TCP connection before it is refused."""
LOOPBACK = "127.0.0.1"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for its single-machine mode (every process on loopback); see _single_machine."""
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
"""Set (unless already set) before Ray starts: no usage statistics leave the machine."""


def require_ray() -> Any:
    """Import and return the ``ray`` module; ConfigError (one line naming the extra) if absent."""
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING, "--executor ray") from None
    return ray


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; None for ``auto``/``local``.

    Raises ConfigError for text that is neither.
    """
    text = address.strip()
    if text in ("auto", "local"):
        return None
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379, "
            "ray://head:10001 or auto)",
            "--address",
        )
    return host, int(port)


def check_answers(address: str, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    """ConfigError, one line with the address, when nothing accepts a connection there."""
    where = split_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout_s):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(
            f"the Ray cluster at {address} does not answer ({why} after at most "
            f"{timeout_s:g} s); check the head node's address and port, or drop "
            "--address to start a local cluster",
            "--address",
        ) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (``127.0.0.0/8``, ``::1``, localhost)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def quiet_environment() -> None:
    """Usage stats off for every Ray process started from here (set only if not set)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode while a local cluster starts: every process on loopback.

    ``_node_ip_address="127.0.0.1"`` alone is not enough: Ray replaces a loopback address by
    the machine's first routable one (``resolve_ip_for_localhost``) unless its cluster mode is
    off, which is what ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` says (Ray's default on macOS and
    Windows). The variable is read when ray is imported, so this process's copy of the flag is
    set too; both are restored afterwards, so a later ``ray.init(address=...)`` from this
    process announces a routable address to a remote cluster again.
    """
    try:  # private to Ray: when it moves, the environment variable alone is set
        from ray._private import ray_constants
    except ImportError:
        ray_constants = None
    saved_env = os.environ.get(SINGLE_MACHINE_ENV)
    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[SINGLE_MACHINE_ENV] = "0"  # inherited by the processes Ray starts now
    if saved_flag is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


def start_local(num_cpus: int, object_store_bytes: int = OBJECT_STORE_BYTES) -> str:
    """Start a one-node Ray cluster in this process, on loopback, for ``num_cpus`` CPUs.

    Returns the address the cluster's processes listen on (``127.0.0.1`` unless Ray did not
    honour the request, which the caller reports).
    """
    ray = require_ray()
    quiet_environment()
    with _single_machine():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            _node_ip_address=LOOPBACK,
            include_dashboard=False,
            object_store_memory=object_store_bytes,
            log_to_driver=False,
            logging_level=logging.WARNING,
            namespace="effbench",
        )
    return str(ray.util.get_node_ip_address())


def connect(address: str) -> None:
    """Join the running cluster at ``address``; ConfigError naming it when that fails."""
    ray = require_ray()
    check_answers(address)
    quiet_environment()
    # a cluster on this machine's loopback (one started by start_local) is joined in the same
    # single-machine mode, or Ray would rewrite 127.0.0.1 to a routable address and not find it
    where = split_address(address)
    local = _single_machine() if where and is_loopback(where[0]) else contextlib.nullcontext()
    try:
        with local:
            ray.init(
                address=address,
                log_to_driver=False,
                logging_level=logging.WARNING,
                namespace="effbench",
            )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"could not join the Ray cluster at {address}: {first}", "--address"
        ) from None


@dataclass(frozen=True)
class Node:
    """One alive node of the cluster, as the manifest records it."""

    node_id: str
    host: str
    ip: str
    cpus: float
    gpus: float
    resources: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "host": self.host,
            "ip": self.ip,
            "cpus": self.cpus,
            "gpus": self.gpus,
        }


def alive_nodes() -> list[Node]:
    """The cluster's alive nodes (``ray.nodes()``), with their CPU and GPU counts."""
    ray = require_ray()
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = {k: float(v) for k, v in (n.get("Resources") or {}).items()}
        out.append(
            Node(
                str(n.get("NodeID", "")),
                str(n.get("NodeManagerHostname", "")),
                str(n.get("NodeManagerAddress", "")),
                res.get("CPU", 0.0),
                res.get("GPU", 0.0),
                res,
            )
        )
    return out
