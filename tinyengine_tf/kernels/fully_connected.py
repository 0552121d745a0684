"""FULLY_CONNECTED int8: per-tensor or per-channel filter, optional bias, fused activation.

The input (any rank) is read as [rows, K] with K the filter's second dimension; the output as
[rows, N]. keep_num_dims only changes the output's declared shape, never the arithmetic.

Specialization: every size is a literal, and the input zero point is folded into the bias at
generation time (bias - zp_in * sum(w)), so the inner loop is a plain contiguous int8 dot
product with an int32 accumulator that gcc vectorizes. The folded bias is added with wrapping
arithmetic, which gives TFLM's int32 accumulator bit for bit even when that one wraps.

On Cortex-M cores with the DSP extension an ``#if TE_DSP`` branch takes four units at a time,
each input word sign-extended once into two halfword pairs for two SMLADs per unit: the input
row is expanded once into int16 pairs on the stack (where it fits) and every tile reads it
back with one LDRD per word. Layers of whole tiles of units and words of inputs store their
filter repacked for kernels/fc_tiled.py's "pair" form instead (3 instructions per 4 MACs, the
same bytes), and layers the Flash planner (api._widen_in_flash) picks store it as int16 for the
"w16" form.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels import dsp, fc_tiled, int16x8
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE
from tinyengine_tf.kernels.geometry import requant

# |sum(w * x)| <= K * 128 * 128 must stay below 2^31 for the int32 dot product.
MAX_K = (1 << 31) // (128 * 128) - 1


def _dims(op: Op, g) -> tuple[int, int, int]:
    """(rows, K, N) from the shapes alone."""
    w, y = g.t(op.inputs[1]), g.t(op.outputs[0])
    n, k = int(w.shape[0]), int(w.shape[1])
    return y.numel // max(n, 1), k, n


def _has_bias(op: Op) -> bool:
    return len(op.inputs) > 2 and op.inputs[2] >= 0


def footprint(op: Op, g) -> tuple[int, int]:
    """Weights (N*K int8) + folded bias (N int32) + per-channel multipliers (N int32 + N int8)."""
    if int16x8.handles(op, g):
        return int16x8.footprint(op, g)
    _, k, n = _dims(op, g)
    # The pair form keeps the int8 filter's bytes: only widening (an op option) changes them,
    # so the footprint stays a function of shapes and options, never of the weights' values.
    flash = n * k + widened_bytes(op, g) + 4 * n
    if g.t(op.inputs[1]).per_channel:
        flash += 5 * n
    return flash, 0


def _check(op: Op, ctx: EmitContext):
    x, w, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    ctx.require_int8(op, x, w, y)
    ctx.require_per_tensor(op, x, y)
    if not w.is_const:
        raise ctx.unsupported(op, "the filter is not a constant tensor",
                              "Export the model with constant weights")
    if len(w.shape) != 2:
        raise ctx.unsupported(op, f"the filter must be 2-D [out, in], got {list(w.shape)}")
    if op.options.get("weights_format", 0) not in (0, "DEFAULT"):
        raise ctx.unsupported(op, "shuffled weights formats are not supported",
                              "Convert with the default weights format")
    n, k = int(w.shape[0]), int(w.shape[1])
    if not y.shape or int(y.shape[-1]) != n or n == 0 or k == 0:
        raise ctx.unsupported(op, f"output {list(y.shape)} does not end in the filter's {n} units")
    rows = y.numel // n
    if rows * k != x.numel:
        raise ctx.unsupported(op, f"input {list(x.shape)} ({x.numel} values) is not {rows} rows of "
                                  f"{k} as output {list(y.shape)} and filter {list(w.shape)} imply")
    if k > MAX_K:
        raise ctx.unsupported(op, f"{k} inputs per unit could overflow the int32 accumulator "
                                  f"(at most {MAX_K})", "Split the layer")
    if np.any(w.zero_point != 0):
        raise ctx.unsupported(op, "filter zero points must be 0 (symmetric int8 weights)",
                              "Quantize the weights symmetrically, as the TFLite converter does")
    # TFLM (fully_connected_common.cc) checks the scale count against the filter axis named by
    # quantized_dimension, then reads the scales by output unit: the first n are used.
    qd = w.quantized_dim
    if w.per_channel and (not 0 <= qd < 2 or len(w.scale) != w.shape[qd] or len(w.scale) < n):
        raise ctx.unsupported(op, f"the filter has {len(w.scale)} scales along quantized dimension {qd} of "
                                  f"{list(w.shape)}; TFLite Micro needs as many as that dimension "
                                  f"holds, and at least one per output unit ({n})", FIX_QUANTIZE)
    return x, w, y, rows, k, n


def _bias(op: Op, ctx: EmitContext, n: int) -> np.ndarray:
    if not _has_bias(op):
        return np.zeros(n, np.int64)
    b = ctx.t_in(op, 2)
    if not b.is_const or b.dtype != "int32" or b.numel != n:
        raise ctx.unsupported(op, f"bias must be a constant int32 vector of {n}, "
                                  f"got {b.describe()}")
    return b.data.astype(np.int64).ravel()


def _check_bias_scale(op: Op, ctx: EmitContext, x, w, y):
    """TFLM's Prepare rejects a per-tensor layer whose bias scale strays from in_s * w_s."""
    if not _has_bias(op):
        return
    b = ctx.t_in(op, 2)
    bias_scale = float(np.float32(b.scale[0])) if b.quantized else 0.0
    product = float(np.float32(x.s)) * float(np.float32(w.scale[0]))
    if not abs(product - bias_scale) / float(np.float32(y.s)) <= 0.02:  # NaN fails, as in TFLM
        raise ctx.unsupported(op, f"bias scale {bias_scale:g} differs from input scale x filter "
                                  f"scale {product:g} by more than 2% of the output scale, which "
                                  "TFLite Micro rejects",
                              "Re-quantize the model so the bias scale is their product")


