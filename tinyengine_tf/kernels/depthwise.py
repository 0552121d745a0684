"""DEPTHWISE_CONV_2D: any kernel size, stride, dilation and depth multiplier; SAME, VALID or a
folded explicit pad; per-tensor or per-channel filter scales; optional bias; fused activation.

Two code shapes, chosen from shapes alone (the NAS predicts memory from them):

- In place (depth multiplier 1, output no larger than the input). Channel by channel, the input
  channel is gathered into a scratch plane (IH x IW plus the zero-point padding ring its windows
  reach), the output channel is computed from the plane, then scattered to the output. Output
  element (y, x, c) lives at pixel y*OW+x, channel c: an input slot of the same channel, already
  copied to the plane, so the planner may put the output over the input and the layer needs only
  one plane of extra memory. The taps are unrolled with the weights in registers, and with the
  padding in the plane every output reads its whole window without a bounds check.
- Out of place (depth multiplier > 1, or an output larger than its input, which a folded PAD can
  cause). Pixel by pixel with the innermost loop contiguous over input channels and the taps
  unrolled; border pixels skip out-of-image taps, which is TFLite Micro's zero-point padding.

Where the in-place plane is part of the arena's peak, the planner (band_plan.py) may give the
layer a band height instead (op option depthwise_band.BAND_OPTION): the scratch then holds one
band's window of plane rows, the vertical halo carried from band to band (depthwise_band.py).

Interior pixels (all of them in place) start from a bias with the input zero point folded in
(bias + in_offset * sum(w)), so their inner loop is a plain dot product.

On Cortex-M cores with the DSP extension the in-place shape has an ``#if TE_DSP`` branch over the
same plane (the in-place scheme and its one plane of scratch are kept): tiles of up to 6
outputs (1 to 4 output rows, chosen per layer by instruction count, _asm_shape), each one asm
statement, which also requantizes up to the clamp (in C the multipliers stayed live across the
tile loop, and gcc reloaded them from the stack every tile). Plane words sign-extended give pairs of taps two columns apart (SMLAD against
weight pairs) and single taps (SMLAxy); the words of a tile are chosen to cover its taps in the
fewest instructions (_cover_min) and output rows of a tile share the plane rows their windows
overlap on. The channel's weight registers are reloaded from a small stack array as the tile
needs them (LDRD, two at a time), so up to 6 accumulators fit with the pointers; one helper per
model fills that array for every layer whose tiles load it in the same order (_records_call);
where convert(flash=...) leaves room, the records are computed here and stored as a constant
array instead (_StoredRecords: about 40 bytes of Flash a channel for RECORD_FILL instructions).
Results are stored
straight to the output, so the plane's zero-point ring is filled once per call. Where the tiles
cover the output exactly, each tile's asm also clamps and stores its outputs and steps the plane
and output pointers (_row_tile_code), which leaves the C loops only their counters. Each channel's
taps are stored in the order that lets that branch load them as words (_weight_plan); the
portable loops read them through the same permutation. The out-of-place shape keeps its
portable loops everywhere.

TFLite Micro treats fused activations other than RELU, RELU6 and RELU_N1_TO_1 as none (a fused
TANH is silently dropped); this kernel refuses them instead of reproducing that.
"""
from __future__ import annotations

import functools
import re
import textwrap
from dataclasses import dataclass

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.errors import TinyEngineError
from tinyengine_tf.ir import Graph, Op
from tinyengine_tf.kernels import depthwise_band, dsp, int16x8
from tinyengine_tf.kernels.base import EmitContext, LayerCode, helper, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE
from tinyengine_tf.kernels.base import WIDE_WEIGHTS as WIDE
from tinyengine_tf.kernels.geometry import Window, output_regions, requant

INT32_MAX = 2**31 - 1
# Fused activations TFLite Micro's CalculateActivationRangeQuantized accepts.
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1", "TANH", "SIGN_BIT")  # the last two: no clamp


@dataclass
class Layout:
    """Every decision that fixes the emitted arrays and scratch: a function of shapes only."""
    n: int
    ih: int
    iw: int
    ic: int
    oc: int
    mult: int
    win: Window
    per_channel: bool
    in_place: bool
    band: int = 0      # output rows per band of the in-place scratch; 0: the whole plane

    @property
    def taps(self) -> int:
        return self.win.kh * self.win.kw

    @property
    def has_interior(self) -> bool:
        ylo, yhi = self.win.interior("y")
        xlo, xhi = self.win.interior("x")
        return ylo < yhi and xlo < xhi

    @property
    def has_border(self) -> bool:
        ylo, yhi = self.win.interior("y")
        xlo, xhi = self.win.interior("x")
        return not (ylo == 0 and yhi == self.win.oh and xlo == 0 and xhi == self.win.ow)

    @property
    def plane(self) -> tuple[int, int]:
        """Rows and columns of the in-place scratch plane: the input channel plus the padding
        ring its windows reach, so every tap is in bounds."""
        w = self.win
        bottom = max(0, (w.oh - 1) * w.sh + (w.kh - 1) * w.dh + 1 - w.ih - w.pt)
        right = max(0, (w.ow - 1) * w.sw + (w.kw - 1) * w.dw + 1 - w.iw - w.pl)
        return w.pt + w.ih + bottom, w.pl + w.iw + right

    def arrays(self) -> dict:
        """hint -> (element count, C type) of every constant array the layer references."""
        out = {"w": (self.oc * self.taps, "int8_t")}
        # In place, padding lives in the plane: every pixel takes the folded bias.
        if self.has_interior or self.in_place:
            out["bias_folded"] = (self.oc, "int32_t")
        if self.has_border and not self.in_place:
            out["bias"] = (self.oc, "int32_t")
        if self.per_channel:
            out["mult"] = (self.oc, "int32_t")
            out["shift"] = (self.oc, "int8_t")
        return out

    @property
    def scratch_rows(self) -> int:
        """Plane rows the scratch holds: the whole plane, or one band's window."""
        return depthwise_band.window_rows(self.win, self.band) if self.band else self.plane[0]

    @property
    def scratch_bytes(self) -> int:
        # One padded channel plane (or band of it) of one batch: batches run one after another.
        return self.scratch_rows * self.plane[1] if self.in_place else 0


def layout(op: Op, g: Graph, ctx: EmitContext) -> Layout:
    """Shape checks shared by the kernel and its footprint."""
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
        raise ctx.unsupported(op, "input, filter and output must be 4-D (NHWC, 1xKHxKWxOC)")
    n, ih, iw, ic = x.shape
    one, kh, kw, oc = w.shape
    if one != 1 or y.shape[0] != n or y.shape[3] != oc or ic < 1 or oc % ic:
        raise ctx.unsupported(op, f"filter {list(w.shape)} does not match input {list(x.shape)} "
                                  f"and output {list(y.shape)}")
    mult = oc // ic
    opt_mult = op.options.get("depth_multiplier", mult)
    if opt_mult != mult:
        # TFLite Micro loops over the option's multiplier, not the shapes' ratio.
        raise ctx.unsupported(op, f"depth_multiplier option is {opt_mult} but the shapes give "
                                  f"{oc} / {ic} = {mult}", "Re-export the model")
    win = Window.from_op(op, ih, iw, kh, kw, y.shape[1], y.shape[2])
    per_channel = w.scale is not None and len(w.scale) > 1
    in_place = mult == 1 and win.oh * win.ow <= ih * iw
    lay = Layout(n, ih, iw, ic, oc, mult, win, per_channel, in_place)
    band = int(op.options.get(depthwise_band.BAND_OPTION) or 0)
    if band:
        if not depthwise_band.band_fits(lay, band):
            raise ctx.unsupported(op, f"bands of {band} output rows do not fit this layer "
                                      f"({win.oh} output rows, in place: {in_place})",
                                  f"Use one of {[b for b, _ in depthwise_band.band_choices(lay)]} or 0")
        lay.band = band
    return lay


def footprint(op: Op, g: Graph) -> tuple:
    """(flash bytes, scratch bytes, in place) exactly as the emitted layer declares them (int16:
    the first two), from the layout alone: the NAS cost model then never emits an int8
    depthwise layer, whose DSP tile search is the slowest part of emitting one."""
    if int16x8.handles(op, g):
        return int16x8.footprint(op, g, channel_axis=3)
    lay = layout(op, g, EmitContext(g, "footprint"))
    size = {"int8_t": 1, "int32_t": 4}
    flash = sum(count * size[ctype] for count, ctype in lay.arrays().values())
    return flash + widened_bytes(op, g), lay.scratch_bytes, lay.in_place


# Instructions a channel's records cost when filled at run time (the helper's stores and
# arithmetic, its call and the arguments): fitted to QEMU counts on VWW's and KWS's layers.
RECORD_FILL = 38


def widening(op: Op, g: Graph) -> tuple[int, int] | None:
    """(extra Flash bytes, instructions saved per inference, estimated) of storing this
    layer's per-channel DSP records (the doubled weight pairs, q, h, r and folded bias its
    tiles read) as a constant instead of filling them channel by channel at run time, or None
    where its tiles read no records."""
    if op.kind != "DEPTHWISE_CONV_2D" or int16x8.handles(op, g):
        return None
    extra = _records_bytes(op, g)
    if not extra:
        return None
    return extra, RECORD_FILL * int(g.t(op.inputs[1]).shape[3])


def widened_bytes(op: Op, g: Graph) -> int:
    """The Flash this layer's stored records take (0 where it fills them at run time)."""
    return _records_bytes(op, g) if op.options.get(WIDE) else 0


