"""AVERAGE_POOL_2D and MAX_POOL_2D (int8, and int16 in 16x8 models: the same recipe in the int16
range): any filter size and stride, SAME or VALID, fused activation.

TFLite Micro does not requantize pooling: it requires the input and output scales to agree within
1e-6 and the zero points to be equal, and so do we. Average: the sum of the in-bounds taps divided
by their count, rounded half away from zero. Max: the largest in-bounds tap. Both then clamp to
the fused activation's range (computed from the output's scale and zero point).

Interior pixels (whole window in bounds) run with the tap count and offsets as literals and the
channel loop innermost and contiguous; border pixels clip the window and divide by the count of
taps that remain. No constant arrays and no scratch: the footprint is (0, 0).

On Cortex-M cores with the DSP extension an int8 average's interior pixels of up to 256 taps take
an ``#if TE_DSP`` branch (_dsp_average): about one instruction per input byte instead of six.
"""
from __future__ import annotations

from tinyengine_tf.ir import Graph, Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE
from tinyengine_tf.kernels.depthwise import ACTIVATIONS
from tinyengine_tf.kernels.geometry import Window, output_regions
from tinyengine_tf import quant

# Windows up to this many taps are unrolled; larger ones loop over rows and columns.
UNROLL_TAPS = 64
# Channels accumulated together on the stack (int32 each) by the looped form.
CHANNEL_BLOCK = 64


def footprint(op: Op, g: Graph) -> tuple[int, int]:
    """Pooling bakes everything into literals and needs no scratch, whatever the shapes."""
    return 0, 0


INT16_MAX_TAPS = (1 << 31) // 32768 - 1   # an int32 sum of int16 taps stays exact


def _window(op: Op, ctx: EmitContext):
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    if x.dtype == "int16" and y.dtype == "int16":
        if not (x.quantized and y.quantized):
            raise ctx.unsupported(op, "int16 pooling needs quantized input and output",
                                  FIX_QUANTIZE)
    else:
        ctx.require_int8(op, x, y)
    ctx.require_per_tensor(op, x, y)
    if len(x.shape) != 4 or len(y.shape) != 4:
        raise ctx.unsupported(op, "input and output must be 4-D (NHWC)")
    n, ih, iw, c = x.shape
    if y.shape[0] != n or y.shape[3] != c:
        raise ctx.unsupported(op, f"output {list(y.shape)} does not match input {list(x.shape)}")
    # Same test as TFLite Micro's PoolingPrepare: float32 scales compared as doubles.
    if abs(x.s - y.s) > 1e-6 or x.zp != y.zp:
        raise ctx.unsupported(op, f"input ({x.describe()}) and output ({y.describe()}) quantization "
                                  "differ; TFLite Micro requires equal scale and zero point for int8 "
                                  "pooling", "Re-export the model (the converter keeps them equal)")
    o = op.options
    kh, kw = int(o.get("filter_height", 0)), int(o.get("filter_width", 0))
    if kh < 1 or kw < 1:
        raise ctx.unsupported(op, f"filter size {kh}x{kw} must be positive")
    # A patch's border padding (passes/patches.py) is the image's own SAME padding, taps skipped
    # and not counted; a PAD op's would be counted, which this kernel does not do.
    if o.get("pad_extra") and not o.get("border_padding"):
        raise ctx.unsupported(op, "explicit padding cannot be folded into pooling")
    win = Window.from_op(op, ih, iw, kh, kw, y.shape[1], y.shape[2])
    if _empty_window(win):
        raise ctx.unsupported(op, "a pooling window lies entirely in the padding (TFLite Micro "
                                  "fails on it)")
    act = o.get("fused_activation_function") or "NONE"
    if act not in ACTIVATIONS:
        raise ctx.unsupported(op, f"fused activation {act} is not supported by TFLite Micro's int8 "
                                  "kernels", "Use a separate activation layer")
    if y.dtype == "int16":
        if kh * kw > INT16_MAX_TAPS:
            raise ctx.unsupported(op, f"a {kh}x{kw} window of int16 values can overflow int32",
                                  "Use a smaller pooling window")
        lo, hi = quant.activation_range(act, y.s, y.zp, -32768, 32767)
    else:
        lo, hi = quant.activation_range(act, y.s, y.zp)
    return n, c, win, lo, hi


def _empty_window(win: Window) -> bool:
    rows = any(min(win.kh, win.ih - (oy * win.sh - win.pt)) <= max(0, win.pt - oy * win.sh)
               for oy in range(win.oh))
    cols = any(min(win.kw, win.iw - (ox * win.sw - win.pl)) <= max(0, win.pl - ox * win.sw)
               for ox in range(win.ow))
    return rows or cols


