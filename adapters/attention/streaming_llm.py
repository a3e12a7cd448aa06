"""StreamingLLM: a sliding window of recent tokens plus a few initial 'attention sink' tokens."""

from effbench.kernels_ref.attention.streaming_llm import SlidingWindowAttention
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="streaming-llm",
    family="attention",
    summary="Sliding-window attention that always keeps the first `sinks` tokens (attention "
    "sinks); decode cost O(window + sinks) instead of O(context).",
    paper=Paper("Efficient Streaming Language Models with Attention Sinks", "2309.17453"),
    params=from_kernel(
        SlidingWindowAttention,
        Param("window", "int", help="recent tokens each query sees", min=1, sweep=(32, 64, 128)),
        Param("sinks", "int", help="initial tokens always kept", min=0, sweep=(0, 4)),
    ),
)
def streaming_llm(window: int, sinks: int) -> SlidingWindowAttention:
    return SlidingWindowAttention(window=window, sinks=sinks)
