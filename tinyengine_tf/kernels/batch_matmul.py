"""BATCH_MATMUL on int8 and int16, bit-exact with TFLite Micro (batch_matmul.cc,
reference_ops::BatchMatMul).

out[..., i, j] = requant(sum_k (L[..., i, k] - zp_L) * (R[..., k, j] - zp_R)), with adj_x / adj_y
reading L / R transposed, the batch dimensions (up to 3 after extending both to rank 5)
broadcast where one side is 1, and one multiplier ``s_L * s_R / s_out`` (TFLM reads the first
scale and zero point of each operand, per-channel or not) clamped to the int8 range. TFLM
transposes operands into persistent copies before its loops; here the strides of each layout are
baked into the loops, so nothing is copied. The int32 sum is exact (the depth is bounded), so the
order of accumulation does not matter. int16 (zero points 0, as TFLM requires) accumulates in
int64 and requantizes with TFLM's 64-bit MultiplyByQuantizedMultiplier (te_mbqm64).
"""
from __future__ import annotations

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE, FIX_REEXPORT

MAX_RANK = 5
MAX_DEPTH = (2**31 - 1) // (255 * 255)
MAX_DEPTH_16 = 2**47 // 2**30 - 1   # int64 sums stay in TFLM's 64-bit requantization range


def _footprint(op: Op, g) -> tuple[int, int]:
    return sum(g.t(i).nbytes for i in op.inputs[:2] if i >= 0 and g.t(i).is_const), 0


def _mbqm(acc: str, q: int, shift: int) -> str:
    return f"te_mbqm({acc}, {q}, {shift})" if shift > 0 else f"te_mbqm_r({acc}, {q}, {-shift})"


@kernel("BATCH_MATMUL", footprint=_footprint)
def batch_matmul(op: Op, g, ctx: EmitContext) -> LayerCode:
    if len(op.inputs) != 2 or len(op.outputs) != 1 or min(op.inputs) < 0:
        raise ctx.unsupported(op, "expects 2 inputs and 1 output", FIX_REEXPORT)
    L, R, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    wide = L.dtype == "int16"
    if wide:
        if not (R.dtype == y.dtype == "int16") or not all(t.quantized for t in (L, R, y)):
            raise ctx.unsupported(op, "an int16 BATCH_MATMUL needs quantized int16 operands and "
                                      "output", FIX_QUANTIZE)
        if L.zp or R.zp or y.zp:
            raise ctx.unsupported(op, "int16 BATCH_MATMUL needs zero points 0, as TFLite Micro "
                                      "requires", FIX_QUANTIZE)
    else:
        ctx.require_int8(op, L, R, y)
    rl, rr = len(L.shape), len(R.shape)
    if not (2 <= rl <= MAX_RANK and 2 <= rr <= MAX_RANK):
        raise ctx.unsupported(op, f"operand ranks {rl} and {rr}; TFLite Micro supports 2 to {MAX_RANK}",
                              FIX_REEXPORT)
    adj_x = bool(op.options.get("adj_x", False))
    adj_y = bool(op.options.get("adj_y", False))
    ls = (1,) * (MAX_RANK - rl) + tuple(int(d) for d in L.shape)
    rs = (1,) * (MAX_RANK - rr) + tuple(int(d) for d in R.shape)
    batch = []
    for a, b in zip(ls[:3], rs[:3]):
        if a != b and a != 1 and b != 1:
            raise ctx.unsupported(op, f"batch dimensions of {list(L.shape)} and {list(R.shape)} do "
                                      "not broadcast", FIX_REEXPORT)
        batch.append(max(a, b))
    rows, depth = (ls[4], ls[3]) if adj_x else (ls[3], ls[4])
    depth_r, cols = (rs[4], rs[3]) if adj_y else (rs[3], rs[4])
    if depth != depth_r:
        raise ctx.unsupported(op, f"{list(L.shape)} (adj_x={adj_x}) and {list(R.shape)} "
                                  f"(adj_y={adj_y}) disagree on the summed dimension", FIX_REEXPORT)
    out_rank = max(rl, rr)
    want = tuple(batch[3 - (out_rank - 2):]) + (rows, cols) if out_rank > 2 else (rows, cols)
    if y.numel != rows * cols * batch[0] * batch[1] * batch[2]:
        raise ctx.unsupported(op, f"output {list(y.shape)} does not hold the {list(want)} result",
                              FIX_REEXPORT)
    if depth > (MAX_DEPTH_16 if wide else MAX_DEPTH):
        raise ctx.unsupported(op, f"{depth} products per output could overflow the accumulator",
                              "Split the matrix multiplication")
    q, shift = quant.quantize_multiplier(L.s * R.s / y.s)
    if shift > (7 if wide else 30):
        raise ctx.unsupported(op, "the output multiplier needs a left shift beyond TFLite Micro's "
                                  "range", "Requantize the model")

    def extents(shape):
        """Element stride of each of the 3 batch dims, 0 where broadcast."""
        per = shape[3] * shape[4]
        s2 = per
        s1 = shape[2] * s2
        s0 = shape[1] * s1
        return [s if d != 1 else 0 for s, d in zip((s0, s1, s2), shape[:3])]

    el, er = extents(ls), extents(rs)
    li = ("k * %d + i" % rows) if adj_x else ("i * %d + k" % depth)
    rj = ("j * %d + k" % depth) if adj_y else ("k * %d + j" % cols)
    a, b = ctx.operand(op, 0), ctx.operand(op, 1)
    zl, zr = -L.zp, -R.zp

    def off(v, z):
        return f"((int32_t){v} + {z})" if z else f"(int32_t){v}"

    ct = "int16_t" if wide else "int8_t"
    if wide:
        red = (q + (1 << 15)) >> 16 if q < 0x7FFF0000 else 0x7FFF
        scaled = f"te_mbqm64(acc, {red}, {15 - shift})"
        acc_t, lo, hi = "int64_t", -32768, 32767
    else:
        scaled = _mbqm('acc', q, shift)
        acc_t, lo, hi = "int32_t", -128, 127
    body = f"""
  {ct} *po = out0;
  for (int b0 = 0; b0 < {batch[0]}; ++b0)
  for (int b1 = 0; b1 < {batch[1]}; ++b1)
  for (int b2 = 0; b2 < {batch[2]}; ++b2) {{
    const {ct} *pl = {a} + b0 * {el[0]} + b1 * {el[1]} + b2 * {el[2]};
    const {ct} *pr = {b} + b0 * {er[0]} + b1 * {er[1]} + b2 * {er[2]};
    for (int i = 0; i < {rows}; ++i) {{
      for (int j = 0; j < {cols}; ++j) {{
        {acc_t} acc = 0;
        for (int k = 0; k < {depth}; ++k) acc += {off(f'pl[{li}]', zl)} * {off(f'pr[{rj}]', zr)};
        *po++ = ({ct})te_clamp({scaled} + {y.zp}, {lo}, {hi});
      }}
    }}
  }}"""
    return LayerCode(body=body, headers=("te_int16.h",) if wide else ())
