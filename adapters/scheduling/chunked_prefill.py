"""Sarathi-Serve: chunked prefills piggybacked on decode-maximal batches under a token budget."""

from effbench.kernels_ref.scheduling.chunked_prefill import ChunkedPrefill
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="chunked-prefill",
    family="scheduling",
    summary="Every iteration runs all decodes and fills the rest of a token budget with "
    "prefill chunks (stall-free batching).",
    paper=Paper(
        "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve", "2403.02310"
    ),
    params=from_kernel(
        ChunkedPrefill,
        Param("token_budget", "int", help="tokens per iteration, decodes included", min=1,
              sweep=(32, 64, 128)),
    ),
    levels=("kernel", "serving"),
)
def chunked_prefill(token_budget: int) -> ChunkedPrefill:
    return ChunkedPrefill(token_budget=token_budget)
