"""``effbench serve``: load the model, build the engine from ``--technique``s, run uvicorn.

Bad input fails before the model loads, with one line: an unknown technique or parameter
(with the valid choices), a model path that is not a checkpoint, a missing GPU, a port that
is taken. The server listens on 127.0.0.1 unless ``--host`` says otherwise; uvicorn stops it
on SIGTERM or Ctrl-C, and the engine thread stops with it.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass
from typing import Any

from effbench.suite.errors import ConfigError, EffbenchError

DEFAULT_MAX_REQUEST_BYTES = 1 << 20
EXTRA_HINT = 'pip install "effbench[serve]"'


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``effbench serve`` takes, as parsed from its flags."""

    model: str = "tiny"
    draft: str = "tiny-draft"
    techniques: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    max_batch: int = 8
    max_step_tokens: int = 512
    kv_memory_cap: int | None = None
    max_queue: int = 64
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    threads: int | str | None = None
    seed: int = 0


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise EffbenchError(
            f"effbench serve needs the 'serve' extra ({e.name} is missing): {EXTRA_HINT}"
        ) from None


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket (port 0: any free one); ConfigError when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}", "--host/--port"
        ) from None
    sock.listen(2048)
    return sock


def build_state(opts: ServeOptions) -> Any:
    """Validate the techniques, load the model, start the engine loop: the server's state."""
    from effbench.kernels_ref.checkpoint import load_checkpoint, resolve_model
    from effbench.kernels_ref.engine import Engine, EngineConfig
    from effbench.suite.context import check_model, load_model
    from effbench.suite.devices import resolve_device, resolve_dtype
    from effbench.suite.serve import techniques
    from effbench.suite.serve.app import ServerState
    from effbench.suite.serve.engine_loop import EngineLoop

    chosen = techniques.choose(opts.techniques)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    draft_needed = techniques.needs_draft(chosen)
    for name, flag in ((opts.model, "--model"), (opts.draft, "--draft")):
        if flag == "--draft" and not draft_needed:
            continue
        try:
            check_model(name)
        except ValueError as e:
            raise ConfigError(str(e), flag) from None
    model, tok = load_model(opts.model, device, dtype, opts.seed)
    if tok is None:  # random weights of a known shape borrow the tiny tokenizer
        tok = load_checkpoint(resolve_model("tiny-target"), "cpu")[1]
    draft = load_model(opts.draft, device, dtype, opts.seed)[0] if draft_needed else None
    config = EngineConfig(opts.max_batch, opts.max_step_tokens, opts.kv_memory_cap)

    def make_engine() -> Engine:
        return Engine(
            model,
            attention=chosen["attention"].build(),
            cache_factory=chosen["cache"].build(),
            scheduler=chosen["scheduler"].build(),
            decoder=chosen["decoder"].build(),
            config=config,
            draft=draft,
            seed=opts.seed,
        )

    loop = EngineLoop(make_engine, opts.max_queue, opts.seed)
    return ServerState(
        loop,
        tok,
        opts.served_model_name or opts.model,
        model.config.max_position_embeddings,
        techniques.describe(chosen),
    )


def serve(opts: ServeOptions, announce: Any = print) -> int:
    """Run the server until it is told to stop; 0 on a clean stop."""
    _require_extra()
    import uvicorn

    from effbench.suite.serve.app import create_app
    from effbench.suite.serve.limits import BodyLimit
    from effbench.suite.threads import apply_threads, choose_threads

    if opts.max_queue < 1 or opts.max_request_bytes < 1 or opts.max_batch < 1:
        raise ConfigError("--max-queue, --max-request-bytes and --max-batch must be >= 1")
    choice = choose_threads(opts.threads, "auto")
    sock = _listen(opts.host, opts.port)
    try:
        state = build_state(opts)
        apply_threads(choice.threads)
        app = BodyLimit(create_app(state), opts.max_request_bytes)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
        server = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        state.loop.start()
        announce(
            f"effbench serve: http://{host}:{port}/v1 model '{state.model_id}' "
            f"({state.techniques}); {choice.describe()}",
            flush=True,
        )
        try:
            server.run(sockets=[sock])
        finally:
            state.loop.stop()
    finally:
        sock.close()
    return 0


def add_parser(sub: Any, threads_arg: Any) -> argparse.ArgumentParser:
    """The ``serve`` subcommand's flags (effbench.suite.cli registers it)."""
    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server over the reference engine (127.0.0.1 by default)",
    )
    p.add_argument("--model", default="tiny", help="checkpoint dir, tiny, or llama-3.2-1b")
    p.add_argument("--draft", default="tiny-draft", help="draft model of a speculative decoder")
    p.add_argument(
        "--technique",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="a registered attention, kvcache, decoding or scheduling technique "
        "(repeatable; default: continuous batching and the family baselines)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    p.add_argument("--served-model-name", help="the model id clients send (default: --model)")
    p.add_argument("--max-batch", type=int, default=8, help="requests per engine iteration")
    p.add_argument(
        "--max-step-tokens", type=int, default=512, help="tokens fed per engine iteration"
    )
    p.add_argument("--kv-memory-cap", type=int, help="KV cache bytes in all (default: no cap)")
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests admitted and unfinished before 503 (default 64)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body before 413 (default 1 MiB)",
    )
    p.add_argument(
        "--threads",
        type=threads_arg,
        metavar="N|auto",
        help="torch intra-op threads (default auto)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    return p


def options_from(args: argparse.Namespace) -> ServeOptions:
    return ServeOptions(
        model=args.model,
        draft=args.draft,
        techniques=tuple(args.technique),
        device=args.device,
        dtype=args.dtype,
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        max_batch=args.max_batch,
        max_step_tokens=args.max_step_tokens,
        kv_memory_cap=args.kv_memory_cap,
        max_queue=args.max_queue,
        max_request_bytes=args.max_request_bytes,
        threads=args.threads,
        seed=args.seed,
    )


def main(args: argparse.Namespace) -> int:
    """The ``serve`` handler: one line on stderr and exit 2 for bad input (via the CLI)."""
    try:
        return serve(options_from(args))
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        print("effbench serve: stopped", file=sys.stderr)
        return 0
