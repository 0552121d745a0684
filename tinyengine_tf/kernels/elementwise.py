"""Binary element-wise ops with TFLM's broadcasting: ADD, SUB, MUL (int8, up to 6-D, fused
activation), MAXIMUM, MINIMUM (int8/int16, raw codes), SQUARED_DIFFERENCE (int8, up to 4-D) and
PRELU (int8 input and alpha).

Arithmetic (TFLM add_common.cc / sub_common.cc / mul_common.cc and reference/integer_ops):
- ADD/SUB rescale both inputs to a common scale with 20 bits of headroom
  (``(x - zp) << 20`` times ``s_k / (2 * max(s1, s2))``), add or subtract, then rescale to the
  output with ``2 * max(s1, s2) / (2^20 * s_out)``; every multiplier comes from the
  "smaller than one" QuantizeMultiplier, computed in double.
- MUL multiplies the zero-point-corrected inputs in int32 and requantizes once with
  ``s1 * s2 / s_out`` (double).
- MAXIMUM/MINIMUM compare raw codes and never requantize (TFLM has no Prepare for them).
- SQUARED_DIFFERENCE rescales like ADD with 7 bits of headroom, squares the int32 difference
  and requantizes with ``(2 * max(s1, s2))^2 / (2^14 * s_out)`` (the denominator a float32
  product, as TFLM computes it).
- PRELU: ``x - zp >= 0`` requantizes with ``s_in / s_out``, else ``(x - zp) * (alpha - zp_a)``
  with ``s_in * s_alpha / s_out`` (both double), then the output zero point and a clamp.
Right-shift requantizations use te_mbqm_1r (te_runtime.h): TFLM's two roundings folded
exactly into one 64-bit rounding shift, which vectorizes better.

On the Arm DSP path, int8 ADD/SUB layers of TABLE_MIN_ELEMENTS or more look the rescaled inputs
up in two 256-entry tables the layer builds on its stack (2 KiB) from TFLM's own arithmetic,
and requantize the sum with one SMMLAR (dsp.Requant): about 9 instructions per element
against 26.

Specialization: the output shape is split into maximal runs of dimensions over which each input
is either fully present or broadcast; the loop nest walks those runs with literal strides, and the
innermost loop is contiguous. When one operand is constant along the innermost run its rescaled
value is computed once, outside the loop.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import C_TYPES, Graph, Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_QUANTIZE, FIX_REEXPORT

LEFT_SHIFT = 20       # int8 ADD/SUB headroom bits (TFLM: 15 for int16, 20 for int8)
LEFT_SHIFT_16 = 15
MAX_BROADCAST_RANK = 6  # TFLM's BroadcastBinaryFunction6DSlow / BroadcastSubCommon limit
HEADERS = ()


# -- shapes -------------------------------------------------------------------------------------

def broadcast_runs(op: Op, ctx: EmitContext, s1, s2, so, max_rank=MAX_BROADCAST_RANK) -> list:
    """[(size, full1, full2)]: the output as merged dimension runs; fullK says input K varies.

    Dimensions of extent 1 vanish and neighbours with the same broadcast pattern merge, so an
    equal-shape op is one run and [N,H,W,C] + [C] is two.
    """
    s1, s2, so = tuple(s1), tuple(s2), tuple(so)
    rank = max(len(s1), len(s2), len(so))
    a, b, o = ((1,) * (rank - len(s)) + s for s in (s1, s2, so))
    for d in range(rank):
        if a[d] not in (1, o[d]) or b[d] not in (1, o[d]) or o[d] != max(a[d], b[d]):
            raise ctx.unsupported(op, f"input shapes {list(s1)} and {list(s2)} do not broadcast "
                                      f"to the output shape {list(so)}",
                                  "Re-export the model; the shapes are inconsistent")
    if a != b and rank > max_rank:
        raise ctx.unsupported(op, f"broadcasting {list(s1)} with {list(s2)} needs {rank} dimensions; "
                                  f"TFLite Micro broadcasts at most {max_rank} for this op",
                              "Reshape the operands to fewer dimensions in the model")
    runs: list = []
    for d in range(rank):
        if o[d] == 1:
            continue
        pattern = (a[d] == o[d], b[d] == o[d])
        if runs and runs[-1][1:] == pattern:
            runs[-1] = (runs[-1][0] * o[d], *pattern)
        else:
            runs.append((o[d], *pattern))
    return runs


def _strides(runs: list, which: int) -> list:
    """Element stride of one input along each run (0 where it is broadcast)."""
    strides, step = [0] * len(runs), 1
    for k in range(len(runs) - 1, -1, -1):
        size, full = runs[k][0], runs[k][which]
        strides[k] = step if full else 0
        step *= size if full else 1
    return strides


def _pointer(base: str, index_vars: list, strides: list) -> str:
    """base + sum(index * stride), leaving out broadcast (stride 0) dimensions."""
    terms = [f"{v} * {s}" if s != 1 else v for v, s in zip(index_vars, strides) if s]
    return " + ".join([base] + terms)


def loop_nest(runs: list, a: str, b: str, scale_a, scale_b, combine,
              types=("int8_t", "int8_t", "int8_t"), unroll: int = 1) -> str:
    """C loops over the runs. scale_x(expr) -> C int32 expression of one input element;
    combine(ea, eb) -> C int32 expression of the clamped output element. types: the C element
    types of input 1, input 2 and the output. unroll: elements per turn of an inner loop over
    both inputs where it divides the run (one counter update and branch per group)."""
    ta, tb, to = types
    if not runs:
        return f"\n  out0[0] = ({to})({combine(scale_a(f'{a}[0]'), scale_b(f'{b}[0]'))});"
    outer, (n, full_a, full_b) = runs[:-1], runs[-1]
    sa, sb = _strides(runs, 1), _strides(runs, 2)
    so = _strides([(r[0], True, True) for r in runs], 1)
    ivars = [f"i{k}" for k in range(len(outer))]
    head, tail, indent = "", "", "  "
    for v, (size, _, _) in zip(ivars, outer):
        head += f"\n{indent}for (int {v} = 0; {v} < {size}; ++{v}) {{"
        tail = f"\n{indent}}}" + tail
        indent += "  "
    pa, pb, po = (_pointer(base, ivars, st[:-1]) for base, st in ((a, sa), (b, sb), ("out0", so)))
    if full_a and full_b and unroll > 1 and n % unroll == 0:
        group = "".join(f"\n{indent}  po[i + {j}] = ({to})({combine(scale_a(f'pa[i + {j}]'), scale_b(f'pb[i + {j}]'))});"
                        for j in range(unroll))
        inner = f"\n{indent}for (int i = 0; i < {n}; i += {unroll}) {{{group}\n{indent}}}"
    elif full_a and full_b:
        inner = (f"\n{indent}for (int i = 0; i < {n}; ++i) "
                 f"po[i] = ({to})({combine(scale_a('pa[i]'), scale_b('pb[i]'))});")
    elif full_a:
        inner = (f"\n{indent}const int32_t vb = {scale_b('pb[0]')};"
                 f"\n{indent}for (int i = 0; i < {n}; ++i) "
                 f"po[i] = ({to})({combine(scale_a('pa[i]'), 'vb')});")
    else:
        inner = (f"\n{indent}const int32_t va = {scale_a('pa[0]')};"
                 f"\n{indent}for (int i = 0; i < {n}; ++i) "
                 f"po[i] = ({to})({combine('va', scale_b('pb[i]'))});")
    body = (f"\n{indent}const {ta} *pa = {pa};\n{indent}const {tb} *pb = {pb};"
            f"\n{indent}{to} *po = {po};{inner}")
    return head + body + tail


# -- quantization ---------------------------------------------------------------------------------

def _check_io(op: Op, ctx: EmitContext):
    if len(op.inputs) != 2 or len(op.outputs) != 1 or min(op.inputs) < 0:
        raise ctx.unsupported(op, f"expects 2 inputs and 1 output, got {len(op.inputs)} and "
                                  f"{len(op.outputs)}")
    x1, x2, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    ctx.require_int8(op, x1, x2, y)
    # No per-tensor check: TFLM's element-wise kernels read params.scale / zero_point, the
    # first channel's, of a per-channel tensor and run; Tensor.s / .zp are exactly those.
    return x1, x2, y


def _activation(op: Op, ctx: EmitContext, y) -> tuple:
    act = op.options.get("fused_activation_function") or "NONE"
    try:
        return quant.activation_range(act, y.s, y.zp)
    except ValueError:
        raise ctx.unsupported(op, f"fused activation {act} is not supported by TFLite Micro's "
                                  "int8 kernels", "Use NONE, RELU, RELU6 or RELU_N1_TO_1") from None


def _smaller_than_one(op: Op, ctx: EmitContext, m: float, what: str) -> tuple[int, int]:
    """TFLM QuantizeMultiplierSmallerThanOneExp: (q, right shift); TFLM aborts outside (0, 1)."""
    if not 0.0 < m < 1.0:
        raise ctx.unsupported(op, f"the {what} multiplier {m:.6g} is outside (0, 1), which "
                                  "TFLite Micro rejects (input scales too large for the output "
                                  "scale)", "Requantize the model with a wider output range")
    q, shift = quant.quantize_multiplier(m)
    if shift > 0:  # m rounded up to 1.0
        raise ctx.unsupported(op, f"the {what} multiplier {m:.17g} rounds to 1.0, which TFLite "
                                  "Micro rejects", "Requantize the model")
    return q, -shift


def add_sub_params(s1: float, s2: float, so: float, left_shift: int = 20):
    """The three real multipliers of int8 ADD and SUB, in double from the float32 scales.

    (TFLM's sub_common.cc has also been seen dividing in float32; the interpreter this project
    is judged by computes SUB in double like ADD, and one-code differences show up otherwise.)"""
    twice = 2.0 * max(s1, s2)
    return s1 / twice, s2 / twice, twice / ((1 << left_shift) * so)


def _plus(x: str, k: int) -> str:
    """x + k for a literal k, written without a double sign."""
    return x if k == 0 else (f"{x} + {k}" if k > 0 else f"{x} - {-k}")


def _mbqm_expr(x: str, q: int, shift: int) -> str:
    # A left shift can wrap int32 (TFLM's behaviour too): keep the two-step form for it.
    return f"te_mbqm({x}, {q}, {shift})" if shift > 0 else f"te_mbqm_1r({x}, {q}, {-shift})"


# -- kernels --------------------------------------------------------------------------------------

def _in_place(x1, y) -> bool:
    """Element i of the output reads only element i of input 0, so it may overwrite input 0.

    The shapes already broadcast, so equal element counts mean input 0 is not broadcast."""
    return not x1.is_const and x1.numel == y.numel


def _footprint(op: Op, g: Graph) -> tuple[int, int]:
    """Flash: the constant operands, stored as they are. No scratch."""
    if g.t(op.outputs[0]).numel == 0:
        return 0, 0
    flash = sum(g.t(i).nbytes for i in op.inputs[:2] if i >= 0 and g.t(i).is_const)
    return flash, 0


def _check_io_16(op: Op, ctx: EmitContext):
    """ADD/SUB/MUL/SQUARED_DIFFERENCE in 16x8 models: all three tensors int16 (a per-channel
    tensor is read through its first scale and zero point, as in TFLM)."""
    if len(op.inputs) != 2 or len(op.outputs) != 1 or min(op.inputs) < 0:
        raise ctx.unsupported(op, f"expects 2 inputs and 1 output, got {len(op.inputs)} and "
                                  f"{len(op.outputs)}")
    x1, x2, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    for t in (x1, x2, y):
        if t.dtype != "int16" or not t.quantized:
            raise ctx.unsupported(op, f"tensor {t.describe()}: an int16 ADD/SUB needs all its "
                                      "tensors int16 and quantized", FIX_QUANTIZE)
    return x1, x2, y


@kernel("ADD", "SUB", footprint=_footprint)
def add_sub(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    """int8, or int16 (16x8 models: TFLM uses the same recipe with 15 headroom bits)."""
    wide = ctx.t_in(op, 0).dtype == "int16" if op.inputs and op.inputs[0] >= 0 else False
    x1, x2, y = _check_io_16(op, ctx) if wide else _check_io(op, ctx)
    runs = broadcast_runs(op, ctx, x1.shape, x2.shape, y.shape)
    act = op.options.get("fused_activation_function") or "NONE"
    scale_a, scale_b, combine = add_sub_recipe(op, ctx, x1, x2, y, act, op.kind == "SUB", wide)
    types = ("int16_t",) * 3 if wide else ("int8_t",) * 3
    tables = None if wide else _dsp_tables(op, ctx, x1, x2, y, act)
    if tables is None or y.numel == 0:
        body = _emit(op, ctx, y, runs, scale_a, scale_b, combine, types)
        return LayerCode(body=body, in_place=_in_place(x1, y), headers=HEADERS)
    a, b = ctx.operand(op, 0), ctx.operand(op, 1)
    body = loop_nest(runs, a, b, scale_a, scale_b, combine, types)
    build, table_a, table_b, table_combine = tables
    dsp_body = build + loop_nest(runs, a, b, table_a, table_b, table_combine, types, TABLE_UNROLL)
    return LayerCode(body=f"\n#if TE_DSP{dsp_body}\n#else{body}\n#endif",
                     in_place=_in_place(x1, y), headers=("te_dsp.h",))


# Elements from which building the two tables (512 entries) pays for itself on the DSP path,
# and elements per loop turn of the table form.
TABLE_MIN_ELEMENTS = 512
TABLE_UNROLL = 4


def _dsp_tables(op: Op, ctx: EmitContext, x1, x2, y, act: str):
    """The int8 ADD/SUB on the DSP path: each input's rescaled value depends on its 256 codes
    alone, so the layer first tabulates 2 * scale_k(code) on the stack (TFLM's own arithmetic,
    te_mbqm_1r, once per code), then per element two loads and the output requantization as
    one SMMLAR of the doubled sum (dsp.Requant, te_dsp_rq2). None where the output
    requantization has no DSP form or the layer is too small to pay for its tables.
    (build, table_1, table_2, combine) in the shape of add_sub_recipe's builders."""
    from tinyengine_tf.kernels import dsp
    if y.numel < TABLE_MIN_ELEMENTS:
        return None
    lo, hi = quant.activation_range(act, y.s, y.zp)
    m1, m2, mo = add_sub_params(x1.s, x2.s, y.s, LEFT_SHIFT)
    q1, r1 = _smaller_than_one(op, ctx, m1, "input 1")
    q2, r2 = _smaller_than_one(op, ctx, m2, "input 2")
    qo, ro = _smaller_than_one(op, ctx, mo, "output")
    # |scale_k| <= 255 * 2^20 * m_k with m_k <= 1/2: the doubled sum stays below 2^29.
    reach = sum(int(quant.mbqm(255 << LEFT_SHIFT, q, -r)) + 1 for q, r in ((q1, r1), (q2, r2)))
    rq = dsp.Requant([qo], [-ro], y.zp, lo, hi, [reach])
    if not rq.ok or rq.wide:
        return None
    unit = 1 << LEFT_SHIFT
    build = f"""
  int32_t tab[512];
  for (int v = 0; v < 256; ++v) {{
    tab[v] = 2 * te_mbqm_1r(({_plus("v - 128", -x1.zp)}) * {unit}, {q1}, {r1});
    tab[256 + v] = 2 * te_mbqm_1r(({_plus("v - 128", -x2.zp)}) * {unit}, {q2}, {r2});
  }}
  const int32_t *t1 = tab + 128, *t2 = tab + 384;"""
    sign = "-" if op.kind == "SUB" else "+"

    def combine(ea, eb):
        return rq.expr(f"({ea} {sign} {eb})", "0", False, doubled=True)

    return build, (lambda e: f"t1[{e}]"), (lambda e: f"t2[{e}]"), combine


