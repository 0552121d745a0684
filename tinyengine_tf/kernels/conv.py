"""CONV_2D: any kernel size, stride, dilation and group count; SAME, VALID or folded explicit pad.

The layer is a small GEMM, out[pixel][o] = bias[o] + sum_k w[o][k] * (x[pixel][k] - zp), computed
over register tiles of PB output pixels x OB output channels with int32 accumulators. Every size,
stride, zero point and per-tensor multiplier is a literal. Two inner-loop forms, chosen by shape:

- dot form (the input's contiguous runs are long: kw*ic bytes per kernel row, or ic per tap):
  weights stay in the model's [o][ky][kx][c] order and each accumulator is a dot product over a
  contiguous run, sum w * (x + 128). x + 128 is an unsigned byte, so gcc -O3 -march=native turns
  the loop into unsigned-by-signed byte dot-product instructions where the CPU has them
  (vpdpbusd, AVX-512 VNNI / AVX-VNNI: 64 multiply-adds per instruction) and into 16-bit
  multiplies elsewhere. The bias is folded accordingly: bias' = bias - (zp + 128) * sum(w), so the
  loop needs no zero-point arithmetic. Measured on the host, the dot form is 2-5x faster than the
  broadcast form once runs reach DOT_MIN_RUN bytes; below that its per-output horizontal sums cost
  more than they save.
- broadcast form (short runs: first layers with 1-3 input channels): weights re-laid out as
  [group][ky][kx][c][o] and each (tap, channel) step adds w[o] * (x - zp) to every output channel
  at once, the loop over o contiguous and vectorized. The bias is used as is.

TFLM skips taps that fall outside the input (the same as reading x = zp). Pixels whose window is
inside the input run the plain loops; border pixels run the same loops over the in-bounds range of
kernel rows (and columns), computed once per pixel: no loop checks anything per tap or channel.
In the dot form a border pixel then adds back the missing taps' (zp + 128) * w, which is zero in
the common case zp == -128. Weights, bias and multipliers are the same arrays in both forms (only
their order and the bias values differ), so Flash depends on shapes alone.

On Cortex-M cores with the DSP extension the layer body has a third form under ``#if TE_DSP``
(see "Arm DSP path" below): two MACs per SMLAD instruction over the same arrays, about 1.2-1.8
instructions per MAC instead of 8-14 for the portable loops under arm-none-eabi-gcc -O2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels import conv_residual, dsp, int16x8
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE
from tinyengine_tf.kernels.geometry import Window

INT32_MAX = 2**31 - 1
# Dot form from this many contiguous input bytes per run (kernel row or tap) up.
DOT_MIN_RUN = 32
# Dot-form tile: pixels x output channels (each accumulator is one vector register).
DOT_PB, DOT_OB = 4, 4
# Broadcast-form tile: OB channels (int32 lanes) x PB pixels, at most TILE_LANES lanes live.
TILE_LANES = 128
MAX_OB = 32
MAX_PB = 8
# gcc 12 vectorizes the broadcast form best pixel-outer below 16 channels, channel-outer above.
CHANNEL_OUTER_FROM = 16


def conv_footprint(op: Op, g) -> tuple[int, int]:
    """(Flash, scratch) bytes of the emitted layer, from shapes and quantization granularity."""
    scratch = conv_residual.scratch_bytes(op, g) if conv_residual.handles(op) else 0
    if int16x8.handles(op, g):
        return int16x8.footprint(op, g)
    w = g.t(op.inputs[1])
    oc = int(w.shape[0])
    flash = int(np.prod(w.shape)) + 4 * oc          # weights (either order) + int32 bias
    if w.per_channel:
        flash += 4 * oc + oc                        # int32 multiplier + int8 shift per channel
    return flash, scratch


@kernel("CONV_2D", footprint=conv_footprint)
def conv_2d(op: Op, g, ctx: EmitContext) -> LayerCode:
    if conv_residual.handles(op):
        return conv_residual.emit(op, g, ctx)
    if int16x8.handles(op, g):
        return int16x8.conv_2d(op, g, ctx)
    L = _layer(op, ctx)
    body = _body(L)
    fast = _dsp_body(L)
    if fast is not None:
        body = f"\n#if TE_DSP{fast}\n#else{body}\n#endif"
    return LayerCode(body=body, headers=("te_conv.h", "te_dsp.h"))


@dataclass
class _Layer:
    """Everything the C text needs, all known at generation time."""
    n: int
    ih: int
    iw: int
    ic: int
    oc: int
    kh: int
    kw: int
    icf: int
    groups: int
    win: Window
    zp: int           # input zero point
    dot: bool         # dot form (else broadcast form)
    W: str = ""       # weights: [o][ky][kx][c] (dot) or [g][ky][kx][c][o] (broadcast)
    B: str = ""       # int32 bias [oc], folded for the dot form
    epi: object = None  # (acc expression, channel expression) -> int8 C expression
    rq: object = None   # dsp.Requant of the layer
    tables: tuple = (None, None)  # (multiplier, shift) arrays of a per-channel layer

    @property
    def ocpg(self) -> int:
        return self.oc // self.groups

    @property
    def k(self) -> int:
        return self.kh * self.kw * self.icf

    @property
    def flat(self) -> bool:
        """1x1, stride 1, unpadded: output pixel p reads input pixel p, so tiles span rows."""
        w = self.win
        return (self.kh == self.kw == 1 and w.sh == w.sw == 1 and w.pt == w.pl == 0
                and w.oh == self.ih and w.ow == self.iw)

    @property
    def merged(self) -> bool:
        """One kernel row's taps are one contiguous run of kw * ic input bytes."""
        return self.win.dw == 1 and self.groups == 1

    @property
    def run(self) -> int:
        """Contiguous input bytes per innermost run."""
        return self.kw * self.ic if self.merged else self.icf

    def tile(self) -> tuple[int, int]:
        """(OB output channels, PB pixels) of one register tile."""
        if self.dot:
            return min(DOT_OB, self.ocpg), DOT_PB
        ob = min(self.ocpg, MAX_OB)
        lanes = -(-ob // 8) * 8
        return ob, max(1, min(MAX_PB, TILE_LANES // lanes))


def _layer(op: Op, ctx: EmitContext) -> _Layer:
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    ctx.require_int8(op, x, w, y)
    ctx.require_per_tensor(op, x, y)
    if not w.is_const:
        raise ctx.unsupported(op, "the filter is not a constant tensor")
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise ctx.unsupported(op, "input, filter and output must be 4-D (NHWC / OHWI)")
    n, ih, iw, ic = x.shape
    oc, kh, kw, icf = w.shape
    if icf < 1 or ic % icf or oc % (ic // icf) or y.shape[3] != oc or y.shape[0] != n:
        raise ctx.unsupported(op, f"filter {list(w.shape)} does not match input {list(x.shape)} "
                                  f"and output {list(y.shape)}")
    if np.any(w.zero_point != 0):
        raise ctx.unsupported(op, "filter zero points must be 0 (symmetric int8 weights)")
    # TFLM (PopulateConvolutionQuantizationParams) reads the scales by output channel and
    # checks only their count against the output channels and the axis quantized_dimension names.
    qd = w.quantized_dim
    if w.per_channel and (len(w.scale) != oc or not 0 <= qd < 4 or w.shape[qd] != oc):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized "
                                  f"dimension {qd} of {list(w.shape)}; TFLite Micro needs 1 or one "
                                  f"per output channel ({oc}), along an axis of that size",
                              FIX_QUANTIZE)
    groups = ic // icf
    win = Window.from_op(op, ih, iw, kh, kw, y.shape[1], y.shape[2])

    bias = np.zeros(oc, np.int64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = ctx.t_in(op, 2)
        if not b.is_const or b.dtype != "int32" or b.numel != oc:
            raise ctx.unsupported(op, f"bias must be a constant int32 vector of {oc}, got {b.describe()}")
        bias = b.data.astype(np.int64).ravel()
    # The C sums in int32 like TFLM but in another order, from a folded bias: every partial sum
    # (|bias| + two windows of 128 * 255) must fit as well.
    if int(np.abs(bias).max(initial=0)) + 2 * kh * kw * icf * 128 * 255 > INT32_MAX:
        raise ctx.unsupported(op, f"a {kh}x{kw}x{icf} window with these biases can overflow the "
                                  "int32 accumulator", "Use fewer input channels per output")

    L = _Layer(n, ih, iw, ic, oc, kh, kw, icf, groups, win, x.zp, dot=False)
    L.dot = L.run >= DOT_MIN_RUN
    ocpg = oc // groups
    q, shift = quant.channel_multipliers(x.s, w.scale, y.s, oc)
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)
    abs_sums = np.abs(w.data.astype(np.int64)).reshape(oc, -1).sum(axis=1)
    bias, q, shift = dsp.constant_channels(bias, abs_sums, q, shift, y.zp, lo, hi,
                                            w.per_channel)
    if L.dot:
        weights = w.data
        folded = bias - (x.zp + 128) * w.data.astype(np.int64).reshape(oc, -1).sum(axis=1)
    else:
        weights = w.data.reshape(groups, ocpg, kh, kw, icf).transpose(0, 2, 3, 4, 1)
        folded = bias
    L.W = ctx.const("w", np.ascontiguousarray(weights).ravel(), "int8_t")
    L.B = ctx.const("bias", folded, "int32_t")
    bounds = dsp.acc_bounds(bias, abs_sums, x.zp)
    L.epi, L.rq, L.tables = _epilogue(ctx, op, w, y, q, shift, lo, hi, bounds)
    return L


def _epilogue(ctx, op, w, y, q, shift, lo, hi, bounds):
    """acc -> int8 with TFLM's multiplier, output zero point and activation clamp; also the
    DSP path's requantization and the per-channel tables both read."""
    if np.any(q < 0) or np.any(q >= 2**31) or np.any(shift > 30):
        raise ctx.unsupported(op, "a requantization multiplier is out of range")
    rq = dsp.Requant(q, shift, y.zp, lo, hi, bounds)
    shift = rq.shift
    M = S = None
    # Whether any shift is a left shift is a property of the scales, not of an array's size.
    left = bool(np.any(shift > 0))
    fn = "te_conv_rq_any" if left else "te_conv_rq"
    if w.per_channel:
        M = ctx.const("mult", q, "int32_t")
        S = ctx.const("shift", shift, "int8_t")

        def mult(ch):
            return f"{M}[{ch}]", (f"{S}[{ch}]" if left else f"-{S}[{ch}]")
    else:
        def mult(ch):
            return str(int(q[0])), str(int(shift[0]) if left else -int(shift[0]))

    def expr(acc: str, ch: str) -> str:
        m, s = mult(ch)
        return f"(int8_t)te_clamp({fn}({acc}, {m}, {s}) + {y.zp}, {lo}, {hi})"
    return expr, rq, (M, S)


# ---------------------------------------------------------------------------------------------
# Loop structure. Inputs are indexed with int offsets from in0 (never a pointer before the
# buffer). A run of n pixels (or channels) is covered by tiles of t; when t does not divide n the
# last tile starts at n - t and recomputes a few values, so every run needs one tile shape only.

def _starts(var: str, base: str, n: int, t: int) -> tuple[str, str]:
    """(loop header, definition of var) walking tile starts over a run of n in steps of t."""
    count = -(-n // t)
    last = n - t
    if count == 1:
        return "{", f"const int {var} = {base};"
    step = f"i_{var} * {t}"
    start = step if n % t == 0 else f"({step} < {last} ? {step} : {last})"
    return (f"for (int i_{var} = 0; i_{var} < {count}; ++i_{var}) {{",
            f"const int {var} = {base} + {start};" if base != "0" else f"const int {var} = {start};")


def _body(L: _Layer) -> str:
    return _flat_body(L) if L.flat else _rows_body(L)


def _flat_body(L: _Layer) -> str:
    """1x1 stride-1 unpadded: one run of N*H*W pixels."""
    _, pb = L.tile()
    total = L.n * L.win.oh * L.win.ow
    pb = min(pb, total)
    loop, define = _starts("p", "0", total, pb)
    return f"""
  {loop}
    {define}
    const int xo = p * {L.ic};
    int8_t *yo = out0 + p * {L.oc};{_tile(L, pb, L.ic, "full")}
  }}"""


def _rows_body(L: _Layer) -> str:
    """Three passes, each with one tile shape: rows and columns whose window is inside the input;
    the interior columns of the border rows; the border columns of every row, pixel by pixel.
    (Separate loops, not an if inside one: gcc vectorizes each of them plainly.)"""
    w = L.win
    ylo, yhi = w.interior("y")
    xlo, xhi = w.interior("x")
    if xlo == xhi:                   # no column sees its whole window
        xlo = xhi = 0
    if ylo == yhi:
        ylo = yhi = 0
    _, pb = L.tile()
    pb = min(pb, xhi - xlo) if xhi > xlo else 1
    passes = ""
    if xhi > xlo:
        loop, define = _starts("ox", str(xlo), xhi - xlo, pb)
        pixels = f"""
      {loop}
        {define}{{tile}}
      }}"""
        if yhi > ylo:
            passes += _row_loop(L, f"for (int oy = {ylo}; oy < {yhi}; ++oy) {{", "",
                                pixels.replace("{tile}", _pixel(L, pb, "full")))
        nb = w.oh - (yhi - ylo)
        if nb:
            oy = f"r < {ylo} ? r : r + {yhi - ylo}" if ylo else f"r + {yhi}"
            passes += _row_loop(L, f"for (int r = 0; r < {nb}; ++r) {{", f"const int oy = {oy};",
                                pixels.replace("{tile}", _pixel(L, pb, "rows")))
    nc = w.ow - (xhi - xlo)
    if nc:
        ox = f"k < {xlo} ? k : k + {xhi - xlo}" if xlo else f"k + {xhi}"
        cols = f"""
      for (int k = 0; k < {nc}; ++k) {{
        const int ox = {ox};{_pixel(L, 1, "cols")}
      }}"""
        passes += _row_loop(L, f"for (int oy = 0; oy < {w.oh}; ++oy) {{", "", cols)
    return f"""
  for (int b = 0; b < {L.n}; ++b) {{{passes}
  }}"""


def _row_loop(L: _Layer, head: str, define: str, pixels: str) -> str:
    define = f"\n      {define}" if define else ""
    return f"""
    {head}{define}
      const int iy0 = oy * {L.win.sh} - {L.win.pt};{pixels}
    }}"""


def _pixel(L: _Layer, pb: int, check: str) -> str:
    """The tile of pb pixels starting at output (b, oy, ox)."""
    w = L.win
    return f"""
        const int ix0 = ox * {w.sw} - {w.pl};
        const int xo = ((b * {L.ih} + iy0) * {L.iw} + ix0) * {L.ic};
        int8_t *yo = out0 + ((b * {w.oh} + oy) * {w.ow} + ox) * {L.oc};{_tile(L, pb, w.sw * L.ic, check)}"""


def _range(var: str, origin: str, k: int, d: int, size: int) -> str:
    """C for [var_lo, var_hi): kernel indices whose input coordinate origin + i*d is in [0, size)."""
    if d == 1:
        lo = f"{origin} < 0 ? -{origin} : 0"
        hi = f"{size} - {origin} < {k} ? {size} - {origin} : {k}"
    else:
        lo = f"{origin} < 0 ? (-{origin} + {d - 1}) / {d} : 0"
        hi = f"{origin} + {(k - 1) * d} < {size} ? {k} : ({size} - {origin} + {d - 1}) / {d}"
    return f"""
        const int {var}_lo = {lo};
        const int {var}_hi = {hi};"""


def _tile(L: _Layer, pb: int, xq: int, check: str) -> str:
    """pb pixels x all output channels. xo: input offset of pixel 0's tap (0, 0); yo: output.

    check: "full" (window inside the input), "rows" (some kernel rows fall outside) or "cols"
    (a single pixel whose kernel rows and columns may fall outside).
    """
    w = L.win
    ob, _ = L.tile()
    head = ""
    if check in ("rows", "cols"):
        head += _range("ky", "iy0", L.kh, w.dh, L.ih)
    if check == "cols":
        head += _range("kx", "ix0", L.kw, w.dw, L.iw)
    loop, define = _starts("o0", "0", L.ocpg, ob)
    block = (_dot_block if L.dot else _bcast_block)(L, pb, ob, xq, check)
    code = f"""
        {loop}
          {define}{block}
        }}"""
    if L.groups > 1:
        code = f"\n        for (int g = 0; g < {L.groups}; ++g) {{{code}\n        }}"
    return head + code


def _ranges(L: _Layer, check: str):
    ky = ("ky_lo", "ky_hi") if check != "full" else ("0", str(L.kh))
    kx = ("kx_lo", "kx_hi") if check == "cols" else ("0", str(L.kw))
    return ky, kx


def _store(L: _Layer, pb: int, ob: int, ch: str) -> str:
    return f"""
          for (int q = 0; q < {pb}; ++q) {{
            int8_t *yp = yo + q * {L.oc} + {ch};
            for (int oo = 0; oo < {ob}; ++oo) yp[oo] = {L.epi('acc[q][oo]', f'{ch} + oo')};
          }}"""


# ---------------------------------------------------------------------------------------------
# Dot form: acc[q][oo] = bias'[o] + sum over in-bounds runs of w[o][run] . (x[q][run] + 128).


def _acc_init(L, pb: int, ob: int, ch: str) -> str:
    """A pb x ob tile of int32 accumulators, each starting at its channel's (folded) bias."""
    return f"""
          int32_t acc[{pb}][{ob}];
          for (int q = 0; q < {pb}; ++q)
            for (int oo = 0; oo < {ob}; ++oo) acc[q][oo] = {L.B}[{ch} + oo];"""

def _dot_block(L: _Layer, pb: int, ob: int, xq: int, check: str) -> str:
    w = L.win
    G, ocpg, icf, ic, kw, K = L.groups, L.ocpg, L.icf, L.ic, L.kw, L.k
    ch = f"g * {ocpg} + o0" if G > 1 else "o0"
    gx = f" + g * {icf}" if G > 1 else ""
    (ky_lo, ky_hi), (kx_lo, kx_hi) = _ranges(L, check)

    def dot(j_lo: str, j_hi: str, x_at: str, w_at: str) -> str:
        """One reduction loop per run: gcc vectorizes it into byte dot-product instructions."""
        return f"""
              int32_t t[{pb}][{ob}] = {{{{0}}}};
              for (int j = {j_lo}; j < {j_hi}; ++j) {{
                for (int q = 0; q < {pb}; ++q) {{
                  const int32_t a = (int32_t)in0[{x_at} + q * {xq}] + 128;
                  for (int oo = 0; oo < {ob}; ++oo) t[q][oo] += (int32_t)wr[oo * {K} + {w_at}] * a;
                }}
              }}
              for (int q = 0; q < {pb}; ++q)
                for (int oo = 0; oo < {ob}; ++oo) acc[q][oo] += t[q][oo];"""

    if L.merged:
        j_lo, j_hi = (f"kx_lo * {ic}", f"kx_hi * {ic}") if check == "cols" else ("0", str(kw * ic))
        taps = f"""
            {{{dot(j_lo, j_hi, "xr + j", "j")}
            }}"""
    else:
        run = dot("0", str(icf), f"xr + kx * {w.dw * ic} + j", f"kx * {icf} + j")
        taps = f"""
            for (int kx = {kx_lo}; kx < {kx_hi}; ++kx) {{{run}
            }}"""
    return f"""{_acc_init(L, pb, ob, ch)}
          for (int ky = {ky_lo}; ky < {ky_hi}; ++ky) {{
            const int8_t *wr = {L.W} + ({ch}) * {K} + ky * {kw * icf};
            const int xr = xo + ky * {w.dh * L.iw * ic}{gx};{taps}
          }}{_dot_missing(L, pb, ob, ch, check)}{_store(L, pb, ob, ch)}"""


def _dot_missing(L: _Layer, pb: int, ob: int, ch: str, check: str) -> str:
    """Taps outside the input read x = zp: add (zp + 128) * w for them (nothing if zp == -128)."""
    if check == "full" or L.zp == -128:
        return ""
    (ky_lo, ky_hi), (kx_lo, kx_hi) = _ranges(L, check)
    return f"""
          for (int ky = 0; ky < {L.kh}; ++ky)
            for (int kx = 0; kx < {L.kw}; ++kx) {{
              if (ky >= {ky_lo} && ky < {ky_hi} && kx >= {kx_lo} && kx < {kx_hi}) continue;
              const int8_t *wt = {L.W} + ({ch}) * {L.k} + (ky * {L.kw} + kx) * {L.icf};
              for (int oo = 0; oo < {ob}; ++oo) {{
                int32_t s = 0;
                for (int c = 0; c < {L.icf}; ++c) s += wt[oo * {L.k} + c];
                for (int q = 0; q < {pb}; ++q) acc[q][oo] += s * {L.zp + 128};
              }}
            }}"""


# ---------------------------------------------------------------------------------------------
# Broadcast form: for each (tap, channel), acc[q][o] += w[o] * (x[q] - zp) for the whole block.

def _bcast_block(L: _Layer, pb: int, ob: int, xq: int, check: str) -> str:
    w = L.win
    G, ocpg, icf, ic, kw = L.groups, L.ocpg, L.icf, L.ic, L.kw
    ch = f"g * {ocpg} + o0" if G > 1 else "o0"
    gx = f" + g * {icf}" if G > 1 else ""
    gw = f"g * {L.k * ocpg} + " if G > 1 else ""
    (ky_lo, ky_hi), (kx_lo, kx_hi) = _ranges(L, check)
    if L.merged:
        j_lo, j_hi = (f"kx_lo * {ic}", f"kx_hi * {ic}") if check == "cols" else ("0", str(kw * ic))
        taps = f"""
            for (int j = {j_lo}; j < {j_hi}; ++j) {{
              const int8_t *wc = wr + j * {ocpg};{_bcast_step(L, pb, ob, "xr + j", xq)}
            }}"""
    else:
        step = _bcast_step(L, pb, ob, f"xr + kx * {w.dw * ic} + c", xq)
        taps = f"""
            for (int kx = {kx_lo}; kx < {kx_hi}; ++kx) {{
              for (int c = 0; c < {icf}; ++c) {{
                const int8_t *wc = wr + (kx * {icf} + c) * {ocpg};{step}
              }}
            }}"""
    return f"""{_acc_init(L, pb, ob, ch)}
          for (int ky = {ky_lo}; ky < {ky_hi}; ++ky) {{
            const int8_t *wr = {L.W} + {gw}ky * {kw * icf * ocpg} + o0;
            const int xr = xo + ky * {w.dh * L.iw * ic}{gx};{taps}
          }}{_store(L, pb, ob, ch)}"""


def _bcast_step(L: _Layer, pb: int, ob: int, x0: str, xq: int) -> str:
    if ob < CHANNEL_OUTER_FROM:
        return f"""
              for (int q = 0; q < {pb}; ++q) {{
                const int32_t xv = (int32_t)in0[{x0} + q * {xq}] - ({L.zp});
                for (int oo = 0; oo < {ob}; ++oo) acc[q][oo] += (int32_t)wc[oo] * xv;
              }}"""
    return f"""
              int32_t xv[{pb}];
              for (int q = 0; q < {pb}; ++q) xv[q] = (int32_t)in0[{x0} + q * {xq}] - ({L.zp});
              for (int oo = 0; oo < {ob}; ++oo) {{
                const int32_t wv = wc[oo];
                for (int q = 0; q < {pb}; ++q) acc[q][oo] += wv * xv[q];
              }}"""


# ---------------------------------------------------------------------------------------------
# Arm DSP path (te_dsp.h): tiles of pixels x output channels, two MACs per SMLAD.
#
# Each kernel row's run of kw * ic input bytes is read a word at a time; sign-extending bytes 0/2
# and 1/3 of a word pairs them with the same bytes of the matching filter word. One side of the
# product is read straight from its array (a word and two extends per 4 values); the other is
# expanded once into int16 pairs on the stack and read back as two words per 4 values (LDRD):
#
# - "w" form: the filters of a chunk of output channels are expanded once per call (doubled, so
#   the accumulators hold 2 * acc and requantization skips a shift), the input is read directly.
#   Cheap when many pixels share the expansion; large layers take 3-pixel tiles.
# - "x" form: the window of two pixels is expanded (as 2 (x + 128), unsigned, against the dot
#   form's bias) once per pixel pair and every output channel reads it; the filters are read in
#   place, which needs them in [o][ky][kx][c] order (the dot form). Cheap when few pixels share
#   many channels (the late, small layers).
# - "d" form: both sides read in place, for windows too large to expand (4 instructions more
#   per 16 MACs), with the bias corrected once per call for the signed input.
#
# The multiply-accumulates of one word step are asm statements (gcc's scheduler would hoist all
# loads of a C version and spill). A run whose length is not a multiple of 4 ends with a word that
# overlaps its predecessor; the expanded side holds zeros for the overlapped bytes, so no read
# leaves the run. A tile whose windows leave the input (padding) first copies them into a small
# zero-point-filled patch laid out like the input, then runs the same code.

DSP_STACK = 2048      # bytes of stack the expanded operands may take
DSP_WIDE = 3          # pixels per "w"-form tile of a large layer (see _dsp_plan)
DSP_WIDE_MACS = 400_000
DSP_FULL_UNROLL = 2   # word steps of a run written out without a loop up to this many


@dataclass
class _DspPlan:
    form: str         # "w" or "x"
    R: int            # bytes per kernel-row run
    nw: int           # words per run (the last one overlapping when R % 4)
    ob: int           # output channels per tile
    pb: int           # pixels per tile
    co: int = 0       # "w" form: channels per expanded chunk

    @property
    def main(self) -> int:
        return self.R // 4

    def x_off(self, s: int) -> int:
        return min(4 * s, self.R - 4)

    def keep_mask(self, s: int) -> int:
        """Bytes of word s that are not already covered by word s - 1 (a 4-bit mask)."""
        dup = 4 * s - self.x_off(s)
        return (0xF << dup) & 0xF


def _dsp_plan(L: _Layer) -> _DspPlan | None:
    w = L.win
    R = L.kw * L.ic
    if L.groups != 1 or w.dw != 1 or R < 4 or L.k > 4096:
        return None
    pixels = L.n * w.oh * w.ow
    run = pixels if L.flat else w.ow
    nw = -(-R // 4)
    ob, pb = min(2, L.oc), min(2, run)
    per_channel = 8 * L.kh * nw + 4           # expanded filter and bias
    per_pixel = 8 * L.kh * nw
    patch = 0 if L.flat else L.kh * (L.kw + (pb - 1) * w.sw) * L.ic
    x_ok = L.dot and pb * per_pixel + patch <= DSP_STACK
    w_ok = ob * per_channel + patch <= DSP_STACK
    # Instructions per MAC each form spends outside its multiply-accumulates: "x" expands 2 pixel
    # windows (~1.5 per byte) for every oc channels and loads each tile's multipliers (~3 per
    # output); "w" expands every filter once per call (~2 per weight read a word at a time, ~8
    # byte by byte) for all pixels.
    cost_x = 1.5 / L.oc + 3.0 / L.k
    cost_w = (2.0 if L.dot and R % 4 == 0 else 8.0) / pixels
    # The "w" form takes tiles of 3 pixels x 2 channels: three direct operands (a word load and
    # two extends each) against two expanded ones, six accumulators, the most the registers
    # hold; 8% fewer instructions than 2 x 2 for some 100 bytes of code, spent on layers of at
    # least DSP_WIDE_MACS. (The "x" and "d" forms would gain 3%: they keep 2 x 2.)
    if x_ok and (cost_x < cost_w or not w_ok):
        return _DspPlan("x", R, nw, ob, pb)
    if not w_ok:
        # Neither side fits expanded: read both in place (4 more instructions per 16 MACs).
        if L.dot and R % 4 == 0 and L.k < 4000 and 4 * L.oc + patch <= DSP_STACK:
            return _DspPlan("d", R, nw, ob, pb)
        return None
    if pixels * L.oc * L.k >= DSP_WIDE_MACS:
        pb = min(DSP_WIDE, run)
        patch = 0 if L.flat else L.kh * (L.kw + (pb - 1) * w.sw) * L.ic
    # Chunks of whole tiles that divide the channels (no chunk recomputes another's), else
    # near-equal ones whose last overlaps the one before.
    most = max(ob, (DSP_STACK - patch) // per_channel // ob * ob)
    fits = [c for c in range(ob, min(most, L.oc) + 1, ob) if L.oc % c == 0]
    if L.oc <= most:
        co = L.oc
    elif fits and 2 * max(fits) >= most:
        co = max(fits)
    else:
        chunks = -(-L.oc // most)
        co = min(L.oc, -(-(-(-L.oc // chunks)) // ob) * ob)
    return _DspPlan("w", R, nw, ob, pb, co)


def _dsp_step(P: _DspPlan, d: str, d_off: int, d_stride: int, e: str, e_idx: int, e_stride: int,
              post: tuple | None = None) -> str:
    """One word step: direct operands (int8, at d + d_off and + d_stride) against expanded ones
    (int32 pairs at e[e_idx], e[e_idx + 1] and + e_stride), into acc a<pixel><channel>.

    Written as one asm statement: gcc's scheduler hoists every load of a C version to the top,
    runs out of registers and reloads. post = (bytes, words) advances d and e after their first
    load (offsets here are relative to the pointers before it)."""
    n_d, n_e = (P.ob, P.pb) if P.form == "x" else (P.pb, P.ob)
    inc_d, inc_e = post or (0, 0)
    unit = 1 if P.form == "d" else 4          # e counts bytes (direct) or int32 words
    e_offs = [unit * (e_idx + j * e_stride) for j in range(n_e)]
    d_offs = [d_off + i * d_stride for i in range(n_d)]
    fits = (all(-1020 <= o <= 1020 for o in e_offs) and all(-255 <= o <= 4095 for o in d_offs)
            and (not post or (e_offs[0] == 0 and d_offs[0] == 0)))
    if not fits:
        return _dsp_step_c(P, d, d_off, d_stride, e, e_idx, e_stride, post)
    if P.form == "d" and not all(-255 <= o <= 4095 for o in e_offs):
        return _dsp_step_c(P, d, d_off, d_stride, e, e_idx, e_stride, post)
    # Two statements: the expanded (or filter) operands first, then the multiply-accumulates.
    # The second needs at most 13 registers (6 accumulators, 4 operands, 2 temporaries, d), so
    # it compiles where r7 is the frame pointer (-O0, -fno-omit-frame-pointer) too.
    load = []
    for j in reversed(range(n_e)):      # the one that post-increments goes last
        if P.form == "d":                 # a filter word, sign-extended like the input's
            where = f"[%[e]], #{inc_e}" if post and j == 0 else f"[%[e], #{e_offs[j]}]"
            load += [f"ldr %[t], {where}", f"sxtb16 %[e{j}l], %[t]", f"sxtb16 %[e{j}h], %[t], ror #8"]
        elif post and j == 0:
            load.append(f"ldrd %[e{j}l], %[e{j}h], [%[e]], #{4 * inc_e}")
        else:
            load.append(f"ldrd %[e{j}l], %[e{j}h], [%[e], #{e_offs[j]}]")
    macs = []
    for i in reversed(range(n_d)):
        if post and i == 0:
            macs.append(f"ldr %[t], [%[d]], #{inc_d}")
        else:
            macs.append(f"ldr %[t], [%[d], #{d_offs[i]}]")
        accs = [f"a{j}{i}" if P.form == "x" else f"a{i}{j}" for j in range(n_e)]  # a<px><ch>
        macs.append("sxtb16 %[u], %[t]")
        macs += [f"smlad %[{a}], %[u], %[e{j}l], %[{a}]" for j, a in enumerate(accs)]
        macs.append("sxtb16 %[t], %[t], ror #8")
        macs += [f"smlad %[{a}], %[t], %[e{j}h], %[{a}]" for j, a in enumerate(accs)]
    accs = sorted({f"a{px}{ch}" for px in range(P.pb) for ch in range(P.ob)})
    evals = [f"e{j}{h}" for j in range(n_e) for h in "lh"]
    load_outs = [f'[{v}] "=&r"(x_{v})' for v in evals] + (['[t] "=&r"(x_t)'] if P.form == "d" else [])
    mac_outs = [f'[{a}] "+r"({a})' for a in accs] + ['[t] "=&r"(x_t)', '[u] "=&r"(x_u)']
    mac_ins = [f'[{v}] "r"(x_{v})' for v in evals]
    if post:
        load_outs.append(f'[e] "+r"({e})')
        mac_outs.append(f'[d] "+r"({d})')
        load_ins = ""
    else:
        load_ins = f'[e] "r"({e})'
        mac_ins.append(f'[d] "r"({d})')
    sep = "\\n\\t"
    return (f"{{ int32_t {', '.join(f'x_{v}' for v in evals + ['t', 'u'])}; "
            f"__asm__(\"{sep.join(load)}\" : {', '.join(load_outs)} : {load_ins} : \"memory\"); "
            f"__asm__(\"{sep.join(macs)}\" : {', '.join(mac_outs)} : {', '.join(mac_ins)} : \"memory\"); }}")


def _dsp_step_c(P: _DspPlan, d: str, d_off: int, d_stride: int, e: str, e_idx: int,
                e_stride: int, post: tuple | None = None) -> str:
    """_dsp_step in C, for offsets the instructions cannot encode."""
    n_d, n_e = (P.ob, P.pb) if P.form == "x" else (P.pb, P.ob)
    if P.form == "d":
        lines = [f"const uint32_t e{j} = te_ld32({e} + {e_idx + j * e_stride}); "
                 f"const int32_t e{j}l = te_sx02(e{j}), e{j}h = te_sx13(e{j});" for j in range(n_e)]
    else:
        lines = [f"const int32_t e{j}l = {e}[{e_idx + j * e_stride}], e{j}h = {e}[{e_idx + j * e_stride + 1}];"
                 for j in range(n_e)]
    for i in range(n_d):
        macs_l, macs_h = [], []
        for j in range(n_e):
            a = f"a{j}{i}" if P.form == "x" else f"a{i}{j}"
            macs_l.append(f"{a} = __smlad(vl, e{j}l, {a});")
            macs_h.append(f"{a} = __smlad(vh, e{j}h, {a});")
        lines.append(f"{{ const uint32_t v = te_ld32({d} + {d_off + i * d_stride}); "
                     f"const int32_t vl = te_sx02(v); {' '.join(macs_l)} "
                     f"const int32_t vh = te_sx13(v); {' '.join(macs_h)} }}")
    if post:
        lines.append(f"{d} += {post[0]}; {e} += {post[1]};")
    return "{ " + " ".join(lines) + " }"


def _dsp_e_type(P: _DspPlan) -> tuple[str, int]:
    """(C type of the e side, e units per word step)."""
    return ("const int8_t", 4) if P.form == "d" else ("const int32_t", 2)


def _dsp_run(P: _DspPlan, d: str, d_stride: int, e: str, e_stride: int) -> str:
    """All word steps of one kernel row's run, d and e pointing at its start."""
    code = []
    main = P.main
    etype, u = _dsp_e_type(P)
    if main <= DSP_FULL_UNROLL:
        code += [_dsp_step(P, d, 4 * s, d_stride, e, u * s, e_stride) for s in range(main)]
    else:
        # Two steps per iteration; the first one's loads advance both pointers.
        body = (_dsp_step(P, "ds", 0, d_stride, "es", 0, e_stride, post=(8, 2 * u)) + "\n              "
                + _dsp_step(P, "ds", -4, d_stride, "es", -u, e_stride))
        code.append(f"""const int8_t *ds = {d};
            {etype} *es = {e};
            {etype} *const ee = es + {2 * u * (main // 2)};
            do {{
              {body}
            }} while (es != ee);""")
        if main % 2:
            code.append(_dsp_step(P, "ds", 0, d_stride, "es", 0, e_stride))
    if P.nw > main and P.R % 4 == 1 and P.form != "d":
        code.append(_dsp_tail_byte(P, d, d_stride, e, u * main, e_stride))
    elif P.nw > main:     # the overlapping last word
        code.append(_dsp_step(P, d, P.R - 4, d_stride, e, u * main, e_stride))
    return "\n            ".join(code)


def _dsp_tail_byte(P: _DspPlan, d: str, d_stride: int, e: str, e_idx: int, e_stride: int) -> str:
    """A run's single last byte: the expanded side's overlapping word holds [0, v] in its odd
    half (the other bytes repeat earlier ones), so one SMLABT per accumulator against the direct
    side's byte does it, instead of a whole overlapping word step."""
    n_d, n_e = (P.ob, P.pb) if P.form == "x" else (P.pb, P.ob)
    e_offs = [4 * (e_idx + 1 + j * e_stride) for j in range(n_e)]
    d_offs = [P.R - 1 + i * d_stride for i in range(n_d)]
    acc = [[f"a{j}{i}" if P.form == "x" else f"a{i}{j}" for j in range(n_e)] for i in range(n_d)]
    if not (all(o <= 4095 for o in e_offs) and all(o <= 4095 for o in d_offs)):
        lines = [f"const int32_t e{j} = {e}[{e_idx + 1 + j * e_stride}];" for j in range(n_e)]
        for i in range(n_d):
            lines.append(f"{{ const int32_t v = {d}[{d_offs[i]}]; "
                         + " ".join(f"{a} = __smlabt(v, e{j}, {a});" for j, a in enumerate(acc[i])) + " }")
        return "{ " + " ".join(lines) + " }"
    asm = [f"ldr %[e{j}], [%[e], #{o}]" for j, o in enumerate(e_offs)]
    for i in range(n_d):
        asm.append(f"ldrsb %[t], [%[d], #{d_offs[i]}]")
        asm += [f"smlabt %[{a}], %[t], %[e{j}], %[{a}]" for j, a in enumerate(acc[i])]
    accs = sorted({a for row in acc for a in row})
    outs = ([f'[{a}] "+r"({a})' for a in accs] + [f'[e{j}] "=&r"(x_e{j})' for j in range(n_e)]
            + ['[t] "=&r"(x_t)'])
    sep = "\\n\\t"
    return (f"{{ int32_t {', '.join(f'x_e{j}' for j in range(n_e))}, x_t; "
            f"__asm__(\"{sep.join(asm)}\" : {', '.join(outs)} : [d] \"r\"({d}), [e] \"r\"({e}) "
            f": \"memory\"); }}")


def _dsp_macs(L: _Layer, P: _DspPlan, d: str, d_row, d_stride: int, e: str,
              e_stride: int) -> str:
    """Every kernel row: d advances by d_row bytes (a literal or a C expression) per row, e by
    2 * nw words."""
    run = _dsp_run(P, "dr", d_stride, "er", e_stride)
    etype, u = _dsp_e_type(P)
    if L.kh == 1:
        return f"""{{
            const int8_t *dr = {d};
            {etype} *er = {e};
            {run}
          }}"""
    return f"""{{
            const int8_t *dr = {d};
            {etype} *er = {e};
            for (int ky = 0; ky < {L.kh}; ++ky) {{
              {run}
              dr += {d_row};
              er += {u * P.nw};
            }}
          }}"""


def _dsp_outputs(L: _Layer, P: _DspPlan, yq: int) -> tuple[str, str]:
    """(requantization setup of channels o..o+ob-1, stores of the tile's accumulators)."""
    rq = L.rq
    two = rq.doubled and P.form != "d"
    per_channel = L.tables[0] is not None
    setup, stores = [], []
    for ch in range(P.ob):
        if rq.ok:
            setup.append(rq.setup(str(ch), f"o + {ch}", *L.tables))
        for px in range(P.pb):
            acc = f"a{px}{ch}"
            val = (f"(int8_t){rq.expr(acc, str(ch), per_channel, two)}" if rq.ok
                   else L.epi(acc, f"o + {ch}"))
            stores.append(f"yp[{px * yq + ch}] = {val};")
    return " ".join(s for s in setup if s), "\n            ".join(stores)


def _dsp_border(L: _Layer) -> tuple[int, int, int, int] | None:
    """(ylo, yhi, xlo, xhi) of the outputs whose windows lie inside the input, or None for a
    layer without padding (every window inside)."""
    w = L.win
    ylo, yhi = w.interior("y")
    xlo, xhi = w.interior("x")
    if L.flat or (ylo, yhi, xlo, xhi) == (0, w.oh, 0, w.ow):
        return None
    return ylo, yhi, xlo, xhi


def _dsp_patch_width(L: _Layer, P: _DspPlan) -> int:
    """Bytes per row of a border tile's patch: the pb windows' kernel row, as in the input."""
    return (L.kw + (P.pb - 1) * L.win.sw) * L.ic


def _dsp_pixels(L: _Layer, P: _DspPlan, inner) -> str:
    """Loops over every pixel tile; inner(yo) is the code of one tile whose first output is
    out0[yo] and whose windows start at xp, kernel rows drow bytes apart.

    A tile whose windows leave the input (padding) copies them into `patch` first, rows of both
    windows laid out as in the input with the zero point outside, so the same code serves every
    tile; TFLM's skipped taps are exactly taps reading the zero point."""
    w = L.win
    if L.flat:
        total = L.n * w.oh * w.ow
        return f"""
        for (int i_p = 0; i_p < {-(-total // P.pb)}; ++i_p) {{
          {dsp.tile_start("p", "i_p", total, P.pb)}
          const int8_t *xp = in0 + p * {L.ic};
          {inner(f"p * {L.oc}")}
        }}"""
    row = w.dh * L.iw * L.ic
    xo = f"((b * {L.ih} + iy0) * {L.iw} + ix0) * {L.ic}"
    border = _dsp_border(L)
    if border is None:
        source = f"const int8_t *xp = in0 + {xo};"
    else:
        ylo, yhi, xlo, xhi = border
        tests = [t for t, on in ((f"oy < {ylo}", ylo > 0), (f"oy >= {yhi}", yhi < w.oh),
                                 (f"ox < {xlo}", xlo > 0), (f"ox + {P.pb} > {xhi}", xhi - P.pb < w.ow - P.pb))
                 if on]
        if not tests or xlo >= xhi or ylo >= yhi:
            tests = ["1"]
        cols = L.kw + (P.pb - 1) * w.sw
        wp = cols * L.ic
        four = L.ic % 4 == 0                 # whole words per pixel: copy and fill by words
        zp4 = (L.zp & 0xFF) * 0x01010101

        def fill(dst: str, n: str) -> str:
            return (f"te_dsp_fill4({dst}, 0x{zp4:08x}u, ({n}) / 4);" if four
                    else f"te_dsp_fill({dst}, {L.zp}, {n});")

        def copy(dst: str, src: str, n: str) -> str:
            return f"te_dsp_copy4({dst}, {src}, ({n}) / 4);" if four else f"te_dsp_copy({dst}, {src}, {n});"
        # Per kernel row: the columns inside the input are one contiguous run; zp around it.
        source = f"""const int8_t *xp;
              int drow = {row};
              if ({' || '.join(tests)}) {{
                int8_t *pt = patch;
                for (int ky = 0; ky < {L.kh}; ++ky, pt += {wp}) {{
                  const int iy = iy0 + ky * {w.dh};
                  int lo = 0, hi = 0;
                  if (iy >= 0 && iy < {L.ih}) {{
                    lo = ix0 < 0 ? -ix0 : 0;
                    hi = {L.iw} - ix0 < {cols} ? {L.iw} - ix0 : {cols};
                    if (hi < lo) hi = lo;
                  }}
                  if (lo > 0) {fill("pt", f"lo * {L.ic}")}
                  if (hi > lo) {{
                    const int8_t *src = in0 + ((b * {L.ih} + iy) * {L.iw} + ix0 + lo) * {L.ic};
                    {copy("pt + lo * " + str(L.ic), "src", f"(hi - lo) * {L.ic}")}
                  }}
                  if (hi < {cols}) {fill(f"pt + hi * {L.ic}", f"({cols} - hi) * {L.ic}")}
                }}
                xp = patch;
                drow = {wp};
              }} else {{
                xp = in0 + {xo};
              }}"""
    return f"""
        for (int b = 0; b < {L.n}; ++b) {{
          for (int oy = 0; oy < {w.oh}; ++oy) {{
            const int iy0 = oy * {w.sh} - {w.pt};
            for (int i_p = 0; i_p < {-(-w.ow // P.pb)}; ++i_p) {{
              {dsp.tile_start("ox", "i_p", w.ow, P.pb)}
              const int ix0 = ox * {w.sw} - {w.pl};
              {source}
              {inner(f"((b * {w.oh} + oy) * {w.ow} + ox) * {L.oc}")}
            }}
          }}
        }}"""


def _dsp_pixels_outer(L: _Layer, P: _DspPlan) -> bool:
    """Whether the "w" form should loop over pixel tiles outside the channel pairs: then a
    border tile's patch is built once per chunk instead of once per channel pair, but every
    tile reloads its channels' multipliers (~20 instructions per channel pair, measured)."""
    border = _dsp_border(L)
    if border is None:
        return False
    w = L.win
    ylo, yhi, xlo, xhi = border
    tiles_per_row = -(-w.ow // P.pb)
    inner = max(0, yhi - ylo) * len([t for t in range(tiles_per_row)
                                     if xlo <= min(t * P.pb, w.ow - P.pb) and
                                     min(t * P.pb, w.ow - P.pb) + P.pb <= xhi])
    border_tiles = w.oh * tiles_per_row - inner
    patch_cost = L.kh * (12 + 3 * (L.kw + (P.pb - 1) * w.sw) * L.ic)
    pairs = -(-L.oc // P.ob)
    channel_outer = border_tiles * pairs * patch_cost
    pixel_outer = w.oh * tiles_per_row * pairs * 20 + border_tiles * patch_cost
    return pixel_outer < channel_outer


def _dsp_drow(L: _Layer) -> str | int:
    """Bytes between kernel rows of a tile's windows: a variable where border tiles use patches."""
    return "drow" if _dsp_border(L) is not None else L.win.dh * L.iw * L.ic


def _dsp_patch(L: _Layer, P: _DspPlan) -> str:
    if _dsp_border(L) is None:
        return ""
    return f"\n  int8_t patch[{L.kh * _dsp_patch_width(L, P)}];"


def _dsp_accs(P: _DspPlan, bias) -> str:
    return "int32_t " + ", ".join(f"a{px}{ch} = {bias(ch)}" for px in range(P.pb)
                                  for ch in range(P.ob)) + ";"


def _dsp_body(L: _Layer) -> str | None:
    P = _dsp_plan(L)
    if P is None:
        return None
    return {"w": _dsp_w_form, "x": _dsp_x_form, "d": _dsp_d_form}[P.form](L, P)


def _weight_index(L: _Layer, o: str, ky: str, pos: str) -> str:
    """Index in L.W of filter o's byte pos of kernel row ky, in either stored order."""
    R = L.kw * L.ic
    if L.dot:
        return f"{o} * {L.k} + {ky} * {R} + {pos}"
    return f"({ky} * {R} + {pos}) * {L.oc} + {o}"


def _dsp_w_form(L: _Layer, P: _DspPlan) -> str:
    w = L.win
    pcw = 2 * L.kh * P.nw                    # int32 words per expanded filter
    xq = L.ic if L.flat else w.sw * L.ic     # input offset of a tile's second pixel
    # Expanded bias: bias - zp * sum(w), from the stored (dot: zp + 128 folded) bias.
    fold = 128 if L.dot else -L.zp
    # A doubled layer stores 2 w (int16 holds it), so its accumulators hold 2 * acc.
    two = L.rq.doubled
    if L.dot and L.kw * L.ic % 4 == 0:
        pair = "(int32_t)__sadd16(p, p)" if two else "p"
        expand_word = f"""const uint32_t v = te_ld32({L.W} + {_weight_index(L, "o", "ky", "4 * s")});
              {{ const int32_t p = te_sx02(v); d[0] = {pair}; }}
              {{ const int32_t p = te_sx13(v); d[1] = {pair}; }}"""
    else:
        base = "4 * s" if P.R % 4 == 0 else f"(4 * s < {P.R - 4} ? 4 * s : {P.R - 4})"
        expand_word = f"""const int base = {base};
              int32_t v[4];
              for (int t = 0; t < 4; ++t)
                v[t] = base + t < 4 * s ? 0 : {'2 * ' if two else ''}(int32_t){L.W}[{_weight_index(L, "o", "ky", "base + t")}];
              d[0] = te_pack16(v[0], v[2]);
              d[1] = te_pack16(v[1], v[3]);"""
    nchunks = -(-L.oc // P.co)
    npairs = -(-P.co // P.ob)
    setup, stores = _dsp_outputs(L, P, L.oc)

    def tile(yo: str) -> str:
        macs = _dsp_macs(L, P, "xp", _dsp_drow(L), xq, "w0", pcw)
        return f"""{{
            int8_t *yp = out0 + {yo} + o;
            {_dsp_accs(P, lambda ch: f"bias{ch}")}
            {macs}
            {stores}
          }}"""
    biases = " ".join(f"const int32_t bias{ch} = bx[j + {ch}];" for ch in range(P.ob))
    pairs = f"""for (int i_o = 0; i_o < {npairs}; ++i_o) {{
      {dsp.tile_start("j", "i_o", P.co, P.ob)}
      const int o = c0 + j;
      const int32_t *w0 = wx + j * {pcw};
      {biases}
      {setup}"""
    if not _dsp_pixels_outer(L, P):
        # Channel pairs outermost: their multipliers stay in registers for every pixel.
        tiles = f"""{pairs}{_dsp_pixels(L, P, tile)}
    }}"""
    else:
        # Pixel tiles outermost: a border tile's patch serves every channel pair of the chunk.
        tiles = _dsp_pixels(L, P, lambda yo: f"""{{
            {pairs}
            {tile(yo)}
            }}
          }}""")
    return f"""
  int32_t wx[{P.co * pcw}];
  int32_t bx[{P.co}];{_dsp_patch(L, P)}
  for (int i_c = 0; i_c < {nchunks}; ++i_c) {{
    {dsp.tile_start("c0", "i_c", L.oc, P.co)}
    for (int j = 0; j < {P.co}; ++j) {{
      const int o = c0 + j;
      int32_t *d = wx + j * {pcw};
      int32_t sum = 0;
      for (int ky = 0; ky < {L.kh}; ++ky) {{
        for (int s = 0; s < {P.nw}; ++s) {{
          {{
              {expand_word}
              sum = __smlad(d[0], 0x00010001, sum);
              sum = __smlad(d[1], 0x00010001, sum);
          }}
          d += 2;
        }}
      }}
      bx[j] = (int32_t)(((uint32_t){L.B}[o]{' << 1' if two else ''}) + (uint32_t)({fold} * sum));
    }}
    {tiles}
  }}"""


def _dsp_x_form(L: _Layer, P: _DspPlan) -> str:
    w = L.win
    pxw = 2 * L.kh * P.nw                    # int32 words per expanded pixel window
    xq = L.ic if L.flat else w.sw * L.ic
    npairs = -(-L.oc // P.ob)
    setup, stores = _dsp_outputs(L, P, L.oc)
    # A doubled layer stores 2 (x + 128) (at most 510: no carry between the halves).
    two = L.rq.doubled
    lo_, hi_ = ("(int32_t)(__uxtb16(v) << 1)", "(int32_t)((uint32_t)te_ux13(v) << 1)") if two else \
        ("(int32_t)__uxtb16(v)", "te_ux13(v)")
    expand_row = f"""for (int s_ = 0; s_ < {P.main}; ++s_) {{
                  const uint32_t v = te_ld32(s + 4 * s_) ^ 0x80808080u;
                  d[2 * s_] = {lo_};
                  d[2 * s_ + 1] = {hi_};
                }}"""
    if P.nw > P.main:        # the overlapping last word, its repeated bytes zeroed
        keep = P.keep_mask(P.main)
        mask = sum(0xFF << (8 * k) for k in range(4) if keep >> k & 1)
        expand_row += f"""
                {{
                  const uint32_t v = (te_ld32(s + {P.R - 4}) ^ 0x80808080u) & 0x{mask:08x}u;
                  d[{2 * P.main}] = {lo_};
                  d[{2 * P.main + 1}] = {hi_};
                }}"""

    if L.flat and P.nw == P.main:
        # The tile's pixels are contiguous in the input, and so are their expanded windows.
        expand = f"""for (int s_ = 0; s_ < {P.pb * P.main}; ++s_) {{
              const uint32_t v = te_ld32(xp + 4 * s_) ^ 0x80808080u;
              xx[2 * s_] = {lo_};
              xx[2 * s_ + 1] = {hi_};
            }}"""
    else:
        expand = f"""for (int q = 0; q < {P.pb}; ++q) {{
              const int8_t *s = xp + q * {xq};
              int32_t *d = xx + q * {pxw};
              for (int ky = 0; ky < {L.kh}; ++ky) {{
                {expand_row}
                s += {_dsp_drow(L)};
                d += {2 * P.nw};
              }}
            }}"""

    def tile(yo: str) -> str:
        macs = _dsp_macs(L, P, f"{L.W} + o * {L.k}", P.R, L.k, "xx", pxw)
        return f"""{{
            int8_t *yq = out0 + {yo};
            {expand}
            for (int i_o = 0; i_o < {npairs}; ++i_o) {{
              {dsp.tile_start("o", "i_o", L.oc, P.ob)}
              int8_t *yp = yq + o;
              {setup}
              {_dsp_accs(P, (lambda ch: f"(int32_t)((uint32_t){L.B}[o + {ch}] << 1)") if two
                         else (lambda ch: f"{L.B}[o + {ch}]"))}
              {macs}
              {stores}
            }}
          }}"""
    return f"""
  int32_t xx[{P.pb * pxw}];{_dsp_patch(L, P)}{_dsp_pixels(L, P, tile)}"""


def _dsp_d_form(L: _Layer, P: _DspPlan) -> str:
    """Both sides read in place, pixel tiles outermost (a border tile's patch serves every
    channel). The stored dot-form bias assumes x + 128: the sign-extended input needs
    bias + 128 * sum(w), summed once per call."""
    npairs = -(-L.oc // P.ob)
    setup, stores = _dsp_outputs(L, P, L.oc)
    xq = L.ic if L.flat else L.win.sw * L.ic

    def tile(yo: str) -> str:
        macs = _dsp_macs(L, P, "xp", _dsp_drow(L), xq, f"{L.W} + o * {L.k}", L.k)
        return f"""{{
            int8_t *yq = out0 + {yo};
            for (int i_o = 0; i_o < {npairs}; ++i_o) {{
              {dsp.tile_start("o", "i_o", L.oc, P.ob)}
              int8_t *yp = yq + o;
              {setup}
              {_dsp_accs(P, lambda ch: f"bd[o + {ch}]")}
              {macs}
              {stores}
            }}
          }}"""
    return f"""
  int32_t bd[{L.oc}];{_dsp_patch(L, P)}
  for (int o = 0; o < {L.oc}; ++o) {{
    const int8_t *wp = {L.W} + o * {L.k};
    int32_t sum = 0;
    for (int s = 0; s < {L.k // 4}; ++s) {{
      const uint32_t v = te_ld32(wp + 4 * s);
      sum = __smlad(te_sx02(v), 0x00010001, sum);
      sum = __smlad(te_sx13(v), 0x00010001, sum);
    }}
    bd[o] = (int32_t)((uint32_t){L.B}[o] + ((uint32_t)sum << 7));
  }}{_dsp_pixels(L, P, tile)}"""
