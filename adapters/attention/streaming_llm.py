"""StreamingLLM: a sliding window of recent tokens plus a few initial 'attention sink' tokens."""

from effbench.kernels_ref.attention import SlidingWindowAttention
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param


@register(
    name="streaming-llm",
    family="attention",
    summary="Sliding-window attention that always keeps the first `sinks` tokens (attention "
    "sinks); decode cost O(window + sinks) instead of O(context).",
    paper=Paper("Efficient Streaming Language Models with Attention Sinks", "2309.17453"),
    params=(
        Param("window", "int", 64, "recent tokens each query sees", min=1, sweep=(32, 64, 128)),
        Param("sinks", "int", 4, "initial tokens always kept", min=0, sweep=(0, 4)),
    ),
)
def streaming_llm(window: int, sinks: int) -> SlidingWindowAttention:
    return SlidingWindowAttention(window=window, sinks=sinks)