def add_sub_recipe(op: Op, ctx: EmitContext, x1, x2, y, act: str, sub: bool = False,
                   wide: bool = False):
    """(scale_1, scale_2, combine): C expression builders of TFLM's ADD/SUB for tensors with
    .s and .zp. scale_k(element) is input k rescaled to the common scale; combine(e1, e2) is the
    clamped output element. Also used by the CONV_2D with a fused residual ADD."""
    qmin, qmax = (-32768, 32767) if wide else (-128, 127)
    try:
        lo, hi = quant.activation_range(act, y.s, y.zp, qmin, qmax)
    except ValueError:
        raise ctx.unsupported(op, f"fused activation {act} is not supported by TFLite Micro's "
                                  "quantized kernels", "Use NONE, RELU, RELU6 or RELU_N1_TO_1") from None
    left = LEFT_SHIFT_16 if wide else LEFT_SHIFT
    m1, m2, mo = add_sub_params(x1.s, x2.s, y.s, left)
    q1, r1 = _smaller_than_one(op, ctx, m1, "input 1")
    q2, r2 = _smaller_than_one(op, ctx, m2, "input 2")
    qo, ro = _smaller_than_one(op, ctx, mo, "output")
    sign = "-" if sub else "+"
    # (x - zp) * 2^20 stays below 2^28 for int8, and (x - zp) * 2^15 below 2^31 for int16:
    # exact int32 products.
    unit = 1 << left

    def scale(q, r, zp):
        return lambda e: f"te_mbqm_1r(({_plus(f'(int32_t){e}', -zp)}) * {unit}, {q}, {r})"

    def combine(ea, eb):
        v = _plus(f'te_mbqm_1r({ea} {sign} {eb}, {qo}, {ro})', y.zp)
        if (lo, hi) == (-128, 127):
            return f"te_sat8({v})"
        return f"te_clamp({v}, {lo}, {hi})"

    return scale(q1, r1, x1.zp), scale(q2, r2, x2.zp), combine


