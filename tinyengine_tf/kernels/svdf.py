"""SVDF int8 with int16 (or int8) activation state: TFLM's EvalIntegerSvdfReference, bit for bit.

Inputs: 0 input int8 [batch, input_size]; 1 weights_feature int8 [filters, input_size];
2 weights_time int16/int8 [filters, memory]; 3 bias int32 [units]; 4 activation state, a
variable tensor [batch, memory * filters] of the weights_time type, updated in place (it lives in
the state buffer, kernels/state.py). units = filters / rank.

Per invocation, as TFLM does it:
1. the whole state buffer shifts left by one element (memmove), so each filter's memory row
   drops its oldest value;
2. the feature dot product of each filter, sum(w * (x - zp_in)) in int32, is requantized with
   effective_scale_1 = in_scale * wf_scale / state_scale (float32 arithmetic, as Prepare), clamped
   to the state type's range and stored, plus the state zero point, in the row's last slot;
3. each unit's output is bias + sum over its `rank` filters of sum(w_time * (state - zp_state)),
   requantized with effective_scale_2 = state_scale * wt_scale / out_scale, plus the output zero
   point, clamped to int8. The fused activation is not applied: TFLM's integer SVDF ignores it.

Every int32 sum wraps (uint32 arithmetic in C) exactly where TFLM's int32 accumulators would.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import C_TYPES, Op
from tinyengine_tf.kernels.base import FIX_QUANTIZE, FIX_REEXPORT, EmitContext, LayerCode, kernel


def _f32(x) -> np.float32:
    return np.float32(x)


def effective_scales(x, wf, wt, state, y, bias):
    """(s1, s2) as TFLM's PrepareSvdf computes them: float32 products and quotients."""
    with np.errstate(over="ignore", under="ignore"):  # an inf is refused by quantize_multiplier
        s1 = float(_f32(_f32(x.s) * _f32(wf.s)) / _f32(state.s))
        s2 = float(_f32(_f32(state.s) * _f32(wt.s)) / _f32(y.s))
    return s1, s2


def _check(op: Op, g, ctx: EmitContext):
    if len(op.inputs) != 5 or len(op.outputs) != 1:
        raise ctx.unsupported(op, f"SVDF takes 5 inputs and 1 output, got {len(op.inputs)} and "
                                  f"{len(op.outputs)}", FIX_REEXPORT)
    if op.inputs[3] < 0:
        raise ctx.unsupported(op, "the bias is omitted; TFLite Micro's int8 SVDF reads the bias "
                                  "scale unconditionally and cannot run without one",
                              "Export the SVDF layer with a bias")
    x, wf, wt, bias, state = (ctx.t_in(op, k) for k in range(5))
    y = ctx.t_out(op)
    ctx.require_int8(op, x, wf, y)
    rank = op.options.get("rank", 0)
    if not isinstance(rank, int) or rank <= 0:
        raise ctx.unsupported(op, f"rank {rank} is not a positive integer", FIX_REEXPORT)
    for t, what in ((wf, "weights_feature"), (wt, "weights_time"), (bias, "bias")):
        if not t.is_const:
            raise ctx.unsupported(op, f"{what} is not a constant tensor",
                                  "Export the model with constant weights")
    if not state.is_variable:
        raise ctx.unsupported(op, "input 4 (the activation state) is not a variable tensor, as "
                                  "TFLite Micro requires", FIX_REEXPORT)
    if state.dtype not in ("int16", "int8") or wt.dtype != state.dtype:
        raise ctx.unsupported(op, f"weights_time ({wt.dtype}) and the activation state "
                                  f"({state.dtype}) must both be int16 or both int8", FIX_QUANTIZE)
    if bias.dtype != "int32":
        raise ctx.unsupported(op, f"the bias is {bias.dtype}; int8 SVDF needs int32", FIX_QUANTIZE)
    for t in (wt, state, bias):
        if not t.quantized:
            raise ctx.unsupported(op, f"{t.describe()} has no quantization parameters", FIX_QUANTIZE)
    if len(x.shape) != 2 or len(y.shape) != 2 or len(wf.shape) != 2 or len(wt.shape) != 2 \
            or len(state.shape) != 2 or len(bias.shape) < 1:
        raise ctx.unsupported(op, "input, output, weights and state must be 2-D (bias 1-D)",
                              FIX_REEXPORT)
    batch, n_in = (int(d) for d in x.shape)
    filters, memory = int(wf.shape[0]), int(wt.shape[1])
    if filters == 0 or memory == 0 or filters % rank:
        raise ctx.unsupported(op, f"{filters} filters do not split into rank {rank}", FIX_REEXPORT)
    units = filters // rank
    want = {"output": (tuple(y.shape), (batch, units)),
            "weights_feature": (tuple(wf.shape), (filters, n_in)),
            "weights_time": (tuple(wt.shape), (filters, memory)),
            "bias": ((int(bias.shape[0]),), (units,)),
            "activation state": (tuple(state.shape), (batch, memory * filters))}
    for what, (got, exp) in want.items():
        if tuple(int(d) for d in got) != exp:
            raise ctx.unsupported(op, f"{what} has shape {list(got)}, expected {list(exp)}",
                                  FIX_REEXPORT)
    # PrepareSvdf: the bias scale must equal state_scale * weights_time_scale to 1e-5.
    prod = float(_f32(_f32(state.s) * _f32(wt.s)))
    if not abs(float(bias.s) - prod) < 1e-5:
        raise ctx.unsupported(op, f"bias scale {bias.s:g} differs from state scale x weights_time "
                                  f"scale {prod:g}, which TFLite Micro rejects", FIX_QUANTIZE)
    return x, wf, wt, bias, state, y, rank, batch, n_in, filters, memory, units


