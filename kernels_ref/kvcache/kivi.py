"""KIVI (Liu et al. 2024, arXiv 2402.02750): asymmetric 2/4-bit KV-cache quantization, keys
per channel and values per token, bit-packed, with a full-precision window of recent tokens.
"""

from __future__ import annotations

import torch

from effbench.kernels_ref.kvcache._common import (
    CacheFactoryBase,
    GrowingBuffer,
    KVCacheBase,
    check_kv,
    check_layer,
    check_truncate,
)
from effbench.kernels_ref.kvcache.quant import dequantize, pack_bits, quantize_asym, unpack_bits
from effbench.kernels_ref.protocols import CacheLayout

KIVI_BITS = (2, 4)
KEY_MODES = ("channel", "token")

def validate_kivi(bits: int, group_size: int, residual: int, key_mode: str = "channel") -> None:
    """Raise ``ValueError`` unless ``bits`` is 2 or 4, ``group_size >= 1``, ``residual >= 0``
    and ``key_mode`` is ``channel`` or ``token``.
    """
    if key_mode not in KEY_MODES:
        raise ValueError(f"KIVI key_mode must be one of {KEY_MODES}, got {key_mode!r}")
    if bits not in KIVI_BITS:
        raise ValueError(f"KIVI bits must be one of {KIVI_BITS}, got {bits!r}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"KIVI group_size must be an integer >= 1, got {group_size!r}")
    if not isinstance(residual, int) or residual < 0:
        raise ValueError(f"KIVI residual must be an integer >= 0, got {residual!r}")


class _KiviLayer:
    """One layer's KIVI state.

    The packed store holds, per quantized key group, ``(kv_heads, group*head_dim)`` codes and
    per-channel scale/zero ``(kv_heads, head_dim)``; per quantized value token, ``(kv_heads,
    head_dim)`` codes and per-channel-group scale/zero ``(kv_heads, value_groups)``. Codes are
    bit-packed ``uint8``, scales and zeros float16.

    ``fp``/``fv`` hold tokens ``[base, length)`` at the model dtype. Materialising caches keep
    ``base = 0``: tokens ``[0, quantized)`` are the dequantized image of the store and the rest
    is the residual. Compact caches keep ``base = quantized``: only the residual.
    """

    def __init__(self, layout: CacheLayout, bits: int, group: int, value_groups: int,
                 key_mode: str = "channel") -> None:
        h, d, dev = layout.kv_heads, layout.head_dim, layout.device
        value_bytes = -(-d * bits // 8)
        self.fp = GrowingBuffer(h, (d,), layout.dtype, dev)
        self.fv = GrowingBuffer(h, (d,), layout.dtype, dev)
        if key_mode == "channel":  # one entry per group of tokens
            key_bytes = -(-group * d * bits // 8)
            self.k_codes = GrowingBuffer(h, (key_bytes,), torch.uint8, dev)
            self.k_scale = GrowingBuffer(h, (d,), torch.float16, dev)
            self.k_zero = GrowingBuffer(h, (d,), torch.float16, dev)
        else:  # per token, like the values
            self.k_codes = GrowingBuffer(h, (value_bytes,), torch.uint8, dev)
            self.k_scale = GrowingBuffer(h, (value_groups,), torch.float16, dev)
            self.k_zero = GrowingBuffer(h, (value_groups,), torch.float16, dev)
        self.v_codes = GrowingBuffer(h, (value_bytes,), torch.uint8, dev)
        self.v_scale = GrowingBuffer(h, (value_groups,), torch.float16, dev)
        self.v_zero = GrowingBuffer(h, (value_groups,), torch.float16, dev)
        self.base = 0
        self.quantized = 0

    @property
    def length(self) -> int:
        return self.base + self.fp.length

    def store(self) -> tuple[GrowingBuffer, ...]:
        return (self.k_codes, self.k_scale, self.k_zero, self.v_codes, self.v_scale, self.v_zero)

    def residual_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return views of the full-precision tail, tokens ``[quantized, length)``."""
        start = self.quantized - self.base
        return self.fp.view(start), self.fv.view(start)

    def replace_fp(self, base: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Make ``k``/``v`` the full-precision tokens, starting at absolute position ``base``."""
        self.fp.truncate(0)
        self.fv.truncate(0)
        self.fp.append(k)
        self.fv.append(v)
        self.base = base


class KIVICache(KVCacheBase):
    """KIVI (Liu et al. 2024, arXiv 2402.02750): tuning-free asymmetric 2/4-bit KV quantization.

    - Keys are quantized per channel: for each group of ``group_size`` consecutive tokens, every
      (kv_head, channel) gets its own min (zero point) and scale over those tokens.
      ``key_mode="token"`` quantizes keys per token instead, exactly like the values: the
      paper's ablation (its per-channel choice exists because key outliers sit in channels).
    - Values are quantized per token: each token's ``head_dim`` channels are split into
      ``head_dim // group_size`` groups of ``group_size`` channels when ``group_size`` divides
      ``head_dim``; otherwise (including ``head_dim < group_size``) the whole token is one group.
    - Quantization is asymmetric uniform: ``zero = min``, ``scale = (max - min) / (2**bits - 1)``,
      scales and zeros stored as float16 as in KIVI; codes bit-packed into ``uint8``
      (4 per byte at 2 bits, 2 per byte at 4 bits).
    - The most recent tokens stay in full precision (the residual). After every append, while
      the residual holds ``residual + group_size`` tokens or more, its oldest ``group_size``
      tokens are quantized and moved to the packed store, so it keeps between ``residual`` and
      ``residual + group_size - 1`` tokens (all of them while the sequence is shorter).
      Quantized groups are therefore aligned to absolute positions ``[g*G, (g+1)*G)``.

    ``read`` returns full-precision ``(k, v)`` of the whole sequence: the dequantized prefix
    followed by the residual. With ``materialize=True`` the dequantized prefix is
    cached per layer, extended only with newly quantized groups (decoded from the packed
    tensors, not copied from the inputs), so ``read`` returns views at no cost and the
    dequantization cost is paid once per group inside ``append``. With ``materialize=False``
    (the default)
    nothing but the compressed store and the residual is held, and every ``read`` dequantizes
    the whole prefix (the memory a fused KIVI kernel would need, the work of an unfused one).

    ``nbytes`` is what KIVI keeps: packed codes + float16 scales/zeros + the full-precision
    residual, measured from those tensors. The materialised prefix (``materialize=True``) is a
    working copy for the reference attention backends and is reported by ``scratch_nbytes``,
    not by ``nbytes``.

    ``truncate`` inside the residual is exact. A cut inside the quantized region drops the
    whole groups past the cut and returns the surviving tokens of the cut group to the residual
    in their dequantized form: rolling back is lossy once (those tokens keep their quantization
    error, and are quantized again, with a fresh min/scale, when their group fills up). Rolling
    back rejected speculative tokens rarely reaches that far when ``residual`` exceeds the
    draft length. After such a cut the residual can be shorter than ``residual`` until new
    tokens arrive.
    """

    def __init__(
        self,
        layout: CacheLayout,
        bits: int = 2,
        group_size: int = 32,
        residual: int = 32,
        materialize: bool = False,
        key_mode: str = "channel",
    ) -> None:
        validate_kivi(bits, group_size, residual, key_mode)
        self.layout = layout
        self.bits = bits
        self.group_size = group_size
        self.residual = residual
        self.materialize = materialize
        self.key_mode = key_mode
        d = layout.head_dim
        self.value_groups = d // group_size if d % group_size == 0 else 1
        self._layers = [
            _KiviLayer(layout, bits, group_size, self.value_groups, key_mode)
            for _ in range(layout.num_layers)
        ]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append ``(kv_heads, t, head_dim)`` tokens, then quantize residual groups that are due."""
        check_layer(self.layout, layer)
        check_kv(self.layout, k, v)
        st = self._layers[layer]
        st.fp.append(k)
        st.fv.append(v)
        due = (st.length - st.quantized - self.residual) // self.group_size
        if due > 0:
            self._quantize(st, due)

    def _quantize(self, st: _KiviLayer, n_groups: int) -> None:
        """Move the oldest ``n_groups`` groups of the residual into the packed store."""
        g, h, d, vg = self.group_size, self.layout.kv_heads, self.layout.head_dim, self.value_groups
        n = n_groups * g
        start = st.quantized - st.base
        if self.key_mode == "channel":
            keys = st.fp.view(start, start + n).reshape(h, n_groups, g, d)
            codes, scale, zero = quantize_asym(keys, self.bits, dim=2)
            st.k_codes.append(pack_bits(codes.reshape(h, n_groups, g * d), self.bits))
            st.k_scale.append(scale.squeeze(2))
            st.k_zero.append(zero.squeeze(2))
        else:
            keys = st.fp.view(start, start + n).reshape(h, n, vg, d // vg)
            codes, scale, zero = quantize_asym(keys, self.bits, dim=-1)
            st.k_codes.append(pack_bits(codes.reshape(h, n, d), self.bits))
            st.k_scale.append(scale.squeeze(-1))
            st.k_zero.append(zero.squeeze(-1))
        values = st.fv.view(start, start + n).reshape(h, n, vg, d // vg)
        codes, scale, zero = quantize_asym(values, self.bits, dim=-1)
        st.v_codes.append(pack_bits(codes.reshape(h, n, d), self.bits))
        st.v_scale.append(scale.squeeze(-1))
        st.v_zero.append(zero.squeeze(-1))
        if self.materialize:
            g0 = st.quantized // g
            k_hat, v_hat = self._decode_groups(st, g0, g0 + n_groups)
            st.fp.view(start, start + n).copy_(k_hat)
            st.fv.view(start, start + n).copy_(v_hat)
        else:
            st.replace_fp(st.base + n, st.fp.view(n).clone(), st.fv.view(n).clone())
        st.quantized += n

    def _decode_groups(self, st: _KiviLayer, g0: int, g1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantize stored groups ``[g0, g1)`` from the packed tensors at the model dtype."""
        g, h, d, vg = self.group_size, self.layout.kv_heads, self.layout.head_dim, self.value_groups
        dtype = self.layout.dtype
        n = g1 - g0
        t0, t1 = g0 * g, g1 * g
        if self.key_mode == "channel":
            codes = unpack_bits(st.k_codes.view(g0, g1), self.bits, g * d).reshape(h, n, g, d)
            scale = st.k_scale.view(g0, g1).unsqueeze(2)
            zero = st.k_zero.view(g0, g1).unsqueeze(2)
        else:
            codes = unpack_bits(st.k_codes.view(t0, t1), self.bits, d).reshape(
                h, n * g, vg, d // vg)
            scale = st.k_scale.view(t0, t1).unsqueeze(-1)
            zero = st.k_zero.view(t0, t1).unsqueeze(-1)
        keys = dequantize(codes, scale, zero, dtype).reshape(h, n * g, d)
        codes = unpack_bits(st.v_codes.view(t0, t1), self.bits, d).reshape(h, n * g, vg, d // vg)
        scale = st.v_scale.view(t0, t1).unsqueeze(-1)
        zero = st.v_zero.view(t0, t1).unsqueeze(-1)
        values = dequantize(codes, scale, zero, dtype).reshape(h, n * g, d)
        return keys, values

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-precision ``(k, v)`` of the whole sequence, dequantized prefix then residual.

        Materialising caches return views of their buffers (valid until the next ``truncate``);
        compact ones dequantize the store into new tensors (``decode_store``).
        """
        check_layer(self.layout, layer)
        st = self._layers[layer]
        if self.materialize:
            return st.fp.view(), st.fv.view()
        return self.decode_store(layer)

    def decode_store(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebuild the sequence from the packed store and the residual only (no cached prefix)."""
        check_layer(self.layout, layer)
        st = self._layers[layer]
        k_hat, v_hat = self._decode_groups(st, 0, st.quantized // self.group_size)
        k_res, v_res = st.residual_views()
        return torch.cat((k_hat, k_res), dim=1), torch.cat((v_hat, v_res), dim=1)

    def length(self, layer: int = 0) -> int:
        check_layer(self.layout, layer)
        return self._layers[layer].length

    def quantized_length(self, layer: int = 0) -> int:
        """Tokens of ``layer`` held in the packed store (a multiple of ``group_size``)."""
        check_layer(self.layout, layer)
        return self._layers[layer].quantized

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` tokens of every layer (see the class doc on lossiness)."""
        check_truncate(length)
        g = self.group_size
        for st in self._layers:
            if length >= st.length:
                continue
            if length >= st.quantized:
                st.fp.truncate(length - st.base)
                st.fv.truncate(length - st.base)
                continue
            groups = length // g
            kept = groups * g
            if self.materialize:
                st.fp.truncate(length)
                st.fv.truncate(length)
            else:
                k_hat, v_hat = self._decode_groups(st, groups, groups + 1)
                st.replace_fp(kept, k_hat[:, : length - kept], v_hat[:, : length - kept])
            st.quantized = kept
            for buf in (st.k_codes, st.k_scale, st.k_zero):
                buf.truncate(groups if self.key_mode == "channel" else kept)
            for buf in (st.v_codes, st.v_scale, st.v_zero):
                buf.truncate(kept)

    def nbytes(self) -> int:
        """Packed codes + float16 scales/zeros + full-precision residual, from the tensors."""
        total = 0
        for st in self._layers:
            total += sum(buf.used_nbytes() for buf in st.store())
            total += sum(t.numel() * t.element_size() for t in st.residual_views())
        return total

    def read_cost(self) -> tuple[float, float]:
        """Analytic (bytes moved, FLOPs) of reading every layer, as ``read`` does it.

        Materialising caches return views: nothing moves. Compact caches must read the packed
        store and the residual (``nbytes``) and write the full-precision sequence of every
        layer (2 x kv_heads x tokens x head_dim elements); dequantizing costs one multiply and
        one add per quantized element. This is the traffic of an ideal fused dequantize kernel;
        the reference implementation also writes and re-reads an intermediate prefix.
        """
        if self.materialize:
            return 0.0, 0.0
        lay = self.layout
        elem = torch.tensor([], dtype=lay.dtype).element_size()
        written = sum(2 * lay.kv_heads * st.length * lay.head_dim * elem for st in self._layers)
        flops = sum(4 * lay.kv_heads * st.quantized * lay.head_dim for st in self._layers)
        return float(self.nbytes() + written), float(flops)

    def scratch_nbytes(self) -> int:
        """Bytes of the materialised dequantized prefix (0 when compact; not in ``nbytes``)."""
        total = 0
        for st in self._layers:
            start = st.quantized - st.base
            total += st.fp.used_nbytes() - st.fp.used_nbytes(start)
            total += st.fv.used_nbytes() - st.fv.used_nbytes(start)
        return total

    def allocated_nbytes(self) -> int:
        """Every byte reserved: capacity, and the materialised prefix, included."""
        total = 0
        for st in self._layers:
            total += sum(buf.allocated_nbytes() for buf in (*st.store(), st.fp, st.fv))
        return total


class KIVICacheFactory(CacheFactoryBase):
    """Makes ``KIVICache``s: ``bits`` (2 or 4), ``group_size``, ``residual``, ``materialize``.

    ``materialize=True`` keeps a dequantized copy of the prefix so ``read`` is free; False (the
    default) keeps only the compressed store and dequantizes on every ``read`` (``KIVICache``).
    """

    def __init__(
        self,
        bits: int = 2,
        group_size: int = 32,
        residual: int = 32,
        materialize: bool = False,
        key_mode: str = "channel",
    ) -> None:
        super().__init__()
        validate_kivi(bits, group_size, residual, key_mode)
        self.bits = bits
        self.group_size = group_size
        self.residual = residual
        self.materialize = materialize
        self.key_mode = key_mode

    def new_cache(self, layout: CacheLayout) -> KIVICache:
        return self.track(KIVICache(layout, self.bits, self.group_size, self.residual,
                                    self.materialize, self.key_mode))
