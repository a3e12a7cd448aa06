"""TTFT and ITL medians of one server and workload, measured by effbench and by GuideLLM.

Starts ``effbench serve`` (the tiny model, continuous batching unless ``--technique`` says
otherwise) on 127.0.0.1, then for each concurrency measures the same workload twice, one
client after the other: effbench's serving level with ``[serving] endpoint`` (``rate = inf``,
``max_concurrency = N``, fixed prompt and output lengths) and GuideLLM (``--profile
kind=concurrent,streams=N``, synthetic prompts of the same token count, the same output
length with ``ignore_eos``, the same number of requests). Prints one table: each client's TTFT
and ITL medians by its own definition, and, from effbench's timelines of its run, the ITL
median under each client's definition (docs/SERVING.md, "ITL across clients"):

* effbench ``itl``: each chunk gap spread over the tokens it carried, pooled over tokens;
* vLLM (``vllm bench serve``): gaps between chunks, pooled (effbench's ``icl``);
* GuideLLM: per request ``(last token - first token) / (output tokens - 1)``, weighted by
  ``output tokens - 1`` (effbench's ``tpot``, weighted).

GuideLLM is not a dependency of effbench: install it where you like (``pip install
guidellm``; 0.8.1 was used, about 94 MB on top of effbench's environment) and pass its
executable with ``--guidellm`` (default: ``guidellm`` on PATH).

Each concurrency runs ``--rounds`` rounds (default 2) with the clients alternating who goes
first (A B, B A), so drift of a shared machine hits both; each figure is the median over the
rounds, with their range.

Run: ``python tests/benchmarks/bench_endpoint_vs_guidellm.py [--guidellm PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import EffbenchServer  # noqa: E402

from effbench.suite import presets, runner  # noqa: E402
from effbench.suite.store import load_records  # noqa: E402

TINY = ROOT / "kernels_ref" / "checkpoints" / "tiny-target"


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rusage_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def effbench_side(
    url: str, pid: int, streams: int, requests: int, prompt: int, output: int, tmp: Path
) -> dict[str, float]:
    """effbench's serving level against ``url``: medians in ms, its own and per client, and
    the CPU seconds the server (``pid``) and this process used meanwhile.
    """
    text = f"""