def _unrolled(kind: str, win: Window, c: int, lo: int, hi: int, ct: str = "int8_t") -> str:
    """Interior pixel, small window: taps as literal offsets, channels innermost."""
    offs = [(ky * win.iw + kx) * c for ky in range(win.kh) for kx in range(win.kw)]
    if kind == "AVERAGE_POOL_2D":
        reduce = "int32_t acc = " + " + ".join(f"(int32_t)xp[{off} + ch]" for off in offs) + ";"
    else:
        reduce = "\n          ".join([f"int32_t acc = xp[{offs[0]} + ch];"] + [
            f"acc = xp[{off} + ch] > acc ? xp[{off} + ch] : acc;" for off in offs[1:]])
    return f"""
        for (int ch = 0; ch < {c}; ++ch) {{
          {reduce}
          {_finish(kind, "acc", str(win.kh * win.kw), lo, hi, "o[ch]", ct)}
        }}"""


def _chunked(kind: str, win: Window, c: int, lo: int, hi: int, rows: str, cols: str,
             count: str, ct: str = "int8_t") -> str:
    """Any window: per block of channels, int32 accumulators on the stack, taps in loops."""
    block = min(c, CHANNEL_BLOCK)
    nc = str(block) if c % block == 0 else f"({c} - c0 < {block} ? {c} - c0 : {block})"
    init = "0" if kind == "AVERAGE_POOL_2D" else ("-32768" if ct == "int16_t" else "-128")
    step = "acc[j] += r[j];" if kind == "AVERAGE_POOL_2D" else "acc[j] = r[j] > acc[j] ? r[j] : acc[j];"
    return f"""
        for (int c0 = 0; c0 < {c}; c0 += {block}) {{
          const int nc = {nc};
          int32_t acc[{block}];
          for (int j = 0; j < nc; ++j) acc[j] = {init};
          for (int ky = 0; ky < {rows}; ++ky) {{
            for (int kx = 0; kx < {cols}; ++kx) {{
              const {ct} *r = xp + (ky * {win.iw} + kx) * {c} + c0;
              for (int j = 0; j < nc; ++j) {step}
            }}
          }}
          for (int j = 0; j < nc; ++j) {{
            {_finish(kind, "acc[j]", count, lo, hi, "o[c0 + j]", ct)}
          }}
        }}"""


def _finish(kind: str, acc: str, count: str, lo: int, hi: int, dst: str, ct: str = "int8_t") -> str:
    if kind == "AVERAGE_POOL_2D":
        # C division truncates; adding +-n/2 first rounds half away from zero, as TFLM does.
        avg = f"({acc} > 0 ? ({acc} + {count} / 2) / {count} : ({acc} - {count} / 2) / {count})"
        return f"{dst} = ({ct})te_clamp({avg}, {lo}, {hi});"
    return f"{dst} = ({ct})te_clamp({acc}, {lo}, {hi});"


# On the DSP path an int8 average sums four channels a word at a time in 16-bit lanes (two
# SXTAB16 per word: channels 0 and 2 in one register, 1 and 3 in another). The lanes hold any sum
# of up to 256 int8 taps ([-32768, 32512]); larger windows keep the int32 loops.
DSP_LANE_TAPS = 256
# Words (four channels each) summed per pass over the window: 2 accumulators per word, and
# 4 words leave the compiler registers for the pointer, the counter and the loaded words.
DSP_GROUP_WORDS = 4


def _dsp_taps(win: Window, c: int, body: str) -> str:
    """Loops r over the window's taps (r starts at the group's first channel); one loop where
    the window's rows are whole input rows, which makes the taps evenly spaced."""
    if win.kw == win.iw or win.kh == 1:
        return f"""
          for (int t = 0; t < {win.kh * win.kw}; ++t, r += {c}) {{{body}
          }}"""
    return f"""
          for (int ky = 0; ky < {win.kh}; ++ky, r += {(win.iw - win.kw) * c}) {{
            for (int kx = 0; kx < {win.kw}; ++kx, r += {c}) {{{body}
            }}
          }}"""


