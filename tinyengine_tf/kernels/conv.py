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

On Cortex-M cores with the DSP extension the layer body has another form under ``#if TE_DSP``
(conv_dsp.py chooses among its forms, each in a module of its own, conv_dsp_*.py, so that each
path and form reads on its own): two MACs per SMLAD
instruction over the same arrays, about 1.0-1.8 instructions per MAC instead of 8-14 for the
portable loops under arm-none-eabi-gcc -O2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels import conv_residual, dsp, int16x8
from tinyengine_tf.kernels.conv_dsp import dsp_body
from tinyengine_tf.kernels.conv_dsp_p import wide_fits, wide_saving
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import WIDE_WEIGHTS as WIDE
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
    flash += widened_bytes(op, g)
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
    fast = dsp_body(L)
    shareable = None
    if fast is not None:
        fast, shareable = fast
        body = f"\n#if TE_DSP{fast}\n#else{body}\n#endif"
    return LayerCode(body=body, headers=("te_conv.h", "te_dsp.h"), shareable=shareable)


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
    wide: bool = False  # the dot-order filter stored as int16 (the Flash planner's choice)

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

    L = _geometry(op, x, w, y)
    ocpg = oc // groups
    q, shift = quant.channel_multipliers(x.s, w.scale, y.s, oc)
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)
    abs_sums = np.abs(w.data.astype(np.int64)).reshape(oc, -1).sum(axis=1)
    bias, q, shift = dsp.constant_channels(bias, abs_sums, q, shift, y.zp, lo, hi,
                                            w.per_channel)
    L.wide = bool(op.options.get(WIDE)) and widens(L)
    if L.dot:
        weights = w.data.astype(np.int16) if L.wide else w.data
        folded = bias - (x.zp + 128) * w.data.astype(np.int64).reshape(oc, -1).sum(axis=1)
    else:
        weights = w.data.reshape(groups, ocpg, kh, kw, icf).transpose(0, 2, 3, 4, 1)
        folded = bias
    L.W = (ctx.const("w16", np.ascontiguousarray(weights).ravel(), "int16_t") if L.wide else
           ctx.const("w", np.ascontiguousarray(weights).ravel(), "int8_t"))
    L.B = ctx.const("bias", folded, "int32_t")
    bounds = dsp.acc_bounds(bias, abs_sums, x.zp)
    L.epi, L.rq, L.tables = _epilogue(ctx, op, w, y, q, shift, lo, hi, bounds)
    return L


def widens(L: _Layer) -> bool:
    """Whether the layer's filter can be stored as int16 (conv_dsp_p's widened "p" form reads it)."""
    return L.dot and wide_fits(L)


def _shape_layer(op: Op, g) -> tuple[_Layer, int] | None:
    """(the _Layer fields shapes decide, no arrays; calls per inference), for the Flash
    planner; None where the layer is not an int8 convolution this module emits. A 1x1 conv with
    a folded residual ADD runs as a conv over chunks of pixels (conv_residual.py)."""
    if op.kind != "CONV_2D" or int16x8.handles(op, g):
        return None
    calls = 1
    if conv_residual.handles(op):
        chunk = conv_residual.chunk_pixels(op, g)
        calls = int(np.prod(g.t(op.inputs[0]).shape[:3])) // chunk
        op, g = conv_residual._conv_part(op, g, chunk)
    x, w, y = g.t(op.inputs[0]), g.t(op.inputs[1]), g.t(op.outputs[0])
    if (not w.is_const or x.dtype != "int8" or w.dtype != "int8" or y.dtype != "int8"
            or len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4):
        return None
    return _geometry(op, x, w, y), calls


def _geometry(op: Op, x, w, y) -> _Layer:
    """The _Layer of input x, filter w and output y (4-D, checked by the caller) before its
    arrays: sizes, window, zero point, the form."""
    n, ih, iw, ic = x.shape
    oc, kh, kw, icf = w.shape
    win = Window.from_op(op, ih, iw, kh, kw, y.shape[1], y.shape[2])
    L = _Layer(n, ih, iw, ic, oc, kh, kw, icf, ic // icf, win, x.zp, dot=False)
    L.dot = L.run >= DOT_MIN_RUN
    return L


def widening(op: Op, g) -> tuple[int, int] | None:
    """(extra Flash bytes, instructions saved per inference, estimated) of storing this layer's
    filter as int16, or None where no form reads it so."""
    shaped = _shape_layer(op, g)
    if shaped is None or not widens(shaped[0]):
        return None
    L, calls = shaped
    return L.oc * L.k, calls * wide_saving(L)


def widened_bytes(op: Op, g) -> int:
    """The Flash this layer's int16 filter takes beyond its int8 one (0 where not widened)."""
    if not op.options.get(WIDE):
        return 0
    shaped = _shape_layer(op, g)
    return shaped[0].oc * shaped[0].k if shaped is not None and widens(shaped[0]) else 0


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
            const {"int16_t" if L.wide else "int8_t"} *wr = {L.W} + ({ch}) * {K} + ky * {kw * icf};
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
              const {"int16_t" if L.wide else "int8_t"} *wt = {L.W} + ({ch}) * {L.k} + (ky * {L.kw} + kx) * {L.icf};
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