def _records_bytes(op: Op, g: Graph) -> int:
    # Whether the tiles read records depends on the requantization's values and the tile
    # search: the layer is emitted to find out (only for layers convert(flash=...) weighs).
    x = g.t(op.inputs[0])
    if x.dtype != "int8" or g.t(op.inputs[1]).data is None:
        return 0
    ctx = EmitContext(g, "records")
    ctx.layer = "L"
    try:
        depthwise_conv_2d(op, g, ctx, stored_records=True)
    except TinyEngineError:     # a layer the kernel refuses: its real emission reports it
        return 0
    return sum(v.size * 4 for sym, _, v in ctx.constants if sym.endswith("_records"))


def _bias(op: Op, ctx: EmitContext, oc: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = ctx.t_in(op, 2)
        if not b.is_const or b.dtype != "int32" or b.numel != oc:
            raise ctx.unsupported(op, f"bias must be a constant int32 vector of {oc}, got {b.describe()}")
        return b.data.astype(np.int64).ravel()
    return np.zeros(oc, np.int64)


def _activation_range(op: Op, ctx: EmitContext, y) -> tuple[int, int]:
    act = op.options.get("fused_activation_function") or "NONE"
    if act not in ACTIVATIONS:
        raise ctx.unsupported(op, f"fused activation {act} is not supported by TFLite Micro's int8 "
                                  "kernels", "Use a separate activation layer")
    return quant.activation_range(act, y.s, y.zp)


def _check_quantization(op: Op, ctx: EmitContext, lay: Layout):
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    ctx.require_int8(op, x, w, y)
    ctx.require_per_tensor(op, x, y)
    if not w.is_const:
        raise ctx.unsupported(op, "the filter is not a constant tensor")
    if np.any(w.zero_point != 0):
        raise ctx.unsupported(op, "filter zero points must be 0 (symmetric int8 weights)")
    qd = w.quantized_dim
    if len(w.scale) not in (1, lay.oc) or (
            w.per_channel and (not 0 <= qd < len(w.shape) or w.shape[qd] != lay.oc)):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized dimension "
                                  f"{qd} of {list(w.shape)}; TFLite Micro needs 1 or one per "
                                  f"output channel ({lay.oc}), along an axis of that size",
                              FIX_QUANTIZE)


def _offset_term(value: str, in_off: int) -> str:
    """`(value + in_off)` with the literal folded in cleanly."""
    if in_off == 0:
        return f"(int32_t){value}"
    return f"((int32_t){value} {'+' if in_off > 0 else '-'} {abs(in_off)})"


@kernel("DEPTHWISE_CONV_2D", footprint=footprint)
def depthwise_conv_2d(op: Op, g: Graph, ctx: EmitContext,
                      stored_records: bool | None = None) -> LayerCode:
    """stored_records (default: the op's WIDE_WEIGHTS option, which convert(flash=...) sets
    where the Flash budget has room): the DSP tiles' per-channel records are a constant array
    instead of being filled channel by channel at run time."""
    if stored_records is None:
        stored_records = bool(op.options.get(WIDE))
    if int16x8.handles(op, g):
        return int16x8.depthwise_conv_2d(op, g, ctx)
    lay = layout(op, g, ctx)
    _check_quantization(op, ctx, lay)
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    oc, taps = lay.oc, lay.taps
    bias = _bias(op, ctx, oc)
    weights = w.data.reshape(taps, oc).astype(np.int64)        # [tap][output channel]
    # Worst case of any partial sum, in either order of summation, must fit the int32 accumulator.
    worst = np.abs(bias) + 256 * np.abs(weights).sum(axis=0)
    if worst.max(initial=0) > INT32_MAX:
        raise ctx.unsupported(op, "a bias is so large that the int32 accumulator could overflow",
                              "Check the model's bias quantization")
    in_off = -x.zp
    lo, hi = _activation_range(op, ctx, y)
    q, shift = quant.channel_multipliers(x.s, w.scale, y.s, oc)
    abs_sums = np.abs(weights).sum(axis=0)
    bias, q, shift = dsp.constant_channels(bias, abs_sums, q, shift, y.zp, lo, hi,
                                            lay.per_channel)
    folded = bias + in_off * weights.sum(axis=0)

    arrays = lay.arrays()
    if lay.in_place:
        # [channel][tap], taps in the DSP path's order (_weight_plan): one channel's taps are
        # loaded once into registers.
        order, index = np.arange(oc), "c"
        weight_data = weights.T[:, _weight_plan(lay).perm]
    else:
        # Output channel k*M + m stored as m*IC + k: for each m, the loop over input channels k
        # reads weights, biases and multipliers contiguously.
        order = np.arange(oc).reshape(lay.ic, lay.mult).T.ravel()
        weight_data = weights[:, order].reshape(taps, lay.mult, lay.ic).transpose(1, 0, 2)
        index = "mk"
    syms = {"w": ctx.const("w", weight_data.ravel(), "int8_t")}
    if "bias_folded" in arrays:
        syms["bias_folded"] = ctx.const("bias_folded", folded[order], "int32_t")
    if "bias" in arrays:
        syms["bias"] = ctx.const("bias", bias[order], "int32_t")
    rq = dsp.Requant(q[order], shift[order], y.zp, lo, hi,
                     dsp.acc_bounds(bias[order], abs_sums[order], x.zp))
    first = len(ctx.constants)
    epilogue = requant(ctx, "acc", index, q[order], rq.shift, lay.per_channel, y.zp, lo, hi)
    tables = dsp.table_symbols(ctx, first)
    records = (_StoredRecords(ctx, weight_data, folded[order], rq) if lay.in_place and stored_records
               else None)
    if lay.in_place and lay.band:
        dsp_body = depthwise_band.dsp_body(lay, syms, rq, tables, epilogue, x.zp, records)
        _mark_branches(ctx, records, syms, tables)
        body = (f"\n#if TE_DSP{dsp_body}"
                f"\n#else{_records_unused(records)}"
                f"{depthwise_band.portable_body(lay, syms, epilogue, x.zp, _weight_plan(lay))}"
                "\n#endif")
        return LayerCode(body=body, scratch_bytes=lay.scratch_bytes, in_place=True,
                         headers=("te_dsp.h",))
    if lay.in_place:
        dsp_body = _dsp_in_place_body(lay, syms, rq, tables, epilogue, x.zp, records)
        _mark_branches(ctx, records, syms, tables)
        body = (f"\n#if TE_DSP{dsp_body}\n#else{_records_unused(records)}"
                f"{_in_place_body(lay, syms, epilogue, x.zp)}\n#endif")
        return LayerCode(body=body, scratch_bytes=lay.scratch_bytes, in_place=True,
                         headers=("te_dsp.h",))
    return LayerCode(body=_out_of_place_body(lay, syms, epilogue, in_off))


# -- in place, channel by channel -----------------------------------------------------------------

def _in_place_body(lay: Layout, syms: dict, epilogue: str, x_zp: int) -> str:
    win, c_n, taps = lay.win, lay.ic, lay.taps
    ph, pw = lay.plane
    stored_at = {t: p for p, t in enumerate(_weight_plan(lay).perm)}
    wloads = ", ".join(f"w{t} = wc[{stored_at[t]}]" for t in range(taps))
    if (ph, pw) == (lay.ih, lay.iw):
        copy = f"for (int i = 0; i < {ph * pw}; ++i) scratch[i] = xb[i * {c_n} + c];"
    else:
        # Results overwrite the padding ring too: refill it with the zero point every channel.
        copy = (f"memset(scratch, {x_zp}, {ph * pw});\n      for (int iy = 0; iy < {lay.ih}; ++iy) {{\n"
                f"        int8_t *d = scratch + (iy + {win.pt}) * {pw} + {win.pl};\n"
                f"        const int8_t *s = xb + iy * {lay.iw * c_n} + c;\n"
                f"        for (int ix = 0; ix < {lay.iw}; ++ix) d[ix] = s[ix * {c_n}];\n      }}")
    return f"""
  /* In place: out0 may equal in0. Output channel c only overwrites input slots of channel c,
   * all copied into the zero-point-padded scratch plane before any is written. */
  for (int b = 0; b < {lay.n}; ++b) {{
    const int8_t *xb = in0 + b * {lay.ih * lay.iw * c_n};
    int8_t *yb = out0 + b * {win.oh * win.ow * c_n};
    for (int c = 0; c < {c_n}; ++c) {{
      {copy}
      {{
        int8_t *restrict pl = scratch;
        const int8_t *wc = {syms['w']} + c * {taps};
        const int32_t {wloads};
        const int32_t bf = {syms['bias_folded']}[c];
{_plane_compute(lay, epilogue)}
      }}
    }}
  }}"""


CHUNK = 64  # outputs computed into a stack buffer before they go back into the plane