def _dsp_finish(v: str, n: int, lo: int, hi: int, dst: str) -> str:
    """_finish's rounded division for a sum v of n <= DSP_LANE_TAPS int8 taps, without the
    sign branch or a division: rounding half away from zero is floor((v + n/2) / n) for odd n,
    and floor((v + n/2 - [v < 0]) / n) for even n. Shifted by K * n to be non-negative (v is at
    least -32768), the floor is the high word of x * ceil(2^32 / n), exact while x * (the
    rounding error of that multiplier, below n) stays under 2^32: x < 2^17, n <= 256."""
    if n == 1:
        return f"{dst} = (int8_t)te_clamp({v}, {lo}, {hi});"   # no rounding to do
    k = -(-32768 // n) + 1
    m = -(-(1 << 32) // n)
    sign = "" if n % 2 else f" + ({v} >> 31)"
    x = f"(uint32_t)({v} + {n // 2 + k * n}{sign})"
    q = f"(int32_t)(((uint64_t){x} * {m}u) >> 32) - {k}"
    if (lo, hi) == (-128, 127):     # one SSAT; gcc does not see te_clamp's bounds as one
        return f"{dst} = (int8_t)__ssat({q}, 8);"
    return f"{dst} = (int8_t)te_clamp({q}, {lo}, {hi});"


def _dsp_average(win: Window, c: int, lo: int, hi: int) -> str:
    """Interior pixel of an int8 average, at most DSP_LANE_TAPS taps: channel groups of up to
    DSP_GROUP_WORDS words summed in halfword lanes, then the channels left of a last partial
    word one at a time."""
    n = win.kh * win.kw
    words = c // 4
    out = []

    def group(nw: int) -> str:
        accs = ", ".join(f"a{j} = 0" for j in range(2 * nw))
        loads = "".join(f"\n            const uint32_t w{k} = te_ld32(r + {4 * k});"
                        f"\n            a{2 * k} = __sxtab16(a{2 * k}, w{k}); "
                        f"a{2 * k + 1} = te_sxa13(a{2 * k + 1}, w{k});" for k in range(nw))
        # a{2k} holds channels 4k and 4k + 2, a{2k+1} channels 4k + 1 and 4k + 3: two packs put
        # them back in channel order, so that one rolled loop divides them (unrolled, the
        # divisions by the literal count cost several hundred bytes of code per group).
        packs = "".join(
            f"\n          s[{2 * k}] = (uint32_t)te_pack16(a{2 * k}, a{2 * k + 1}); "
            f"s[{2 * k + 1}] = te_pack_hi16(a{2 * k}, a{2 * k + 1});"
            for k in range(nw))
        return f"""
          int32_t {accs};
          const int8_t *r = xp + c0;{_dsp_taps(win, c, loads)}
          uint32_t s[{2 * nw}];{packs}
          for (int j = 0; j < {4 * nw}; ++j) {{
            int16_t h;
            memcpy(&h, (const uint8_t *)s + 2 * j, 2);
            const int32_t v = h;
            {_dsp_finish("v", n, lo, hi, "o[c0 + j]")}
          }}"""

    full = words // DSP_GROUP_WORDS
    if full:
        step = 4 * DSP_GROUP_WORDS
        out.append(f"""
        for (int c0 = 0; c0 < {full * step}; c0 += {step}) {{{group(DSP_GROUP_WORDS)}
        }}""")
    if words % DSP_GROUP_WORDS:
        out.append(f"""
        {{
          const int c0 = {full * 4 * DSP_GROUP_WORDS};{group(words % DSP_GROUP_WORDS)}
        }}""")
    if c % 4:
        body = "\n            acc += r[0];"
        out.append(f"""
        for (int c0 = {4 * words}; c0 < {c}; ++c0) {{
          int32_t acc = 0;
          const int8_t *r = xp + c0;{_dsp_taps(win, c, body)}
          {_dsp_finish("acc", n, lo, hi, "o[c0]")}
        }}""")
    return "".join(out)


@kernel("AVERAGE_POOL_2D", "MAX_POOL_2D", footprint=footprint)
def pool_2d(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    n, c, win, lo, hi = _window(op, ctx)
    kind = op.kind
    ct = "int16_t" if ctx.t_out(op).dtype == "int16" else "int8_t"
    if win.kh * win.kw <= UNROLL_TAPS:
        reduce = _unrolled(kind, win, c, lo, hi, ct)
    else:
        reduce = _chunked(kind, win, c, lo, hi, str(win.kh), str(win.kw), str(win.kh * win.kw), ct)
    # Fewer than four channels have no word to sum: the portable loops are as good.
    dsp = (kind == "AVERAGE_POOL_2D" and ct == "int8_t" and c >= 4
           and win.kh * win.kw <= DSP_LANE_TAPS)
    if dsp:
        reduce = f"""
#if TE_DSP{_dsp_average(win, c, lo, hi)}
#else{reduce}
#endif"""
    interior = f"""
        const {ct} *restrict xp = in0 + ((b * {win.ih} + iy0) * {win.iw} + ix0) * {c};
        {ct} *restrict o = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {c};{reduce}"""
    # The window is clipped to the input first, so xp never points outside it.
    border = f"""
        const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = {win.ih} - iy0 < {win.kh} ? {win.ih} - iy0 : {win.kh};
        const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = {win.iw} - ix0 < {win.kw} ? {win.iw} - ix0 : {win.kw};
        const int count = (ky1 - ky0) * (kx1 - kx0);
        const {ct} *restrict xp = in0 + ((b * {win.ih} + iy0 + ky0) * {win.iw} + ix0 + kx0) * {c};
        {ct} *restrict o = out0 + ((b * {win.oh} + oy) * {win.ow} + ox) * {c};
        (void)count;{_chunked(kind, win, c, lo, hi, "ky1 - ky0", "kx1 - kx0", "count", ct)}"""
    nests = "".join(f"""
    for (int oy = {y0}; oy < {y1}; ++oy) {{
      const int iy0 = oy * {win.sh} - {win.pt};
      for (int ox = {x0}; ox < {x1}; ++ox) {{
        const int ix0 = ox * {win.sw} - {win.pl};{interior if inner else border}
      }}
    }}""" for y0, y1, x0, x1, inner in output_regions(win))
    return LayerCode(body=f"""
  for (int b = 0; b < {n}; ++b) {{{nests}
  }}""", headers=("te_dsp.h",) if dsp else ())
