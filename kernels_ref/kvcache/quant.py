"""Bit packing and asymmetric uniform quantization: the pieces quantized KV caches share
(KIVI today; GEAR, MiKV and CacheGen-style codecs build on the same helpers).
"""

from __future__ import annotations

import torch


def _check_pack_bits(bits: int) -> int:
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8 to pack into bytes, got {bits}")
    return 8 // bits


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` along the last dim into ``uint8`` bytes.

    ``8 // bits`` codes share a byte, the first in the lowest bits; the last dim is zero-padded
    to a multiple of that. ``(..., n)`` becomes ``(..., ceil(n * bits / 8))``.
    """
    per_byte = _check_pack_bits(bits)
    codes = codes.to(torch.uint8)
    n = codes.shape[-1]
    pad = -n % per_byte
    if pad:
        codes = torch.nn.functional.pad(codes, (0, pad))
    codes = codes.reshape(*codes.shape[:-1], (n + pad) // per_byte, per_byte)
    packed = codes[..., 0].clone()
    for i in range(1, per_byte):
        packed |= codes[..., i] << (i * bits)
    return packed


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``n`` codes of each row, as ``uint8`` ``(..., n)``."""
    per_byte = _check_pack_bits(bits)
    if n > packed.shape[-1] * per_byte:
        raise ValueError(f"cannot unpack {n} codes from {packed.shape[-1]} bytes at {bits} bits")
    shifts = torch.arange(per_byte, device=packed.device, dtype=torch.uint8) * bits
    codes = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)[..., :n]


def quantize_asym(
    x: torch.Tensor, bits: int, dim: int, param_dtype: torch.dtype = torch.float16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric uniform quantization of ``x`` with one (scale, zero) per slice along ``dim``.

    ``zero = min``, ``scale = (max - min) / (2**bits - 1)``, ``code = round((x - zero) / scale)``
    clamped to ``[0, 2**bits - 1]``; min/max reduce over ``dim``. Scale and zero are rounded to
    ``param_dtype`` first and the codes computed against the rounded values, so dequantizing the
    stored parameters is consistent. A constant slice (scale 0) gets code 0 and dequantizes to
    its value. Returns ``(codes uint8 like x, scale, zero)`` with ``dim`` kept as size 1.
    With float16 parameters, ranges beyond float16's +-65504 would overflow (not met by K/V).
    """
    levels = (1 << bits) - 1
    xf = x.float()
    lo = xf.amin(dim=dim, keepdim=True)
    hi = xf.amax(dim=dim, keepdim=True)
    zero = lo.to(param_dtype)
    scale = ((hi - lo) / levels).to(param_dtype)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    codes = torch.round((xf - zero.float()) / safe).clamp_(0, levels).to(torch.uint8)
    return codes, scale, zero


def dequantize(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``codes * scale + zero`` computed in float32 and cast to ``dtype`` (params broadcast)."""
    return (codes.float() * scale.float() + zero.float()).to(dtype)