[run]
name = "endpoint-vs-guidellm"
case_budget_s = 0.05  # keeps the runner's canary (CPU work of its own) short
[serving]
endpoint = "{url}"
endpoint_name = "effbench-serve"
requests = {requests}
rate = inf
max_concurrency = {streams}
prompt_len = {{ kind = "fixed", value = {prompt} }}
output_len = {{ kind = "fixed", value = {output} }}
"""
    path = tmp / f"effbench-c{streams}.toml"
    path.write_text(text)
    server0, client0 = _cpu_s(pid), _rusage_s(resource.RUSAGE_SELF)
    out = runner.run(
        presets.load(str(path)),
        results=str(tmp / "results"),
        levels=["serving"],
        progress=False,
        log=lambda _: None,
    )
    server_cpu = _cpu_s(pid) - server0
    client_cpu = _rusage_s(resource.RUSAGE_SELF) - client0
    df = load_records(out.store.run_dir)
    value = {
        m: float(df.loc[df["metric"] == m, "value"].iloc[0]) * 1e3
        for m in ("ttft", "itl", "icl", "tpot")
    }
    stats = json.loads(df.loc[df["metric"] == "itl", "stats"].iloc[0])
    return {
        "ttft": value["ttft"],
        "itl": value["itl"],
        "icl": value["icl"],
        "tpot": value["tpot"],
        "itl_vllm": stats["itl_vllm_median"] * 1e3,
        "itl_guidellm": stats["itl_guidellm_median"] * 1e3,
        "failed": float(stats["failed_requests"]),
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
    }


def guidellm_side(
    exe: str,
    url: str,
    pid: int,
    streams: int,
    requests: int,
    prompt: int,
    output: int,
    tmp: Path,
) -> dict[str, float]:
    """GuideLLM's run against ``url``: its TTFT and ITL medians in ms, and the CPU seconds the
    server (``pid``) and GuideLLM's processes used meanwhile.
    """
    report = tmp / f"guidellm-c{streams}.json"
    base = url.removesuffix("/v1")
    cmd = [
        exe,
        "run",
        "--backend",
        f"kind=openai_http,target={base},request_format=/v1/completions",
        "--profile",
        f"kind=concurrent,streams={streams}",
        "--constraint",
        f"kind=max_requests,count={requests}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={prompt},output_tokens={output}",
        "--tokenizer",
        f"kind=huggingface_auto,model={TINY}",
        "--output",
        f"kind=json,path={report}",
        "--disable-console-interactive",
    ]
    server0, client0 = _cpu_s(pid), _rusage_s(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    server_cpu = _cpu_s(pid) - server0
    client_cpu = _rusage_s(resource.RUSAGE_CHILDREN) - client0
    if r.returncode != 0 or not report.is_file():
        raise RuntimeError(f"guidellm failed ({r.returncode}): {r.stderr[-2000:]}")
    (bench,) = json.loads(report.read_text())["benchmarks"]
    metrics = bench["metrics"]

    def median(name: str) -> float:
        return float(metrics[name]["successful"]["median"])

    return {
        "ttft": median("time_to_first_token_ms"),
        "itl": median("inter_token_latency_ms"),
        "tpot": median("time_per_output_token_ms"),
        "failed": float(metrics["request_totals"]["errored"]),
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
    }


Side = dict[str, float]


def combine(rounds: list[Side]) -> dict[str, tuple[float, float, float]]:
    """Per figure: (median, min, max) over the rounds."""
    return {
        k: (
            statistics.median(r[k] for r in rounds),
            min(r[k] for r in rounds),
            max(r[k] for r in rounds),
        )
        for k in rounds[0]
    }


def _cell(fig: tuple[float, float, float]) -> str:
    mid, lo, hi = fig
    return f"{mid:.2f} ms ({lo:.2f}-{hi:.2f})"


def _cpu(side: dict) -> str:
    return f"{side['server_cpu_s'][0]:.1f} / {side['client_cpu_s'][0]:.1f}"


def table(rows: list[tuple[int, dict, dict]]) -> str:
    """Markdown: each cell is the median over rounds, with the rounds' range."""
    head = (
        "| streams | client | TTFT median | ITL median, client's own definition | "
        "from effbench's timelines: ITL as vLLM / as GuideLLM | CPU s: server / client |"
    )
    out = [head, "|---|---|---|---|---|---|"]
    for streams, ours, theirs in rows:
        out.append(
            f"| {streams} | effbench | {_cell(ours['ttft'])} | {_cell(ours['itl'])} per token | "
            f"{_cell(ours['itl_vllm'])} / {_cell(ours['itl_guidellm'])} | {_cpu(ours)} |"
        )
        out.append(
            f"| {streams} | GuideLLM | {_cell(theirs['ttft'])} | {_cell(theirs['itl'])} "
            f"(last - first) / (n - 1) | | {_cpu(theirs)} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--guidellm",
        default=shutil.which("guidellm"),
        help="the guidellm executable (default: on PATH)",
    )
    ap.add_argument("--streams", default="1,4", help="concurrencies, comma-separated")
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds per concurrency, clients alternating first (A B, B A, ...)",
    )
    ap.add_argument(
        "--technique", action="append", default=[], help="effbench serve --technique (repeatable)"
    )
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if not args.guidellm:
        print(
            "guidellm is not installed: pip install guidellm (anywhere) and pass --guidellm",
            file=sys.stderr,
        )
        return 2
    serve_args = [a for t in args.technique for a in ("--technique", t)]
    shape = (args.requests, args.prompt_tokens, args.output_tokens)
    rows, raw = [], []
    with (
        tempfile.TemporaryDirectory() as tmp,
        EffbenchServer(*serve_args, "--max-queue", "256") as server,
    ):
        pid = server.proc.pid
        for streams in (int(s) for s in args.streams.split(",")):
            ours: list[Side] = []
            theirs: list[Side] = []
            for r in range(args.rounds):
                work = Path(tmp) / f"c{streams}-r{r}"
                work.mkdir()
                order = ("effbench", "guidellm") if r % 2 == 0 else ("guidellm", "effbench")
                for who in order:
                    if who == "effbench":
                        ours.append(effbench_side(server.url, pid, streams, *shape, work))
                    else:
                        theirs.append(
                            guidellm_side(args.guidellm, server.url, pid, streams, *shape, work)
                        )
                print(
                    f"streams {streams} round {r}: effbench {ours[-1]}, guidellm "
                    f"{theirs[-1]}; load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            rows.append((streams, combine(ours), combine(theirs)))
            raw.append({"streams": streams, "effbench": ours, "guidellm": theirs})
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