@kernel("FULLY_CONNECTED", footprint=footprint)
def fully_connected(op: Op, g, ctx: EmitContext) -> LayerCode:
    if int16x8.handles(op, g):
        return int16x8.fully_connected(op, g, ctx)
    x, w, y, rows, k, n = _check(op, ctx)
    bias = _bias(op, ctx, n)
    if not w.per_channel:
        _check_bias_scale(op, ctx, x, w, y)
    # Per-tensor too: the TFLM interpreter multiplies the two scales in double (a float32
    # product, which TFLM's GetQuantizedConvolutionMultipler source suggests, gives outputs that
    # differ from it: tests/test_kernels_fully_connected.py checks which one it uses).
    q, shift = quant.channel_multipliers(x.s, w.scale[:n], y.s, n if w.per_channel else 1)
    lo, hi = quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)

    weights = w.data.reshape(n, k).astype(np.int64)
    abs_sums = np.abs(weights).sum(axis=1)
    bias, q, shift = dsp.constant_channels(bias, abs_sums, q, shift, y.zp, lo, hi,
                                            w.per_channel)
    # TFLM adds bias after sum(w * (x - zp)); modulo 2^32 that is sum(w * x) + folded.
    folded = [quant.wrap32(int(v)) for v in bias - x.zp * weights.sum(axis=1)]
    rq = dsp.Requant(q, shift, y.zp, lo, hi, dsp.acc_bounds(bias, abs_sums, x.zp))
    shape_form = fc_tiled.form(op, weights)
    if shape_form:
        W = ctx.const("w16" if shape_form == "w16" else "w", fc_tiled.pack(shape_form, weights),
                      "int32_t")
    else:
        W = ctx.const("w", w.data.ravel(), "int8_t")
    BF = ctx.const("bias_folded", folded, "int32_t")
    first = len(ctx.constants)
    epilogue = requant(ctx, "acc", "u", q, rq.shift, w.per_channel, y.zp, lo, hi)
    mult, shift_sym = dsp.table_symbols(ctx, first)
    if shape_form:
        def outputs(units, names, two):
            return _unit_outputs(units, rq, mult, shift_sym, mult is not None, epilogue, two, names)
        body = fc_tiled.body(shape_form, rows, k, n, W, BF, rq, mult, shift_sym, epilogue, outputs)
        return LayerCode(body=body, headers=("te_dsp.h",))
    body = f"""
#if TE_DSP{_dsp_body(rows, k, n, W, BF, rq, mult, shift_sym, epilogue)}
#else
  for (int r = 0; r < {rows}; ++r) {{
    const int8_t *x = in0 + r * {k};
    int8_t *o = out0 + r * {n};
    for (int u = 0; u < {n}; ++u) {{
      const int8_t *w = {W} + u * {k};
      int32_t dot = 0;
      for (int i = 0; i < {k}; ++i) dot += (int32_t)w[i] * (int32_t)x[i];
      const int32_t acc = (int32_t)((uint32_t)dot + (uint32_t){BF}[u]);
      o[u] = (int8_t){epilogue};
    }}
  }}
#endif"""
    return LayerCode(body=body, headers=("te_dsp.h",))


# Units per DSP tile: each input word is loaded and sign-extended once for four dot products.
DSP_UNITS = 4


# Bytes of stack the expanded input row may take, and input words per asm loop iteration.
DSP_STACK = 2048
DSP_UNROLL = 4
# Units from which expanding the row (about 6 instructions per input word) pays: each tile of
# DSP_UNITS saves 2 per word.
DSP_EXPAND_MIN_N = 16