@kernel("MUL", footprint=_footprint)
def mul(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    """int8, or int16 (16x8: TFLM requires zero points 0; |x1 * x2| <= 2^30 stays exact)."""
    wide = ctx.t_in(op, 0).dtype == "int16" if op.inputs and op.inputs[0] >= 0 else False
    x1, x2, y = _check_io_16(op, ctx) if wide else _check_io(op, ctx)
    runs = broadcast_runs(op, ctx, x1.shape, x2.shape, y.shape)
    if wide:
        if x1.zp or x2.zp or y.zp:
            raise ctx.unsupported(op, "int16 MUL needs zero points 0, as TFLite Micro requires",
                                  FIX_QUANTIZE)
        act = op.options.get("fused_activation_function") or "NONE"
        try:
            lo, hi = quant.activation_range(act, y.s, y.zp, -32768, 32767)
        except ValueError:
            raise ctx.unsupported(op, f"fused activation {act} is not supported",
                                  FIX_REEXPORT) from None
    else:
        lo, hi = _activation(op, ctx, y)
    q, shift = quant.quantize_multiplier(x1.s * x2.s / y.s)
    if shift > 30:
        raise ctx.unsupported(op, f"the output multiplier {x1.s * x2.s / y.s:.6g} needs a left shift "
                                  f"of {shift} bits, beyond TFLite Micro's range",
                              "Requantize the model with a wider output range")

    def scale(zp):
        return lambda e: f"({_plus(f'(int32_t){e}', -zp)})"

    def combine(ea, eb):
        # |(x1 - zp1) * (x2 - zp2)| <= 255 * 255: the int32 product is exact.
        return f"te_clamp({_plus(_mbqm_expr(f'{ea} * {eb}', q, shift), y.zp)}, {lo}, {hi})"

    types = ("int16_t",) * 3 if wide else ("int8_t",) * 3
    body = _emit(op, ctx, y, runs, scale(x1.zp), scale(x2.zp), combine, types)
    return LayerCode(body=body, in_place=_in_place(x1, y), headers=HEADERS)


def _emit(op, ctx, y, runs, scale_a, scale_b, combine, types=("int8_t",) * 3) -> str:
    if y.numel == 0:
        return ""
    a, b = ctx.operand(op, 0), ctx.operand(op, 1)
    return loop_nest(runs, a, b, scale_a, scale_b, combine, types)


def _binary_io(op: Op, ctx: EmitContext):
    if len(op.inputs) != 2 or len(op.outputs) != 1 or min(op.inputs) < 0:
        raise ctx.unsupported(op, f"expects 2 inputs and 1 output, got {len(op.inputs)} and "
                                  f"{len(op.outputs)}")
    return ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)


