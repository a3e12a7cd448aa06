"""KIVI: asymmetric 2/4-bit KV-cache quantization, keys per channel and values per token."""

from effbench.kernels_ref.kvcache.kivi import KEY_MODES, KIVI_BITS, KIVICacheFactory
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="kivi",
    family="kvcache",
    summary="Keys quantized per channel, values per token, bit-packed; a recent window of "
    "`residual` tokens stays in full precision.",
    paper=Paper(
        "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", "2402.02750"
    ),
    params=from_kernel(
        KIVICacheFactory,
        Param("bits", "int", help="bits per quantized value", choices=KIVI_BITS, sweep=(2, 4)),
        Param("group_size", "int", help="tokens (keys) / channels (values) per group", min=1),
        Param("residual", "int", help="recent tokens kept in full precision", min=0,
              sweep=(16, 32)),
        Param("materialize", "bool", help="keep a dequantized copy of old tokens: reads "
              "get cheap, but that copy (not counted in bytes_per_token) undoes the saving"),
        Param("key_mode", "str", help="keys quantized per channel (KIVI) or per token (the "
              "paper's ablation)", choices=KEY_MODES),
    ),
)
def kivi(bits: int, group_size: int, residual: int, materialize: bool,
         key_mode: str) -> KIVICacheFactory:
    return KIVICacheFactory(bits=bits, group_size=group_size, residual=residual,
                            materialize=materialize, key_mode=key_mode)