def _plane_compute(lay: Layout, epilogue: str) -> str:
    """Results go back into the plane, then scatter to the output channel.

    Output k is stored in plane[k] once its chunk is done: every output computed later reads at
    or beyond its own index, which is past the chunk. (Computing a chunk into a stack buffer
    lets the compiler vectorize even when strided reads and the stores share the plane.) With
    equal strides the outputs of all rows form one run: output (y, x) is plane slot y*R + x with
    R = SH*PW/SW, and its window starts at SW times that, so one long loop computes every row,
    plus a few discarded columns past each row's end; that is long enough to vectorize even for
    small planes.
    """
    win = lay.win
    ph, pw = lay.plane
    offsets = [ky * win.dh * pw + kx * win.dw for ky in range(win.kh) for kx in range(win.kw)]
    acc = "\n            ".join(f"acc += w{t} * (int32_t)p[{off}];" for t, off in enumerate(offsets))

    def chunked(count: int, base: str, src: str) -> str:
        """Outputs base+0 .. base+count-1, output i's window at `src` (in terms of i)."""
        return f"""for (int j0 = 0; j0 < {count}; j0 += {CHUNK}) {{
          const int n = {count} - j0 < {CHUNK} ? {count} - j0 : {CHUNK};
          int8_t tmp[{CHUNK}];
          for (int j = 0; j < n; ++j) {{
            const int i = j0 + j;
            const int8_t *p = pl + ({src});
            int32_t acc = bf;
            {acc}
            tmp[j] = (int8_t){epilogue};
          }}
          memcpy(pl + {base}j0, tmp, (size_t)n);
        }}"""

    c_n = lay.ic
    # With a column stride, one run also computes the skipped columns: worth it only while rows
    # are too short to vectorize on their own (measured on x86-64 with AVX-512).
    if (win.sh * pw) % win.sw == 0 and (win.sw == 1 or win.ow < 24):
        r = win.sh * pw // win.sw
        compute = "        " + chunked((win.oh - 1) * r + win.ow, "", f"i * {win.sw}")
    else:
        r = win.ow
        compute = (f"        for (int oy = 0; oy < {win.oh}; ++oy) {{\n        "
                   + chunked(win.ow, f"oy * {win.ow} + ", f"oy * {win.sh * pw} + i * {win.sw}")
                   + "\n        }")
    if r == win.ow:
        scatter = f"""        for (int i = 0; i < {win.oh * win.ow}; ++i) yc[i * {c_n}] = pl[i];"""
    else:
        scatter = f"""        for (int oy = 0; oy < {win.oh}; ++oy) {{
          for (int ox = 0; ox < {win.ow}; ++ox) yc[(oy * {win.ow} + ox) * {c_n}] = pl[oy * {r} + ox];
        }}"""
    return f"""{compute}
        int8_t *restrict yc = yb + c;
{scatter}"""


# -- out of place, pixel by pixel -----------------------------------------------------------------

def _out_of_place_body(lay: Layout, syms: dict, epilogue: str, in_off: int) -> str:
    """Pixel by pixel; for each m, a loop over input channels k (contiguous reads) produces
    output channels k*M + m (stride-M stores, contiguous when M == 1)."""
    win, ic, m = lay.win, lay.ic, lay.mult
    W, taps = syms["w"], lay.taps
    if m == 1:
        head, close, mk = "{", "}", "k"
    else:
        head, close, mk = f"for (int m = 0; m < {m}; ++m) {{", "}", f"m * {ic} + k"
    out_index = "k" if m == 1 else f"k * {m} + m"

    def pixel(interior: bool) -> str:
        if interior:
            body = "\n          ".join(
                f"acc += (int32_t)wm[{(ky * win.kw + kx) * ic} + k] * (int32_t)xp[{(ky * win.dh * lay.iw + kx * win.dw) * ic} + k];"
                for ky in range(win.kh) for kx in range(win.kw))
            return f"""
      const int8_t *restrict xp = in0 + ((b * {lay.ih} + iy0) * {lay.iw} + ix0) * {ic};
      int8_t *restrict o = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {lay.oc};
      {head}
        const int8_t *wm = {W} + {'m * ' + str(taps * ic) if m > 1 else '0'};
        for (int k = 0; k < {ic}; ++k) {{
          const int mk = {mk};
          int32_t acc = {syms['bias_folded']}[mk];
          {body}
          o[{out_index}] = (int8_t){epilogue};
        }}
      {close}"""
        term = _offset_term(f"in0[((b * {lay.ih} + iy) * {lay.iw} + ix) * {ic} + k]", in_off)
        return f"""
      int8_t *o = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {lay.oc};
      {head}
        const int8_t *wm = {W} + {'m * ' + str(taps * ic) if m > 1 else '0'};
        for (int k = 0; k < {ic}; ++k) {{
          const int mk = {mk};
          int32_t acc = {syms['bias']}[mk];
          for (int ky = 0; ky < {win.kh}; ++ky) {{
            const int iy = iy0 + ky * {win.dh};
            if (iy < 0 || iy >= {lay.ih}) continue;
            for (int kx = 0; kx < {win.kw}; ++kx) {{
              const int ix = ix0 + kx * {win.dw};
              if (ix < 0 || ix >= {lay.iw}) continue;
              acc += (int32_t)wm[(ky * {win.kw} + kx) * {ic} + k] * {term};
            }}
          }}
          o[{out_index}] = (int8_t){epilogue};
        }}
      {close}"""

    # One loop nest per rectangle rather than an if per pixel: gcc's static profile calls the
    # body of such an if cold and then leaves it scalar.
    code = {True: pixel(True) if lay.has_interior else "", False: pixel(False) if lay.has_border else ""}
    code = {k: textwrap.indent(v, "  ") for k, v in code.items()}
    nests = "".join(f"""
    for (int oy = {y0}; oy < {y1}; ++oy) {{
      const int iy0 = oy * {win.sh} - {win.pt};
      for (int ox = {x0}; ox < {x1}; ++ox) {{
        const int ix0 = ox * {win.sw} - {win.pl};{code[inner]}
      }}
    }}""" for y0, y1, x0, x1, inner in output_regions(win))
    return f"""
  for (int b = 0; b < {lay.n}; ++b) {{{nests}
  }}"""



# -- in place on the Arm DSP extension ------------------------------------------------------------
#
# The same channel planes as above; each plane row of a window is read a word at a time. A word
# at plane offset b holds x[b..b+3]; sign-extending bytes 0/2 ("lo") and 1/3 ("hi") gives
# [x[b], x[b+2]] and [x[b+1], x[b+3]], so taps two plane columns apart form one dual MAC (SMLAD)
# against a [w, w'] pair packed once per channel, and the others use the half-word MACs
# (SMLA<x><y>). Two neighbouring outputs are computed together and share the words they both
# read. Results go straight to the output: the plane (and its zero-point ring) stays intact, so
# the ring is filled once per call.

@dataclass
class _Tap:
    """One multiply of an output's window row: x at plane offset `off` times weight `w`."""
    out: int          # 0 or 1: which output of the pair
    off: int          # plane offset from the pair's window start in this kernel row
    w: str            # C name of the register holding the weight (or weight pair)
    wh: str           # "b" / "t": weight half for single taps, "" for pairs


def _row_pairs(lay: Layout) -> tuple[list, list]:
    """Per kernel row, (pairs, singles) of kernel columns: a pair's taps are two plane columns
    apart, so one sign-extended half-word pair of the plane holds both."""
    win = lay.win
    kx_off = [kx * win.dw for kx in range(win.kw)]
    used, pairs_kx, singles_kx = set(), [], []
    for a in range(win.kw):
        if a in used:
            continue
        b = next((k for k in range(a + 1, win.kw) if k not in used and kx_off[k] == kx_off[a] + 2), None)
        if b is None:
            singles_kx.append(a)
            used.add(a)
        else:
            pairs_kx.append((a, b))
            used.update((a, b))
    return pairs_kx, singles_kx


@dataclass
class _WeightPlan:
    """Where each tap's weight sits in a channel's stored bytes and in which register.

    The in-place weights of a channel are stored permuted so that word m (bytes 4m..4m+3)
    sign-extends into two registers: bytes 4m / 4m+2 and 4m+1 / 4m+3. Each register holds two
    taps: a pair's (for SMLAD) or two single taps (one per half). Bytes past the last whole word
    are loaded one by one. The order depends on the kernel shape only."""
    perm: list        # perm[p]: the tap stored at byte p of a channel
    where: dict       # tap -> (register, half "b"/"t"); a pair's first tap names its register

    def setup(self, taps: int, two: bool, ind: str = "\n          ") -> str:
        words = taps // 4
        code = []
        for m in range(words):
            lo, hi = (f"(int32_t)__sadd16({f}(v{m}), {f}(v{m}))" if two else f"{f}(v{m})"
                      for f in ("te_sx02", "te_sx13"))
            code.append(f"const uint32_t v{m} = te_ld32(wc + {4 * m}); "
                        f"const int32_t wr{2 * m} = {lo}, wr{2 * m + 1} = {hi};")
        for p in range(4 * words, taps):
            code.append(f"const int32_t wb{p} = {'2 * ' if two else ''}wc[{p}];")
        return ind.join(code)