BROADCAST_LOOP_RANK = 8   # TFLM's BroadcastBinaryOpSimple (MAXIMUM, MINIMUM, PRELU)
BROADCAST_4D = 4          # BroadcastBinaryFunction4DSlow (SQUARED_DIFFERENCE)


@kernel("MAXIMUM", "MINIMUM", footprint=_footprint)
def maximum_minimum(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    x1, x2, y = _binary_io(op, ctx)
    if not (x1.dtype == x2.dtype == y.dtype) or y.dtype not in ("int8", "int16"):
        raise ctx.unsupported(op, f"inputs {x1.dtype}, {x2.dtype} and output {y.dtype} must all be "
                                  "int8 or all int16", "Quantize the model to int8")
    runs = broadcast_runs(op, ctx, x1.shape, x2.shape, y.shape, BROADCAST_LOOP_RANK)
    pick = "te_max_i32" if op.kind == "MAXIMUM" else "te_min_i32"
    ct = C_TYPES[y.dtype]

    def raw(e):
        return f"(int32_t){e}"

    body = _emit(op, ctx, y, runs, raw, raw, lambda ea, eb: f"{pick}({ea}, {eb})", (ct,) * 3)
    return LayerCode(body=body, in_place=_in_place(x1, y), headers=HEADERS)


@kernel("SQUARED_DIFFERENCE", footprint=_footprint)
def squared_difference(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    """int8 (7 headroom bits), or int16 (16x8: zero points 0, no headroom bits)."""
    wide = ctx.t_in(op, 0).dtype == "int16" if op.inputs and op.inputs[0] >= 0 else False
    x1, x2, y = _check_io_16(op, ctx) if wide else _check_io(op, ctx)
    if wide and (x1.zp or x2.zp or y.zp):
        raise ctx.unsupported(op, "int16 SQUARED_DIFFERENCE needs zero points 0, as TFLite Micro "
                                  "requires", FIX_QUANTIZE)
    runs = broadcast_runs(op, ctx, x1.shape, x2.shape, y.shape,
                          BROADCAST_4D)
    left = 0 if wide else 7
    twice = 2.0 * max(x1.s, x2.s)
    denominator = float(np.float32(np.float32(1 << (2 * left)) * np.float32(y.s)))
    q1, r1 = _smaller_than_one(op, ctx, x1.s / twice, "input 1")
    q2, r2 = _smaller_than_one(op, ctx, x2.s / twice, "input 2")
    if not denominator > 0 or not np.isfinite(denominator):
        raise ctx.unsupported(op, f"the output scale {y.s:g} times 2^14 is out of float32 range",
                              "Requantize the model")
    qo, so = quant.quantize_multiplier(twice * twice / denominator)
    if so > 30:
        raise ctx.unsupported(op, f"the output multiplier needs a left shift of {so} bits, beyond "
                                  "TFLite Micro's range", "Requantize the model")

    def scale(q, r, zp):  # (x - zp) * 2^7 <= 255 * 128 (int8), x <= 2^15 (int16): exact
        unit = f" * {1 << left}" if left else ""
        return lambda e: f"te_mbqm_1r(({_plus(f'(int32_t){e}', -zp)}){unit}, {q}, {r})"

    qmin, qmax = (-32768, 32767) if wide else (-128, 127)

    def combine(ea, eb):
        # Each scaled value is at most 2^15 in magnitude (the multipliers are <= 1/2): the
        # square fits int32.
        d = f"({ea} - {eb})"
        return f"te_clamp({_plus(_mbqm_expr(f'{d} * {d}', qo, so), y.zp)}, {qmin}, {qmax})"

    types = ("int16_t",) * 3 if wide else ("int8_t",) * 3
    body = _emit(op, ctx, y, runs, scale(q1, r1, x1.zp), scale(q2, r2, x2.zp), combine, types)
    return LayerCode(body=body, in_place=_in_place(x1, y), headers=HEADERS)


@kernel("PRELU", footprint=_footprint)
def prelu(op: Op, g: Graph, ctx: EmitContext) -> LayerCode:
    """int8, or int16 input and output with an int8 alpha (16x8, prelu_common.cc)."""
    wide = ctx.t_in(op, 0).dtype == "int16" if op.inputs and op.inputs[0] >= 0 else False
    if wide:
        if len(op.inputs) != 2 or len(op.outputs) != 1 or min(op.inputs) < 0:
            raise ctx.unsupported(op, "expects 2 inputs and 1 output", FIX_REEXPORT)
        x, alpha, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
        if y.dtype != "int16" or alpha.dtype != "int8" or not all(
                t.quantized for t in (x, alpha, y)):
            raise ctx.unsupported(op, "an int16 PRELU needs quantized int16 input and output and "
                                      "an int8 alpha, as TFLite Micro requires", FIX_QUANTIZE)
    else:
        x, alpha, y = _check_io(op, ctx)
    runs = broadcast_runs(op, ctx, x.shape, alpha.shape, y.shape, BROADCAST_LOOP_RANK)
    q1, s1 = quant.quantize_multiplier(x.s / y.s)
    q2, s2 = quant.quantize_multiplier(x.s * alpha.s / y.s)
    if s1 > 30 or s2 > 30:
        raise ctx.unsupported(op, "the input/alpha/output scales need a left shift beyond 30 "
                                  "bits, beyond TFLite Micro's range", "Requantize the model")

    qmin, qmax = (-32768, 32767) if wide else (-128, 127)

    def combine(ea, eb):
        # |(x - zp) * (alpha - zp_a)| <= 65535 * 255: exact in int32.
        pos, neg = _mbqm_expr(ea, q1, s1), _mbqm_expr(f"{ea} * {eb}", q2, s2)
        return f"te_clamp({_plus(f'({ea} >= 0 ? {pos} : {neg})', y.zp)}, {qmin}, {qmax})"

    def offset(zp):
        return lambda e: f"({_plus(f'(int32_t){e}', -zp)})"

    types = ("int16_t", "int8_t", "int16_t") if wide else ("int8_t",) * 3
    body = _emit(op, ctx, y, runs, offset(x.zp), offset(alpha.zp), combine, types)
    return LayerCode(body=body, in_place=_in_place(x, y), headers=HEADERS)