def _unit_outputs(units, rq, mult, shift_sym, per_channel: bool, epilogue: str,
                  two: bool = False, acc: str = "a") -> str:
    """The stores of output units u + j from accumulators <acc><j>: the DSP requantization where
    it applies (two: accumulators of doubled products), else the layer's portable epilogue."""
    if rq.ok:
        return "".join(f"""
      {{
        {rq.setup(str(j), f"u + {j}", mult, shift_sym)}
        o[u + {j}] = (int8_t){rq.expr(f"{acc}{j}", str(j), per_channel, two)};
      }}""" for j in units)
    return "".join(f"""
      {{
        const int32_t acc = {acc}{j};
        o[u + {j}] = (int8_t){epilogue.replace("[u]", f"[u + {j}]")};
      }}""" for j in units)


def _dsp_expanded_ok(k: int, n: int) -> bool:
    """Whether the expanded-input body applies: enough units, the row fits on the stack and
    every filter word of a tile is in reach of one LDR offset from the first row's."""
    words = k // 4
    ub = min(DSP_UNITS, n)
    return (n >= DSP_EXPAND_MIN_N and words >= 1 and 8 * words <= DSP_STACK
            and (ub - 1) * k + 4 * DSP_UNROLL <= 4095)


def _dsp_word_steps(ub: int, k: int, words: int) -> list:
    """The asm of every word step of a tile: a whole unrolled iteration moves the pointers on
    (its first loads post-increment them, the others reach back), the remaining steps read at
    offsets from where the loop left them."""
    def step(s: int, back_x: int, back_w: int, post: bool) -> list:
        out = [f"ldrd %[xl], %[xh], [%[x]], #{8 * DSP_UNROLL}" if post
               else f"ldrd %[xl], %[xh], [%[x], #{8 * s - back_x}]"]
        for j in range(ub):
            if post and j == 0:
                out.append(f"ldr %[t], [%[w]], #{4 * DSP_UNROLL}")
            elif post:                      # row 0's load has moved w on
                out.append(f"ldr %[t], [%[w], #{j * k - 4 * DSP_UNROLL}]")
            else:
                out.append(f"ldr %[t], [%[w], #{j * k + 4 * s - back_w}]")
            out += ["sxtb16 %[u], %[t]", f"smlad %[a{j}], %[u], %[xl], %[a{j}]",
                    "sxtb16 %[t], %[t], ror #8", f"smlad %[a{j}], %[t], %[xh], %[a{j}]"]
        return out
    lines = []
    if words >= DSP_UNROLL:
        body = step(0, 0, 0, True)
        for s in range(1, DSP_UNROLL):
            body += step(s, 8 * DSP_UNROLL, 4 * DSP_UNROLL, False)
        lines += ["1:"] + body + ["cmp %[x], %[end]", "bne 1b"]
    for s in range(words % DSP_UNROLL):
        lines += step(s, 0, 0, False)
    return lines


def _dsp_body(rows, k, n, W, BF, rq, mult, shift_sym, epilogue) -> str:
    """Dot products of one input row with DSP_UNITS filter rows at a time, two MACs per SMLAD:
    sign-extending bytes 0/2 and 1/3 of an input word and of a filter word pairs them alike."""
    if _dsp_expanded_ok(k, n):
        return _dsp_expanded_body(rows, k, n, W, BF, rq, mult, shift_sym, epilogue)
    ub = min(DSP_UNITS, n)
    units = range(ub)
    accs = ", ".join(f"a{j} = {BF}[u + {j}]" for j in units)
    macs = "".join(f"""
        v = te_ld32(w + {j * k}); a{j} = __smlad(xl, te_sx02(v), a{j}); a{j} = __smlad(xh, te_sx13(v), a{j});"""
                   for j in units)
    tail = "".join(f"""
      {{
        const int32_t xt = xp[{t}];{''.join(f' a{j} = __smlabb(xt, w[{j * k + t}], a{j});' for j in units)}
      }}""" for t in range(k % 4))
    per_channel = mult is not None
    outs = _unit_outputs(units, rq, mult, shift_sym, per_channel, epilogue)
    loop = f"""
      for (int j = 0; j < {k // 4}; ++j) {{
        const uint32_t xv = te_ld32(xp);
        const int32_t xl = te_sx02(xv), xh = te_sx13(xv);
        uint32_t v;{macs}
        xp += 4;
        w += 4;
      }}""" if k >= 4 else ""
    return f"""
  for (int r = 0; r < {rows}; ++r) {{
    const int8_t *x = in0 + r * {k};
    int8_t *o = out0 + r * {n};
    for (int i = 0; i < {-(-n // ub)}; ++i) {{
      {dsp.tile_start("u", "i", n, ub)}
      const int8_t *w = {W} + u * {k};
      const int8_t *xp = x;
      int32_t {accs};{loop}{tail}{outs}
    }}
  }}"""


