"""MEAN, SUM and REDUCE_MAX on int8 (MEAN and SUM on int16 too, as in 16x8 models: TFLM runs the
same QuantizedMeanOrSum template in the int16 range), over any set of axes.

TFLite Micro's int8 MEAN (reduce_common.cc + reference reduce.h / integer_ops/mean.h) computes, for
every path it has (the keep_dims 4-D axes-{1,2} special case, equal and unequal input/output
quantization, any other axes), the same integer recipe; the interpreter confirms it bit for bit:

    q, shift = QuantizeMultiplier(double(in_s) / double(out_s))
    N = number of reduced elements;  s = min(63 - clz64(N), 32, 31 + shift)
    q' = (int64(q) << s) / N  (truncating);  shift' = shift - s
    out = clamp(MBQM(sum(x) - in_zp * N, q', shift') + out_zp, -128, 127)

SUM is the same without folding 1/N into the multiplier. REDUCE_MAX needs equal input/output
quantization (TFLM checks it) and is a plain max. Duplicate and negative axes are resolved first.

Code shape: the input is viewed as alternating blocks of kept and reduced dimensions (unit dims
dropped, neighbours of the same kind merged). When the only reduced block is innermost, each
output is a register sum of one contiguous run. Otherwise the sums accumulate in an int32 scratch
row of one entry per output (e.g. global average pooling: for each pixel, acc[c] += x[c], which
vectorizes over channels), and a final pass requantizes.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE

MAX_RANK = 5              # TFLM reduce kernels index at most 5 dimensions
MAX_REDUCED = 1 << 22     # keeps |sum - zp * N| well inside int32 (no wrap, no UB)
MAX_REDUCED_16 = 1 << 15  # the same for int16 inputs


def _axes(op, g):
    """Resolved, de-duplicated axes, or an error message."""
    if len(op.inputs) != 2 or min(op.inputs) < 0:
        return None, "expects an input and an axis tensor"
    x = g.t(op.inputs[0])
    a = g.t(op.inputs[1])
    if not a.is_const or a.dtype != "int32":
        return None, f"the axis tensor {a.describe()} must be a constant int32 tensor"
    rank = len(x.shape)
    axes = []
    for v in np.asarray(a.data).ravel():
        r = int(v) + rank if int(v) < 0 else int(v)
        if not 0 <= r < rank:
            return None, f"axis {int(v)} is out of range for a rank-{rank} input"
        if r not in axes:
            axes.append(r)
    return axes, ""


def _blocks(shape, axes):
    """[(size, reduced)] after dropping unit dims and merging neighbours of the same kind."""
    blocks: list = []
    for d, n in enumerate(shape):
        if int(n) == 1:
            continue
        red = d in axes
        if blocks and blocks[-1][1] == red:
            blocks[-1] = (blocks[-1][0] * int(n), red)
        else:
            blocks.append((int(n), red))
    return blocks or [(1, False)]


def _needs_scratch(blocks) -> bool:
    """Sums stay in a register only when the one reduced block is the innermost one."""
    reduced = [i for i, (_, r) in enumerate(blocks) if r]
    return bool(reduced) and reduced != [len(blocks) - 1]


def _reduce_footprint(op, g):
    axes, _ = _axes(op, g)
    if axes is None or op.kind == "REDUCE_MAX":
        return 0, 0
    x, y = g.t(op.inputs[0]), g.t(op.outputs[0])
    return 0, (4 * y.numel if _needs_scratch(_blocks(x.shape, axes)) else 0)


@kernel("MEAN", "SUM", "REDUCE_MAX", footprint=_reduce_footprint)
def reduce_op(op: Op, g, ctx: EmitContext) -> LayerCode:
    if len(op.outputs) != 1:
        raise ctx.unsupported(op, "expects one output")
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    wide = x.dtype == "int16" and y.dtype == "int16" and op.kind != "REDUCE_MAX"
    if wide:
        if not (x.quantized and y.quantized):
            raise ctx.unsupported(op, "int16 MEAN/SUM need quantized input and output",
                                  FIX_QUANTIZE)
    else:
        ctx.require_int8(op, x, y)
    ctx.require_per_tensor(op, x, y)
    ct, qmin, qmax = ("int16_t", -32768, 32767) if wide else ("int8_t", -128, 127)
    axes, why = _axes(op, g)
    if axes is None:
        raise ctx.unsupported(op, why)
    if len(x.shape) > MAX_RANK:
        raise ctx.unsupported(op, f"rank {len(x.shape)}; TFLite Micro reduces tensors of rank <= {MAX_RANK}")
    if x.numel == 0:
        raise ctx.unsupported(op, f"empty input {x.describe()}")
    n_red = int(np.prod([int(x.shape[a]) for a in axes], dtype=np.int64)) if axes else 1
    n_out = x.numel // n_red
    if y.numel != n_out:
        raise ctx.unsupported(op, f"reducing {list(x.shape)} over axes {axes} leaves {n_out} values, "
                                  f"but the output {list(y.shape)} holds {y.numel}")
    if n_red > (MAX_REDUCED_16 if wide else MAX_REDUCED):
        raise ctx.unsupported(op, f"{n_red} elements per output overflow TFLM's int32 accumulator")
    blocks = _blocks(x.shape, axes)
    src = ctx.operand(op, 0)
    if op.kind == "REDUCE_MAX":
        if not (np.float32(x.s) == np.float32(y.s) and x.zp == y.zp):
            raise ctx.unsupported(op, f"input {x.describe()} and output {y.describe()} are quantized "
                                      "differently, which TFLite Micro's REDUCE_MAX rejects")
        return LayerCode(body=_max_body(src, blocks, n_out))
    q, shift = quant.quantize_multiplier(float(np.float32(x.s)) / float(np.float32(y.s)))
    if op.kind == "MEAN":
        q, shift = fold_count(q, shift, n_red)

    def requant(v: str) -> str:
        mbqm = f"te_mbqm_r({v}, {q}, {-shift})" if shift <= 0 else f"te_mbqm({v}, {q}, {shift})"
        return f"({ct})te_clamp({mbqm} + {y.zp}, {qmin}, {qmax})"

    init = -x.zp * n_red  # folds the input zero point into the sum's starting value
    if _needs_scratch(blocks):
        return LayerCode(body=_scratch_body(src, blocks, n_out, init, requant, ct),
                         scratch_bytes=4 * n_out)
    return LayerCode(body=_register_body(src, blocks, init, requant, ct))


def fold_count(q: int, shift: int, n: int) -> tuple[int, int]:
    """Fold 1/n into (q, shift) the way TFLM's integer mean does."""
    s = min(n.bit_length() - 1, 32, 31 + shift)
    return int((q << s) // n) if s >= 0 else int((q >> -s) // n), shift - s


def _outer_loops(blocks):
    """for-loops over every block but the innermost, with the input and output offsets they give.

    Offsets are in elements of the whole tensor (input) and of the output (kept blocks only).
    """
    strides_in, acc = [0] * len(blocks), 1
    strides_out, acc_out = [0] * len(blocks), 1
    for i in range(len(blocks) - 1, -1, -1):
        n, red = blocks[i]
        strides_in[i] = acc
        acc *= n
        if not red:
            strides_out[i] = acc_out
            acc_out *= n
    opens, closes, xoff, ooff, pad = [], [], "0", "0", "  "
    for k, (n, _) in enumerate(blocks[:-1]):
        opens.append(f"{pad}for (int i{k} = 0; i{k} < {n}; ++i{k}) {{")
        closes.insert(0, f"{pad}}}")
        xoff += f" + i{k} * {strides_in[k]}"
        if strides_out[k]:
            ooff += f" + i{k} * {strides_out[k]}"
        pad += "  "
    return "\n".join(opens), "\n".join(closes), xoff, ooff, pad


def _register_body(src, blocks, init, requant, ct="int8_t") -> str:
    """Reduced block innermost: each output is the sum of one contiguous run."""
    n_last, red_last = blocks[-1]
    if not red_last:  # every reduced dim has size 1: a pure requantize
        return f"""
  for (int i = 0; i < {n_last}; ++i) {{
    const int32_t acc = {init} + (int32_t){src}[i];
    out0[i] = {requant("acc")};
  }}"""
    opens, closes, xoff, ooff, pad = _outer_loops(blocks)
    return f"""
{opens}
{pad}const {ct} *xp = {src} + {xoff};
{pad}int32_t acc = {init};
{pad}for (int r = 0; r < {n_last}; ++r) acc += (int32_t)xp[r];
{pad}out0[{ooff}] = {requant("acc")};
{closes}"""


def _scratch_body(src, blocks, n_out, init, requant, ct="int8_t") -> str:
    """Reduced blocks enclose kept ones: accumulate into int32 scratch, then requantize."""
    opens, closes, xoff, ooff, pad = _outer_loops(blocks)
    n_last, red_last = blocks[-1]
    if red_last:   # contiguous run summed in a register, added to its output's accumulator
        inner = f"""
{pad}const {ct} *xp = {src} + {xoff};
{pad}int32_t s = 0;
{pad}for (int r = 0; r < {n_last}; ++r) s += (int32_t)xp[r];
{pad}acc[{ooff}] += s;"""
    else:          # one accumulator per element of the run: vectorizes over channels
        inner = f"""
{pad}const {ct} *xp = {src} + {xoff};
{pad}int32_t *ap = acc + {ooff};
{pad}for (int c = 0; c < {n_last}; ++c) ap[c] += (int32_t)xp[c];"""
    return f"""
  int32_t *acc = (int32_t *)(void *)scratch;
  for (int o = 0; o < {n_out}; ++o) acc[o] = {init};
{opens}{inner}
{closes}
  for (int o = 0; o < {n_out}; ++o) {{
    const int32_t sum = acc[o];
    out0[o] = {requant("sum")};
  }}"""


def _max_body(src, blocks, n_out) -> str:
    """Max needs no widening: the output itself is the accumulator."""
    n_last, red_last = blocks[-1]
    if not any(r for _, r in blocks):
        return f"\n  memcpy(out0, {src}, {n_out});"
    opens, closes, xoff, ooff, pad = _outer_loops(blocks)
    if red_last:
        inner = f"""
{pad}const int8_t *xp = {src} + {xoff};
{pad}int8_t m = out0[{ooff}];
{pad}for (int r = 0; r < {n_last}; ++r) m = xp[r] > m ? xp[r] : m;
{pad}out0[{ooff}] = m;"""
    else:
        inner = f"""
{pad}const int8_t *xp = {src} + {xoff};
{pad}int8_t *op = out0 + {ooff};
{pad}for (int c = 0; c < {n_last}; ++c) op[c] = xp[c] > op[c] ? xp[c] : op[c];"""
    return f"\n  memset(out0, 0x80, {n_out});\n{opens}{inner}\n{closes}"