def _weight_plan(lay: Layout) -> _WeightPlan:
    kw, taps = lay.win.kw, lay.taps
    pairs_kx, singles_kx = _row_pairs(lay)
    pairs = [(ky * kw + a, ky * kw + b) for ky in range(lay.win.kh) for a, b in pairs_kx]
    singles = [ky * kw + k for ky in range(lay.win.kh) for k in singles_kx]
    regs = pairs + [tuple(singles[i:i + 2]) for i in range(0, len(singles) - 1, 2)]
    loose = [singles[-1]] if len(singles) % 2 else []
    slots = 2 * (taps // 4)
    for extra in regs[slots:]:            # no whole word left for them: byte by byte
        loose += list(extra)
    regs = regs[:slots]
    perm, where = [None] * taps, {}
    for k, (a, b) in enumerate(regs):
        m, h = divmod(k, 2)
        perm[4 * m + h], perm[4 * m + h + 2] = a, b
        where[a], where[b] = (f"wr{k}", "b"), (f"wr{k}", "t")
    for p, t in zip(range(4 * (taps // 4), taps), loose):
        perm[p] = t
        where[t] = (f"wb{p}", "b")
    assert sorted(perm) == list(range(taps)), perm
    return _WeightPlan(perm, where)


def _row_taps(lay: Layout, ky: int, nout: int, plan: _WeightPlan):
    """(pairs, singles) of kernel row ky for nout outputs: pairs multiply x[off], x[off + 2] by
    one register of two weights."""
    win = lay.win
    pairs_kx, singles_kx = _row_pairs(lay)
    pairs, singles = [], []
    for a, b in pairs_kx:
        ta, tb = ky * win.kw + a, ky * win.kw + b
        (ra, ha), (rb, hb) = plan.where[ta], plan.where[tb]
        for j in range(nout):
            if ra == rb and (ha, hb) == ("b", "t"):
                pairs.append(_Tap(j, j * win.sw + a * win.dw, ra, ""))
            else:                          # stored apart: two single taps
                singles.append(_Tap(j, j * win.sw + a * win.dw, ra, ha))
                singles.append(_Tap(j, j * win.sw + b * win.dw, rb, hb))
    for k in singles_kx:
        reg, h = plan.where[ky * win.kw + k]
        for j in range(nout):
            singles.append(_Tap(j, j * win.sw + k * win.dw, reg, h))
    return pairs, singles


def _cover_splitting(pairs, singles, cover):
    """cover(pairs, singles) -> (words, where), with every pair that no word can serve split
    into two single taps and the cover recomputed: (pairs, singles, words, where)."""
    words, where = cover(pairs, singles)
    extra = []
    for t in pairs:
        if id(t) not in where:
            extra += [_Tap(t.out, t.off, t.w, "b"), _Tap(t.out, t.off + 2, t.w, "t")]
    if extra:
        pairs = [t for t in pairs if id(t) in where]
        singles = singles + extra
        words, where = cover(pairs, singles)
    return pairs, singles, words, where


def _cover(pairs, singles, limit: int):
    """Choose words (plane offsets 0..limit-3, so no read passes the pair's last tap) and, for
    every tap, where its x comes from: ("w", base, "lo"/"hi", "b"/"t"/"") or ("b", off)."""
    def options(tap, pair):
        if pair:
            return [(tap.off, "lo", ""), (tap.off - 1, "hi", "")]
        return [(tap.off, "lo", "b"), (tap.off - 2, "lo", "t"), (tap.off - 1, "hi", "b"),
                (tap.off - 3, "hi", "t")]

    def fits(base):
        return 0 <= base <= limit - 3

    todo = [(t, True) for t in pairs] + [(t, False) for t in singles]
    words, where = [], {}
    while True:
        count = {}
        for t, pair in todo:
            if id(t) in where:
                continue
            for base, _, _ in options(t, pair):
                if fits(base):
                    count[base] = count.get(base, 0) + 1
        if not count:
            break
        best = max(sorted(count), key=lambda b: count[b])
        words.append(best)
        for t, pair in todo:
            if id(t) not in where:
                for base, half, pos in options(t, pair):
                    if base == best:
                        where[id(t)] = ("w", base, half, pos)
                        break
    return sorted(words), where


COVER_SEARCH = 9       # candidate words up to which _cover_min searches every set


def _cover_min(pairs, singles, lo: int, hi: int):
    """_cover with the fewest instructions rather than greedily: the set of words (each a load
    plus one extend per half it serves; bases lo..hi) and the byte loads of taps no word
    serves, searched over every set of candidate words (a dozen at most for 7-wide kernels)."""
    todo = list(pairs) + list(singles)
    words, where = _cover_min_of(tuple(t.off for t in pairs), tuple(t.off for t in singles), lo, hi)
    return list(words), {id(todo[i]): w for i, w in where.items()}


@functools.lru_cache(maxsize=4096)   # bounded like _ASM_SHAPES: NAS sweeps run for hours
def _cover_min_of(pair_offs: tuple, single_offs: tuple, lo: int, hi: int):
    """_cover_min on the taps' plane offsets alone (all it depends on): (words, {tap index:
    where}). Memoized, since the tile search asks for the same rows again and again, and a NAS
    sweep costs thousands of depthwise layers (uncached, this search was 95% of stage 1)."""
    from itertools import combinations

    def options(off, pair):
        if pair:
            return [(off, "lo", ""), (off - 1, "hi", "")]
        return [(off, "lo", "b"), (off - 2, "lo", "t"), (off - 1, "hi", "b"), (off - 3, "hi", "t")]

    todo = [(o, True) for o in pair_offs] + [(o, False) for o in single_offs]
    opts = [[o for o in options(t, pair) if lo <= o[0] <= hi] for t, pair in todo]
    cands = sorted({o[0] for os_ in opts for o in os_})
    if len(cands) > COVER_SEARCH:
        # Wide windows (7-wide kernels, 6-output tiles): greedily, the word serving most taps.
        where, words, left = {}, [], set(range(len(todo)))
        while True:
            count = {}
            for i in left:
                for o in opts[i]:
                    count[o[0]] = count.get(o[0], 0) + 1
            if not count:
                return sorted(words), where
            base = max(sorted(count), key=lambda b: count[b])
            words.append(base)
            for i in sorted(left):
                o = next((o for o in opts[i] if o[0] == base), None)
                if o is not None:
                    where[i] = ("w", o[0], o[1], o[2])
                    left.discard(i)
    best = None
    for k in range(len(cands) + 1):
        if best is not None and 2 * k >= best[0]:
            break
        for combo in combinations(cands, k):
            chosen = set(combo)
            halves, where, cost = set(), {}, 0
            order = sorted(range(len(todo)), key=lambda i: len([o for o in opts[i] if o[0] in chosen]))
            for i in order:
                pair = todo[i][1]
                mine = [o for o in opts[i] if o[0] in chosen]
                if not mine and pair:
                    # Both taps as single taps from halves of the chosen words: one MAC more
                    # (KWS's 7-byte rows: two words instead of three).
                    sub = [[o for o in options(todo[i][0] + d, False) if o[0] in chosen]
                           for d in (0, 2)]
                    if all(sub):
                        for os_ in sub:
                            o = next((o for o in os_ if (o[0], o[1]) in halves), os_[0])
                            halves.add((o[0], o[1]))
                        cost += 1
                        continue
                if not mine:
                    cost += 3 if pair else 1          # two byte loads and a MAC more / a byte load
                    continue
                o = next((o for o in mine if (o[0], o[1]) in halves), mine[0])
                halves.add((o[0], o[1]))
                where[i] = ("w", o[0], o[1], o[2])
            cost += k + len(halves)
            if best is None or cost < best[0]:
                best = (cost, sorted(combo), where)
    return best[1], best[2]


def _dsp_pair_code(lay: Layout, nout: int, two: bool) -> tuple[str, str]:
    """(per-channel weight setup, MACs of nout outputs whose windows start at pp)."""
    win = lay.win
    pw = lay.plane[1]
    plan = _weight_plan(lay)
    code = []
    for ky in range(win.kh):
        pairs, singles = _row_taps(lay, ky, nout, plan)
        limit = (nout - 1) * win.sw + (win.kw - 1) * win.dw
        pairs, singles, words, where = _cover_splitting(pairs, singles,
                                                        lambda p, s: _cover(p, s, limit))
        row = ky * win.dh * pw
        halves = {(where[id(t)][1], where[id(t)][2]) for t in pairs + singles if id(t) in where}
        for base in words:
            code.append(f"const uint32_t v{ky}_{base} = te_ld32(pp + {row + base});")
            for half, fn in (("lo", "te_sx02"), ("hi", "te_sx13")):
                if (base, half) in halves:
                    code.append(f"const int32_t {half}{ky}_{base} = {fn}(v{ky}_{base});")
        for t in pairs:
            _, base, half, _ = where[id(t)]
            code.append(f"a{t.out} = __smlad({half}{ky}_{base}, {t.w}, a{t.out});")
        for t in singles:
            if id(t) in where:
                _, base, half, pos = where[id(t)]
                code.append(f"a{t.out} = __smla{pos}{t.wh}({half}{ky}_{base}, {t.w}, a{t.out});")
            else:
                code.append(f"a{t.out} = __smlab{t.wh}((int32_t)pp[{row + t.off}], {t.w}, a{t.out});")
    return plan.setup(lay.taps, two), "\n            ".join(code)


# One asm statement per tile of NOUT outputs. gcc schedules the C version's loads early and, with
# the weights, multipliers and pointers all live, spills accumulators (measured: 36 instructions
# per 2 outputs of a 3x3 layer, 3 of them stack reloads). The asm keeps 4 accumulators, the word
# being extended, the pointers and a few weight registers, and reloads weight registers from a
# small per-channel stack array (LDRD: two registers per instruction) as the kernel rows need them.
ASM_REGS = 13          # r0-r12 and lr, less r7 (the frame pointer at -O0)
ASM_NOUT = 6           # outputs per tile (accumulators; 6 leave 2 weight registers)
ASM_ROWS = 4           # output rows per tile


_ASM_SHAPES: dict = {}   # window geometry and plane width -> _asm_shape's answer


def _asm_shape(lay: Layout, plan, tail: str | None = None) -> tuple | None:
    """_asm_shape_search, remembered: its answer depends only on the window's geometry, the
    plane's width (the weight plan follows from the kernel shape) and the requantization tail,
    and a NAS sweep asks for the same few hundred geometries across thousands of layers of
    different channel counts."""
    w = lay.win
    key = (w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.oh, w.ow, lay.plane[1], tail)
    if key not in _ASM_SHAPES:
        if len(_ASM_SHAPES) > 4096:
            _ASM_SHAPES.clear()
        _ASM_SHAPES[key] = _asm_shape_search(lay, plan, tail)
    return _ASM_SHAPES[key]


def _asm_shape_search(lay: Layout, plan, tail: str | None = None) -> tuple | None:
    """(ny, nx, tile) of the tile shape with the fewest instructions per channel: the tile's
    asm, about 4 per output for the requantization and store and 8 per tile for the loop and
    the multiplier reloads, times the tiles (the last of a row or column overlaps the one
    before, so a shape that does not divide the output recomputes some). Narrow outputs take
    whole rows or tall tiles (KWS's 25 x 5: rows of 5). With a tail, the tile's asm includes
    the requantization up to the clamp, leaving about 2 per output in C (clamp, store)."""
    win = lay.win
    best = None
    shapes = [(ny, nx) for ny in range(1, min(ASM_ROWS, win.oh) + 1)
              for nx in range(1, min(ASM_NOUT, win.ow) + 1) if ny * nx <= ASM_NOUT]
    # With a tail, also each shape in one register less: gcc then keeps its loop values in
    # registers around the asm (KWS's 1x5 tiles: 26 instructions per channel less).
    # (ASM_REGS, bias in a register) is left out with a tail: it has the weight registers of
    # (ASM_REGS - 1, bias loaded) and the penalty below, which outweighs that load.
    variants = ([(ASM_REGS - 1, False), (ASM_REGS, True), (ASM_REGS - 1, True)] if tail
                else [(ASM_REGS, False)])
    groups = {}
    for ny, nx, regs, bf_mem in [(ny, nx, *v) for ny, nx in shapes for v in variants]:
        if (ny, nx) not in groups:
            groups[ny, nx] = _tile_groups(lay, ny, nx, plan)
        tile = _dsp_asm_tile(lay, ny, nx, plan, tail, regs, bf_mem, groups[ny, nx])
        if tile is None:
            continue
        # A row whose last tile overlaps pays a clamped start per tile (gcc: about 12
        # instructions with the spills around it).
        clamp = 12 if win.ow % nx else 0
        rows, cols = -(-win.oh // ny), -(-win.ow // nx)
        if tile.tail:
            # Fitted to QEMU counts on VWW's and KWS's layers: a row that is one tile has
            # no inner loop (gcc drops it); otherwise about 5 + nout / 2 per tile (pointer
            # steps, the loop, the spills around a larger tile), 1.5 more where the asm takes
            # every register, and 8 per row of tiles.
            per_tile = ((0 if cols == 1 else 5 + ny * nx / 2 + clamp)
                        + (1.5 if tile.regs >= ASM_REGS else 0))
            cost = rows * (8 + cols * (tile.count + 2 * ny * nx + per_tile))
        else:
            cost = rows * cols * (tile.count + 4 * ny * nx + 8 + clamp)
        if best is None or cost < best[0]:
            best = (cost, ny, nx, tile)
    return None if best is None else best[1:]


@dataclass
class _AsmTile:
    loads: list        # weight registers in the order the asm loads them: wv[i] = loads[i]
    code: str          # the asm statement (declares and sets a0 .. a<nout-1>)
    count: int         # its instructions
    tail: str | None = None   # "pos"/"sign": a<j> leave as te_dsp_rq2(_pos) of the sums, with
                              # q, h, r read from wv[len(loads)] on
    regs: int = 0      # registers its operands take
    bf_mem: bool = False      # bf read from wv[len(loads) + 3] (after q, h, r)
    lines: tuple = ()         # the asm's instructions, for _row_tile_code's variant


def _dsp_asm_tile(lay: Layout, ny: int, nx: int, plan: _WeightPlan,
                  tail: str | None = None, regs: int = ASM_REGS,
                  bf_mem: bool = False, groups: list | None = None) -> _AsmTile | None:
    """The multiply-accumulates of ny x nx outputs (ny output rows of nx) whose first window
    starts at pp (a plane pointer) as one asm statement, accumulating onto bf (accumulator
    a<r * nx + j>); None where offsets or registers do not allow it. Output rows of a tile share
    the plane rows their windows overlap on: each plane word is loaded and extended once.
    groups: _tile_groups(lay, ny, nx, plan), where the caller has it already."""
    nout = ny * nx
    if groups is None:
        groups = _tile_groups(lay, ny, nx, plan)
    if max(g[1] for g in groups) > 4095:
        return None
    # accumulators, t/u, pp, wv, bf (bf_mem: read from wv after q, h, r into the accumulator
    # that starts last, which seeds the others; a register less for one load more)
    slots = regs - nout - 2 - (2 if bf_mem and tail else 3)
    if slots < 2:
        return None
    return _tile_asm(groups, nout, slots, tail, bf_mem)


def _tile_groups(lay: Layout, ny: int, nx: int, plan: _WeightPlan) -> list:
    """The tile's plane loads in order: (load instruction, plane offset, [(mnemonic, half, out,
    weight register)], plane row)."""
    win = lay.win
    pw = lay.plane[1]
    limit = (nx - 1) * win.sw + (win.kw - 1) * win.dw
    groups = []        # (load instruction, plane offset, [(mnemonic, half, out, weight reg)], row)
    last = (ny - 1) * win.sh + (win.kh - 1) * win.dh
    for prow in range(last + 1):
        # A word may start up to 3 bytes before the windows' row or end up to 3 bytes past it
        # (the bytes outside feed no multiply: pairs take both halves of taps, single taps one
        # half): before, except in the tile's first plane row (the plane's first byte for the
        # first tile); past, except in its last (the plane's last byte for the last tile).
        lo_b = max(-3, -prow * pw)
        hi_b = min(limit, (last - prow) * pw + limit - 3)
        pairs, singles = [], []
        for r in range(ny):
            for ky in range(win.kh):
                if r * win.sh + ky * win.dh == prow:
                    p_, s_ = _row_taps(lay, ky, nx, plan)
                    pairs += [_Tap(r * nx + t.out, t.off, t.w, t.wh) for t in p_]
                    singles += [_Tap(r * nx + t.out, t.off, t.w, t.wh) for t in s_]
        if not pairs and not singles:
            continue
        pairs, singles, words, where = _cover_splitting(
            pairs, singles, lambda p, s: _cover_min(p, s, lo_b, hi_b))
        row = prow * pw
        for base in words:
            ops = [("smlad", where[id(t)][2], t.out, t.w) for t in pairs if where[id(t)][1] == base]
            ops += [(f"smla{where[id(t)][3]}{t.wh}", where[id(t)][2], t.out, t.w)
                    for t in singles if id(t) in where and where[id(t)][1] == base]
            groups.append(("ldr", row + base, ops, prow))
        for t in singles:
            if id(t) not in where:
                groups.append(("ldrsb", row + t.off, [(f"smlab{t.wh}", "byte", t.out, t.w)], prow))
    return groups


def _tile_asm(groups: list, nout: int, slots: int, tail: str | None, bf_mem: bool):
    """_dsp_asm_tile's statement from its groups, with `slots` weight registers."""
    uses = [w for g in groups for _, _, _, w in g[2]]
    cache = {}                                 # slot -> weight register
    loads, lines, started = [], [], set()
    pos = 0                                    # index in uses of the next op

    def next_use(reg, after):
        return next((i for i in range(after, len(uses)) if uses[i] == reg), len(uses))

    rows = {}
    for gi, g in enumerate(groups):
        rows.setdefault(g[3], []).append(gi)
    first_of_row = {gis[0]: list(dict.fromkeys(w for gi in gis for _, _, _, w in groups[gi][2]))
                    for gis in rows.values()}
    seed = "%[bf]"
    if bf_mem and tail:
        first = {}
        for g in groups:
            for _, _, out, _ in g[2]:
                first.setdefault(out, len(first))
        holder = max(first, key=first.get)
        seed = f"%[a{holder}]"
        lines.append(f"ldr {seed}, [%[k], #BF]")
        started.add(holder)
    for gi, (kind, off, ops, _) in enumerate(groups):
        need = list(dict.fromkeys(w for _, _, _, w in ops))
        if len(need) > slots:
            return None
        # At a kernel row's start, load every register the row needs where they fit: the loads
        # then come in pairs.
        row_need = first_of_row.get(gi)
        if row_need is not None and len(row_need) <= slots:
            need = row_need
        pending = []
        for reg in need:
            if reg in cache.values():
                continue
            free = [s for s in range(slots) if s not in cache]
            if free:
                s = free[0]
            else:                              # Belady: evict the one used furthest ahead
                cands = [s for s in cache if cache[s] not in need]
                s = max(cands, key=lambda s: next_use(cache[s], pos))
            cache[s] = reg
            pending.append(s)
        # Consecutive loads read consecutive words of wv: LDRD takes two at a time.
        i = 0
        while i < len(pending):
            k = len(loads)
            if i + 1 < len(pending) and 4 * k <= 1020:
                lines.append(f"ldrd %[w{pending[i]}], %[w{pending[i + 1]}], [%[k], #{4 * k}]")
                loads += [cache[pending[i]], cache[pending[i + 1]]]
                i += 2
            else:
                lines.append(f"ldr %[w{pending[i]}], [%[k], #{4 * k}]")
                loads.append(cache[pending[i]])
                i += 1
        halves = {h for _, h, _, _ in ops}
        if kind == "ldrsb":
            lines.append(f"ldrsb %[t], [%[p], #{off}]")
            src = {"byte": "t"}
        else:
            lines.append(f"ldr %[t], [%[p], #{off}]")
            if halves == {"lo"}:
                lines.append("sxtb16 %[t], %[t]")
                src = {"lo": "t"}
            elif halves == {"hi"}:
                lines.append("sxtb16 %[t], %[t], ror #8")
                src = {"hi": "t"}
            else:
                lines += ["sxtb16 %[u], %[t]", "sxtb16 %[t], %[t], ror #8"]
                src = {"lo": "u", "hi": "t"}
        slot_of = {r: s for s, r in cache.items()}
        for mn, half, out, w in ops:
            acc = f"%[a{out}]"
            ra = acc if out in started else seed
            started.add(out)
            lines.append(f"{mn} {acc}, %[{src[half]}], %[w{slot_of[w]}], {ra}")
            pos += 1
    if tail is not None:
        # te_dsp_rq2(_pos) here rather than in C: the asm's last registers are free by now, while
        # in C q, h and r stay live across the tile loop and gcc reloads them from the stack
        # every tile. The clamp and stores stay in C (one instruction each either way).
        k = len(loads)
        if 4 * k > 1020 or slots < 2:
            return None
        lines = [ln.replace("#BF]", f"#{4 * k + 12}]") for ln in lines]
        lines += [f"ldrd %[t], %[u], [%[k], #{4 * k}]", f"ldr %[w0], [%[k], #{4 * k + 8}]"]
        for j in range(nout):
            if tail == "pos":
                lines.append(f"smmlar %[a{j}], %[a{j}], %[t], %[u]")
            else:                              # + (acc2 >> 31): the sign term, before the shift
                lines += [f"smmlar %[w1], %[a{j}], %[t], %[u]",
                          f"add %[a{j}], %[w1], %[a{j}], asr #31"]
            lines.append(f"asr %[a{j}], %[a{j}], %[w0]")
    used_slots = [s for s in range(slots) if any(f"%[w{s}]" in ln for ln in lines)]
    uses_u = any("%[u]" in ln for ln in lines)
    return _AsmTile(loads, _asm_statement(lines, nout, False), len(lines), tail,
                    nout + 1 + uses_u + len(used_slots) + (3 if seed == "%[bf]" else 2),
                    seed != "%[bf]", tuple(lines))


def _asm_statement(lines, nout: int, row: bool) -> str:
    """The C of a tile's asm: accumulators a0 .. a<nout-1> declared for the stores after it, or
    (row: _row_tile_code's form, which stores them itself) scratch like the other temporaries,
    with the plane and output pointers stepped by the asm."""
    used_slots = sorted({int(m) for ln in lines for m in re.findall(r"%\[w(\d+)\]", ln)})
    uses_u = any("%[u]" in ln for ln in lines)
    outs = ([f'[a{j}] "=&r"(a{j})' for j in range(nout)] + ['[t] "=&r"(x_t)']
            + (['[u] "=&r"(x_u)'] if uses_u else []) + [f'[w{s}] "=&r"(x_w{s})' for s in used_slots])
    temps = ["x_t"] + (["x_u"] if uses_u else []) + [f"x_w{s}" for s in used_slots]
    accs = [f"a{j}" for j in range(nout)]
    ins = '[k] "r"(wv)' if row else '[p] "r"(pp), [k] "r"(wv)'
    if any("%[bf]" in ln for ln in lines):
        ins += ', [bf] "r"(bf)'
    if row:
        outs += ['[p] "+r"(pp)', '[y] "+r"(yo)']
    sep = "\\n\\t"
    head = "" if row else f"int32_t {', '.join(accs)};\n            "
    return (f"{head}{{ int32_t {', '.join((accs if row else []) + temps)};\n              "
            f"__asm__{' volatile' if row else ''}(\"{sep.join(lines)}\"\n                : {', '.join(outs)}\n"
            f"                : {ins} : \"memory\"); }}")


def _row_tile_code(tile: _AsmTile, ny: int, nx: int, ow: int, step: int, stride: int) -> str | None:
    """A tile as an asm that also clamps and stores its outputs (the output pointer
    post-incremented by the channel stride along the tile's first row) and steps the plane
    pointer on a post-indexed load at offset 0 (the first window's first tap): by `step`, the
    next tile's start. The C loops around it keep only their counters and a step per row of
    tiles (2 instructions a tile less: gcc stepped both pointers and compared one). None where
    an immediate would not fit or the output pointer would take a register too many."""
    if (tile.regs + 1 > ASM_REGS or not 0 < step <= 255
            or ((ny - 1) * ow + nx) * stride > 4095):
        return None
    lines, stepped = [], False
    for ln in tile.lines:
        m = re.fullmatch(r"(ldr|ldrsb) (%\[\w+\]), \[%\[p\], #(-?\d+)\]", ln)
        if m and stepped:
            off = int(m[3]) - step
            if off < -255:
                return None
            ln = f"{m[1]} {m[2]}, [%[p], #{off}]"
        elif m and int(m[3]) == 0:
            ln, stepped = f"{m[1]} {m[2]}, [%[p]], #{step}", True
        lines.append(ln)
    if not stepped:       # the first window's first tap is at offset 0: not seen
        return None
    outs = [(r, j) for r in range(1, ny) for j in range(nx)] + [(0, j) for j in range(nx)]
    for r, j in outs:
        a = f"%[a{r * nx + j}]"
        lines.append(f"ssat {a}, #8, {a}")
        # Post-incremented by at most 255; beyond (VWW's 256 channels), offsets and one add.
        if r or stride > 255:
            lines.append(f"strb {a}, [%[y], #{(r * ow + j) * stride}]")
        else:
            lines.append(f"strb {a}, [%[y]], #{stride}")
    if stride > 255:
        lines.append(f"add %[y], %[y], #{nx * stride}")
    return _asm_statement(lines, ny * nx, True)


def _dsp_tile_parts(lay: Layout, rq, tables, epilogue: str, records=None) -> tuple:
    """(ny, nx, weight set-up, tile MACs, requantization set-up, stores) of the DSP branch: the
    same for the whole plane and for bands (depthwise_band). records: a _StoredRecords, for
    tiles that read records to take them from a constant array."""
    win, c_n = lay.win, lay.ic
    # A doubled layer packs 2 w (int16 holds it), so its accumulators hold 2 * acc.
    two = rq.doubled
    plan = _weight_plan(lay)
    per_channel = tables[0] is not None
    best = _asm_shape(lay, plan, ("pos" if rq.positive else "sign") if two else None)
    if best is not None:
        ny, nx, tile = best
        # The weight registers, in the order the tile's asm loads them (some more than once),
        # then the requantization's q, h, r where the asm applies it.
        wv = list(tile.loads)
        if tile.tail:
            setup = (records.declare(plan, wv, not tile.bf_mem) if records is not None
                     else _records_call(lay, plan, rq, tables, wv))
        else:
            setup = (plan.setup(lay.taps, two)
                     + f"\n        const int32_t wv[{len(wv)}] = {{{', '.join(wv)}}};")
        macs = f"/* asm tile {ny}x{nx}{' rq' if tile.tail else ''} */\n            {tile.code}"
        if tile.tail:
            outs = [(r, j) for r in range(ny) for j in range(nx)]
            store = "\n            ".join(
                f"yo[({r * win.ow} + ox + {j}) * {c_n}] = (int8_t){rq.finish(f'a{r * nx + j}')};"
                for r, j in outs)
            return ny, nx, setup, macs, "", store
    else:
        ny, nx = 1, min(2, win.ow)
        setup, macs = _dsp_pair_code(lay, nx, two)
        macs = f"int32_t {', '.join(f'a{j} = bf' for j in range(nx))};\n            {macs}"
    outs = [(r, j) for r in range(ny) for j in range(nx)]
    if rq.ok:
        rsetup = rq.setup("", "c", *tables)
        store = "\n            ".join(
            f"yo[({r * win.ow} + ox + {j}) * {c_n}] = (int8_t){rq.expr(f'a{r * nx + j}', '', per_channel, two)};"
            for r, j in outs)
    else:
        rsetup = ""
        store = "\n            ".join(
            f"{{ const int32_t acc = a{r * nx + j}; yo[({r * win.ow} + ox + {j}) * {c_n}] = (int8_t){epilogue}; }}"
            for r, j in outs)
    return ny, nx, setup, macs, rsetup, store


def _records_call(lay: Layout, plan: _WeightPlan, rq, tables, loads: list) -> str:
    """The declaration of wv, a channel's records in the order the tile's asm loads them (its
    weight registers, then q, h, r and the folded bias, which the asm may read from memory), and
    the call of the helper that fills it. The helper's text depends on the kernel shape, the
    tile's load order and the requantization's form, not on the layer's sizes: VWW's 3x3 layers
    fill theirs with one function (some 110 bytes a layer of code otherwise, for a call of
    about 10 instructions a channel)."""
    per_channel = tables[0] is not None
    values = loads + [f"(int32_t){v}" for v in rq.tail_values(per_channel)] + ["bf"]
    params = ["int32_t *wv", "const int8_t *wc", "int32_t bf"]
    args = ["wv", "wc", "bf"]
    if per_channel:
        params += ["const int32_t *mt", "const int8_t *sh", "int c"]
        args += [tables[0], tables[1], "c"]
    rsetup = rq.setup("", "c", "mt", "sh") if per_channel else ""
    stores = " ".join(f"wv[{i}] = {v};" for i, v in enumerate(values))
    body = (f"\n  {plan.setup(lay.taps, rq.doubled, ind=chr(10) + '  ')}"
            + (f"\n  {rsetup}" if rsetup else "") + f"\n  {stores}")
    token = helper("DEPTHWISE_CONV_2D", ", ".join(params), body, "TE_DSP")
    return f"int32_t wv[{len(values)}];\n        {token}({', '.join(args)});"


class _StoredRecords:
    """A layer's records (what _records_call's helper fills: the tile's weight registers in its
    load order, q, h, r, the folded bias) computed here for every channel and stored as one
    constant array, which convert(flash=...) chooses where the Flash budget has room: no fill
    at run time, about RECORD_FILL instructions a channel less."""

    def __init__(self, ctx: EmitContext, weights, folded, rq):
        self.ctx, self.weights, self.folded, self.rq = ctx, np.asarray(weights, np.int64), folded, rq
        self.symbol = None

    def declare(self, plan: _WeightPlan, loads: list, bf_operand: bool) -> str:
        """wv, channel c's records; bf_operand: the tile takes the folded bias as an operand."""
        rq, oc = self.rq, len(self.folded)
        wc = self.weights.reshape(oc, -1)
        taps = wc.shape[1]
        regs = {}
        for m in range(taps // 4):      # te_sx02 / te_sx13 of word m, doubled: _WeightPlan.setup
            regs[f"wr{2 * m}"] = _pack16(2 * wc[:, 4 * m], 2 * wc[:, 4 * m + 2])
            regs[f"wr{2 * m + 1}"] = _pack16(2 * wc[:, 4 * m + 1], 2 * wc[:, 4 * m + 3])
        for p in range(4 * (taps // 4), taps):
            regs[f"wb{p}"] = 2 * wc[:, p]
        q = np.broadcast_to(rq.q, (oc,)).astype(np.int64)
        r = np.broadcast_to(-rq.shift, (oc,)).astype(np.int64)
        h = np.array([rq.rounding(int(v)) for v in r], np.int64)
        columns = [regs[name] for name in loads] + [q, h, r, 2 * np.asarray(self.folded, np.int64)]
        table = np.stack(columns, axis=1)
        table = ((table + 2**31) % 2**32) - 2**31       # int32 as the C stores wrap them
        self.symbol = self.ctx.const("records", table.ravel(), "int32_t")
        n = table.shape[1]
        return (f"const int32_t *const wv = {self.symbol} + c * {n};"
                + (f" const int32_t bf = wv[{n - 1}];" if bf_operand else ""))


def _pack16(lo, hi):
    """Two int16 halves in one int32 (lo in bits 0-15), as SMLAD reads them."""
    return (np.asarray(lo, np.int64) & 0xFFFF) | (np.asarray(hi, np.int64) << 16)


def _channel_values(lay: Layout, syms: dict, two: bool, records, tables,
                    ind: str = "\n        ") -> str:
    """The declarations of channel c's weights and folded bias; where the tiles take their
    records from a stored array, which holds all of them, the arrays only the portable branch
    reads marked used instead (-Wunused-const-variable)."""
    if records is not None and records.symbol:
        return ind + " ".join(f"(void){u};" for u in _portable_only(syms, tables))
    bf = f"(int32_t)((uint32_t){syms['bias_folded']}[c] << 1)" if two else f"{syms['bias_folded']}[c]"
    return f"{ind}const int8_t *wc = {syms['w']} + c * {lay.taps};{ind}const int32_t bf = {bf};"


def _portable_only(syms: dict, tables) -> list:
    """The arrays of a layer with stored records that only its portable branch reads."""
    return [syms["w"], syms["bias_folded"], *(t for t in tables if t is not None)]


def _mark_branches(ctx: EmitContext, records, syms: dict, tables):
    """Which branch alone reads which array, for a layer whose tiles took stored records: a
    build of the other branch does not link it (firmware.code_beyond_weights)."""
    if records is not None and records.symbol:
        ctx.branch_only.update({u: "portable" for u in _portable_only(syms, tables)})
        ctx.branch_only[records.symbol] = "dsp"


def _records_unused(records) -> str:
    # The portable branch reads the weights and tables instead: the records must still count
    # as used there, or -Wunused-const-variable fails the build.
    return f"\n  (void){records.symbol};" if records is not None and records.symbol else ""


def _dsp_in_place_body(lay: Layout, syms: dict, rq, tables, epilogue: str, x_zp: int,
                       records=None) -> str:
    win, c_n = lay.win, lay.ic
    ph, pw = lay.plane
    two = rq.doubled
    ny, nx, setup, macs, rsetup, store = _dsp_tile_parts(lay, rq, tables, epilogue, records)
    ring = (ph, pw) != (lay.ih, lay.iw)
    zp4 = (x_zp & 0xFF) * 0x01010101
    fill = ""
    if ring:    # asm loops: a memset call would escape the layer's instruction count
        if ph * pw >= 4:
            fill = f"\n  te_dsp_fill4(scratch, 0x{zp4:08x}u, {ph * pw // 4});"
        # The last 1-3 bytes as plain stores: smaller than a loop.
        for i in range(ph * pw // 4 * 4, ph * pw):
            fill += f"\n  scratch[{i}] = (int8_t){x_zp};"
    if ring and lay.iw <= GATHER_ROW_UNROLL and (c_n <= 255 or lay.iw * c_n <= 4095):
        gather = _dsp_gather_rows(lay.ih, lay.iw, c_n, f"scratch + {win.pt * pw + win.pl}", pw)
    elif ring and c_n <= 255 and _wide_step(lay.iw):
        gather = _dsp_gather_rows_wide(lay.ih, lay.iw, c_n, f"scratch + {win.pt * pw + win.pl}", pw)
    elif ring:
        gather = f"""for (int iy = 0; iy < {lay.ih}; ++iy) {{
        int8_t *d = scratch + (iy + {win.pt}) * {pw} + {win.pl};
        const int8_t *s = xb + iy * {lay.iw * c_n} + c;{_dsp_gather(lay.iw, c_n)}
      }}"""
    else:
        gather = f"""{{
        int8_t *d = scratch;
        const int8_t *s = xb + c;{_dsp_gather(ph * pw, c_n)}
      }}"""
    npairs = -(-win.ow // nx)
    nrows = -(-win.oh // ny)
    row_tile = None
    best = _asm_shape(lay, _weight_plan(lay), ("pos" if rq.positive else "sign") if two else None)
    if (best is not None and best[2].tail and win.ow % nx == 0 and win.oh % ny == 0
            and rq.finish("v") == "__ssat(v, 8)"):
        # A row of one tile steps the plane pointer to the next row; of several, to the next
        # tile, the rest of the row's step added after the row.
        one = npairs == 1 and ny == 1
        row_tile = _row_tile_code(best[2], ny, nx, win.ow, win.sh * pw if one else nx * win.sw,
                                  c_n)
    if row_tile is not None and npairs == 1 and ny == 1:
        tiles = f"""const int8_t *pp = scratch;
        int8_t *yo = yb + c;
        for (int i_y = 0; i_y < {nrows}; ++i_y) {{
          /* asm tile 1x{nx} rq, row */
          {row_tile}
        }}"""
    elif row_tile is not None:
        # The asm steps yo along the tiles' first output row; the others follow it.
        yo_step = f"\n          yo += {(ny - 1) * win.ow * c_n};" if ny > 1 else ""
        tiles = f"""const int8_t *pp = scratch;
        int8_t *yo = yb + c;
        for (int i_y = 0; i_y < {nrows}; ++i_y) {{
          for (int i = 0; i < {npairs}; ++i) {{
            /* asm tile {ny}x{nx} rq, steps */
            {row_tile}
          }}
          pp += {ny * win.sh * pw - win.ow * win.sw};{yo_step}
        }}"""
    else:
        tiles = f"""for (int i_y = 0; i_y < {nrows}; ++i_y) {{
          {dsp.tile_start("oy", "i_y", win.oh, ny)}
          const int8_t *pr = scratch + oy * {win.sh * pw};
          int8_t *yo = yb + oy * {win.ow * c_n} + c;
          for (int i = 0; i < {npairs}; ++i) {{
            {dsp.tile_start("ox", "i", win.ow, nx)}
            const int8_t *pp = pr + ox * {win.sw};
            {macs}
            {store}
          }}
        }}"""
    return f"""{fill}
  for (int b = 0; b < {lay.n}; ++b) {{
    const int8_t *xb = in0 + b * {lay.ih * lay.iw * c_n};
    int8_t *yb = out0 + b * {win.oh * win.ow * c_n};
    for (int c = 0; c < {c_n}; ++c) {{
      {gather}
      {{{_channel_values(lay, syms, two, records, tables)}
        {setup}
        {rsetup}
        {tiles}
      }}
    }}
  }}"""


GATHER_ROW_UNROLL = 24  # input rows up to this wide are written out in one asm loop over rows
GATHER_SHORT_ROW = 8    # rows up to this wide are written out several a step of that loop,
GATHER_STEP_ROWS = 5    # at most this many


def _dsp_gather_rows(ih: int, iw: int, stride: int, dst: str, pw: int) -> str:
    """The channel's ih rows of iw bytes (stride apart in the input, rows contiguous there) into
    plane rows pw apart: one asm loop over rows, each row written out (whole words packed from
    four LDRBs, then single bytes). Narrow rows would otherwise pay a loop set-up and a C
    remainder loop per row: 13 instructions per 5-byte row instead of about 20."""
    body = []
    post = stride <= 255          # LDRB post-increments by at most 255; beyond, offsets

    def ld(t, k):
        return f"ldrb %[{t}], [%[s]], #{stride}" if post else f"ldrb %[{t}], [%[s], #{k * stride}]"
    for k in range(iw // 4):
        body += [ld(f"t{j}", 4 * k + j) for j in range(4)]
        body += [f"orr %[t0], %[t0], %[t{j}], lsl #{8 * j}" for j in (1, 2, 3)]
        body.append("str %[t0], [%[d]], #4")
    for k in range(4 * (iw // 4), iw):
        body += [ld("t0", k), "strb %[t0], [%[d]], #1"]
    if not post:
        body.append(f"add %[s], %[s], #{iw * stride}")
    if pw > iw:
        # The step to the next plane row rides on the row's last store (one instruction a row).
        last = max(i for i, ln in enumerate(body) if ln.startswith("str"))
        step = int(body[last].rsplit("#", 1)[1]) + pw - iw
        if step <= 255:
            body[last] = f"{body[last].rsplit('#', 1)[0]}#{step}"
        else:
            body.append(f"add %[d], %[d], #{pw - iw}")
    # Short rows (the loop's 2 instructions a sixth of the row or more) several a step: KWS's
    # 25 rows of 5 bytes 5 a step, VWW's 6 rows of 6 bytes 3, its 3 rows of 3 without a loop
    # (about 100 bytes of code for each of these functions).
    unroll = 1
    if iw <= GATHER_SHORT_ROW:
        unroll = max(k for k in range(1, min(ih, GATHER_STEP_ROWS) + 1) if ih % k == 0)
    body = body * unroll
    sep = "\\n\\t"
    temps = ["t0"] + ([f"t{j}" for j in (1, 2, 3)] if iw >= 4 else [])
    outs = ", ".join(f'[{t}] "=&r"({t})' for t in temps)
    if unroll == ih:
        return f"""{{
        int8_t *d = {dst};
        const int8_t *s = xb + c;
        uint32_t {', '.join(temps)};
        __asm__ volatile("{sep.join(body)}"
                : [s] "+r"(s), [d] "+r"(d), {outs} : : "memory");
      }}"""
    body += ["subs %[n], %[n], #1", "bne 1b"]
    return f"""{{
        int8_t *d = {dst};
        const int8_t *s = xb + c;
        int n = {ih // unroll};
        uint32_t {', '.join(temps)};
        __asm__ volatile("1:{sep}{sep.join(body)}"
                : [s] "+r"(s), [d] "+r"(d), [n] "+r"(n), {outs} : : "cc", "memory");
      }}"""


def _wide_step(iw: int) -> int:
    """Bytes per step of _dsp_gather_rows_wide's inner loop; 0 where its count would not fit a
    MOV immediate. Rows of 32 bytes and more whose remainder needs no 8-byte block take 16 bytes
    a step (the loop's two instructions over twice the bytes; VWW's 48-byte rows)."""
    step = 16 if iw >= 32 and iw % 16 < 8 else 8
    return step if 1 <= iw // step <= 255 else 0


def _dsp_gather_rows_wide(ih: int, iw: int, stride: int, dst: str, pw: int) -> str:
    """_dsp_gather_rows for rows too wide to write out: an inner loop of 8 or 16 bytes a step (as
    _dsp_gather), the row's last bytes written out, the next plane row reached on the last
    store. One asm loop over rows: a C loop over them paid about 8 instructions a row."""
    assert stride <= 255 and iw >= 8
    word = ["ldrb %[t{0}], [%[s]], #" + str(stride)] * 4

    def pack(a, b, c, e):
        return ([w.format(x) for w, x in zip(word, (a, b, c, e))]
                + [f"orr %[t{a}], %[t{a}], %[t{b}], lsl #8", f"orr %[t{a}], %[t{a}], %[t{c}], lsl #16",
                   f"orr %[t{a}], %[t{a}], %[t{e}], lsl #24"])
    step = _wide_step(iw)
    body = [f"mov %[m], #{iw // step}", "2:"]
    for _ in range(step // 8):
        body += pack(0, 1, 2, 3) + pack(1, 2, 3, 4)
        body += ["str %[t1], [%[d], #4]", "str %[t0], [%[d]], #8"]
    body += ["subs %[m], %[m], #1", "bne 2b"]
    tail = []
    if iw % 8 >= 4:
        tail += pack(0, 1, 2, 3) + ["str %[t0], [%[d]], #4"]
    for _ in range(iw % 4):
        tail += [word[0].format(0), "strb %[t0], [%[d]], #1"]
    if pw > iw and tail and int(tail[-1].rsplit("#", 1)[1]) + pw - iw <= 255:
        # The step to the next plane row rides on the row's last store.
        tail[-1] = f"{tail[-1].rsplit('#', 1)[0]}#{int(tail[-1].rsplit('#', 1)[1]) + pw - iw}"
    elif pw > iw:
        tail.append(f"add %[d], %[d], #{pw - iw}")
    body += tail + ["subs %[n], %[n], #1", "bne 1b"]
    sep = "\\n\\t"
    return f"""{{
        int8_t *d = {dst};
        const int8_t *s = xb + c;
        int n = {ih}, m;
        uint32_t t0, t1, t2, t3, t4;
        __asm__ volatile("1:{sep}{sep.join(body)}"
                : [s] "+r"(s), [d] "+r"(d), [n] "+r"(n), [m] "=&r"(m), [t0] "=&r"(t0),
                  [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4) : : "cc", "memory");
      }}"""


def _dsp_gather(n: int, stride: int) -> str:
    """d[0..n) = s[0], s[stride], ...: four bytes packed into one word store per step, loaded
    with post-incrementing LDRB (an asm loop: gcc adds an address update per byte)."""
    code = ""
    ld = [f"ldrb %[t{k}], [%[s]], #{stride}" for k in range(5)]
    pack = ["orr %[{0}], %[{0}], %[{1}], lsl #8", "orr %[{0}], %[{0}], %[{2}], lsl #16",
            "orr %[{0}], %[{0}], %[{3}], lsl #24"]

    def word(a, b, c, e):
        return [ld[int(x[1])] for x in (a, b, c, e)] + [p.format(a, b, c, e) for p in pack]
    if n >= 8 and stride <= 255:
        # Eight bytes per step (18 instructions, against 20 for two steps of four).
        sep = "\\n\\t"
        body = (word("t0", "t1", "t2", "t3") + word("t1", "t2", "t3", "t4")
                + ["str %[t1], [%[d], #4]", "str %[t0], [%[d]], #8", "cmp %[d], %[e]", "bne 1b"])
        code += f"""
        {{
          int8_t *const e = d + {8 * (n // 8)};
          uint32_t t0, t1, t2, t3, t4;
          __asm__ volatile("1:{sep}{sep.join(body)}"
                  : [s] "+r"(s), [d] "+r"(d), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                    [t3] "=&r"(t3), [t4] "=&r"(t4)
                  : [e] "r"(e) : "cc", "memory");
        }}"""
        if n % 8 >= 4:
            body = word("t0", "t1", "t2", "t3") + ["str %[t0], [%[d]], #4"]
            code += f"""
        {{
          uint32_t t0, t1, t2, t3;
          __asm__ volatile("{sep.join(body)}"
                  : [s] "+r"(s), [d] "+r"(d), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                    [t3] "=&r"(t3) : : "memory");
        }}"""
        n %= 4
    elif n >= 4 and stride <= 255:
        code += f"""
        {{
          int8_t *const e = d + {4 * (n // 4)};
          uint32_t t0, t1, t2, t3;
          __asm__ volatile("1:\\n\\t"
                  "ldrb %[t0], [%[s]], #{stride}\\n\\t"
                  "ldrb %[t1], [%[s]], #{stride}\\n\\t"
                  "ldrb %[t2], [%[s]], #{stride}\\n\\t"
                  "ldrb %[t3], [%[s]], #{stride}\\n\\t"
                  "orr %[t0], %[t0], %[t1], lsl #8\\n\\t"
                  "orr %[t0], %[t0], %[t2], lsl #16\\n\\t"
                  "orr %[t0], %[t0], %[t3], lsl #24\\n\\t"
                  "str %[t0], [%[d]], #4\\n\\t"
                  "cmp %[d], %[e]\\n\\t"
                  "bne 1b"
                  : [s] "+r"(s), [d] "+r"(d), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                    [t3] "=&r"(t3)
                  : [e] "r"(e) : "cc", "memory");
        }}"""
    elif n >= 4:
        offs = [f"(uint32_t)(uint8_t)s[{k * stride}]" + (f" << {8 * k}" if k else "") for k in range(4)]
        code += f"""
        for (int i = 0; i < {n // 4}; ++i) {{
          const uint32_t v = {' | '.join(f'({o})' if k else o for k, o in enumerate(offs))};
          memcpy(d, &v, 4);
          d += 4;
          s += {4 * stride};
        }}"""
    if n % 4:
        code += f"""
        for (int i = 0; i < {n % 4}; ++i) d[i] = s[i * {stride}];"""
    return code