def _dsp_expanded_body(rows, k, n, W, BF, rq, mult, shift_sym, epilogue) -> str:
    """The input row expanded once (int16 pairs, doubled where the requantization takes
    2 * acc), then per tile of DSP_UNITS filter rows one asm loop: per input word an LDRD of
    the expanded pair, and per filter row an LDR, two extends and two SMLADs (21 instructions
    per 16 MACs instead of 23; the loop's pointers post-increment)."""
    ub = min(DSP_UNITS, n)
    words = k // 4
    two = rq.ok and rq.doubled
    units = range(ub)
    per_channel = mult is not None
    if two:
        accs = ", ".join(f"a{j} = (int32_t)((uint32_t){BF}[u + {j}] << 1)" for j in units)
        lo_, hi_ = "(int32_t)__sadd16(lo, lo)", "(int32_t)__sadd16(hi, hi)"
    else:
        accs = ", ".join(f"a{j} = {BF}[u + {j}]" for j in units)
        lo_, hi_ = "lo", "hi"
    tail = "".join(f"""
      {{
        const int32_t xt = {'2 * ' if two else ''}x[{4 * words + t}];{''.join(f' a{j} = __smlabb(xt, w[{j * k + 4 * words + t}], a{j});' for j in units)}
      }}""" for t in range(k % 4))
    outs = _unit_outputs(units, rq, mult, shift_sym, per_channel, epilogue, two)
    sep = "\\n\\t"
    lines = _dsp_word_steps(ub, k, words)
    outs_asm = ", ".join([f'[a{j}] "+r"(a{j})' for j in units]
                         + ['[xl] "=&r"(t_xl)', '[xh] "=&r"(t_xh)', '[t] "=&r"(t_t)', '[u] "=&r"(t_u)',
                            '[x] "+r"(xs)', '[w] "+r"(ws)'])
    end = f"xx + {2 * DSP_UNROLL * (words // DSP_UNROLL)}"
    return f"""
  int32_t xx[{2 * words}];
  for (int r = 0; r < {rows}; ++r) {{
    const int8_t *x = in0 + r * {k};
    int8_t *o = out0 + r * {n};
    for (int i = 0; i < {words}; ++i) {{
      const uint32_t v = te_ld32(x + 4 * i);
      const int32_t lo = te_sx02(v), hi = te_sx13(v);
      xx[2 * i] = {lo_};
      xx[2 * i + 1] = {hi_};
    }}
    for (int i = 0; i < {-(-n // ub)}; ++i) {{
      {dsp.tile_start("u", "i", n, ub)}
      const int8_t *w = {W} + u * {k};
      int32_t {accs};
      {{
        const int32_t *xs = xx;
        const int8_t *ws = w;
        int32_t t_xl, t_xh, t_t, t_u;
        __asm__("{sep.join(lines)}"
                : {outs_asm}
                : [end] "r"({end}) : "cc", "memory");
      }}{tail}{outs}
    }}
  }}"""


# Asm instructions per step (four inputs against four units) of each form, for the Flash
# planner's estimate: the int8 filter's two extends per word against none.
_STEP_COST = {"w16": 11, "pair": 14, None: 21}


def widening(op: Op, g) -> tuple[int, int] | None:
    """(extra Flash bytes, instructions saved per inference, estimated) of widening this layer's
    filter to int16 (fc_tiled's "w16" form), or None where that form does not apply."""
    if op.kind != "FULLY_CONNECTED" or int16x8.handles(op, g):
        return None
    w, x = g.t(op.inputs[1]), g.t(op.inputs[0])
    if not w.is_const or len(w.shape) != 2 or w.dtype != "int8" or x.dtype != "int8":
        return None
    rows, k, n = _dims(op, g)
    weights = w.data.reshape(n, k)
    wide_op = Op(op.index, op.kind, op.inputs, op.outputs, {**op.options, fc_tiled.WIDE: True})
    if fc_tiled.form(wide_op, weights) != "w16":
        return None
    now = fc_tiled.form(op, weights)
    extra = fc_tiled.flash_bytes("w16", n, k) - (fc_tiled.flash_bytes(now, n, k) if now else n * k)
    steps = len(fc_tiled.tile_starts(n)) * fc_tiled.padded(k) // 4
    return extra, rows * steps * (_STEP_COST[now] - _STEP_COST["w16"])


def widened_bytes(op: Op, g) -> int:
    """The Flash this layer's int16 filter takes beyond its int8 one (0 where not widened)."""
    if op.kind != "FULLY_CONNECTED" or not op.options.get(fc_tiled.WIDE):
        return 0
    _, k, n = _dims(op, g)
    return fc_tiled.flash_bytes("w16", n, k) - n * k