def footprint(op: Op, g) -> tuple[int, int]:
    """Flash: weights_feature (int8), weights_time (state type), bias (int32). No scratch."""
    wf, wt, bias = g.t(op.inputs[1]), g.t(op.inputs[2]), g.t(op.inputs[3])
    return wf.numel + wt.nbytes + 4 * bias.numel, 0


@kernel("SVDF", footprint=footprint)
def svdf(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, wf, wt, bias, state, y, rank, batch, n_in, filters, memory, units = _check(op, g, ctx)
    s1, s2 = effective_scales(x, wf, wt, state, y, bias)
    q1, sh1 = quant.quantize_multiplier(s1)
    q2, sh2 = quant.quantize_multiplier(s2)
    for sh in (sh1, sh2):
        if sh > 31:
            raise ctx.unsupported(op, f"a rescaling multiplier needs a left shift of {sh} bits, "
                                      "beyond TFLite Micro's int32 arithmetic", FIX_QUANTIZE)
    st_t = C_TYPES[state.dtype]
    lo, hi = (-32768, 32767) if state.dtype == "int16" else (-128, 127)
    total = batch * filters * memory
    w_f = ctx.operand(op, 1)
    w_t = ctx.operand(op, 2)
    bsym = ctx.operand(op, 3)
    body = f"""
  {st_t} *st = in4;
  /* 1. every memory row drops its oldest value (the whole buffer shifts by one). */
  memmove(st, st + 1, {total - 1} * sizeof({st_t}));
  /* 2. feature dot products into each filter's newest slot. */
  for (int b = 0; b < {batch}; ++b) {{
    const int8_t *xb = in0 + b * {n_in};
    for (int r = 0; r < {filters}; ++r) {{
      const int8_t *w = {w_f} + r * {n_in};
      uint32_t acc = 0;
      for (int c = 0; c < {n_in}; ++c)
        acc += (uint32_t)(int32_t)w[c] * (uint32_t)((int32_t)xb[c] - ({x.zp}));
      const int32_t v = te_clamp(te_mbqm((int32_t)acc, {q1}, {sh1}), {lo}, {hi});
      st[(b * {filters} + r) * {memory} + {memory - 1}] = ({st_t})({state.zp} + v);
    }}
  }}
  /* 3. time dot products, summed over each unit's {rank} filter(s), plus the bias. */
  for (int b = 0; b < {batch}; ++b) {{
    for (int u = 0; u < {units}; ++u) {{
      uint32_t acc = (uint32_t){bsym}[u];
      for (int j = 0; j < {rank}; ++j) {{
        const int f = u * {rank} + j;
        const {st_t} *s = st + (b * {filters} + f) * {memory};
        const {st_t} *w = {w_t} + f * {memory};
        uint32_t dot = 0;
        for (int m = 0; m < {memory}; ++m)
          dot += (uint32_t)(int32_t)w[m] * (uint32_t)((int32_t)s[m] - ({state.zp}));
        acc += dot;
      }}
      const int32_t v = (int32_t)((uint32_t)te_mbqm((int32_t)acc, {q2}, {sh2}) + (uint32_t)({y.zp}));
      out0[b * {units} + u] = (int8_t)te_clamp(v, -128, 127);
    }}
  }}"""
    return LayerCode(body=body)
