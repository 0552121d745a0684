"""UNIDIRECTIONAL_SEQUENCE_LSTM int8 (int8 weights, int16 cell state, int32 biases), as TFLM's
lstm_eval runs it (EvalLstm<int8_t, int8_t, int16_t, int32_t>), bit for bit.

Inputs (lstm_shared.h): 0 input [B, T, I] (or [T, B, I] time major); 1-4 input weights and 5-8
recurrent weights of the input, forget, cell and output gates (all required: no CIFG); 9-11
peephole, 16-17 projection and 20-23 layer-norm tensors must be absent, as TFLM requires;
12-15 gate biases; 18 hidden (output) state int8 and 19 cell state int16, variable tensors that
live in the state buffer (kernels/state.py) and carry over between invocations.

Per time step (TFLM's LstmStep), on one batch row (or all rows when time major):
- each gate is FC(x, W_gate, bias) + FC(h, R_gate) into int16 of scale 2^-12 (zero point 0,
  multipliers double(in_scale) * double(w_scale) / 2^-12), added with int16 saturation, then
  TFLM's int16 sigmoid (forget, input, output gates) or tanh (cell gate) into Q0.15;
- c = f * c (scale 2^-15 x s_c / s_c), i * g (2^-15 x 2^-15 / s_c), c = sat16(c + i * g), then
  clipped to +-round_toward_zero(cell_clip / s_c) when cell_clip > 0;
- h = tanh(c) * o into int8 with the hidden state's scale and zero point, where tanh's input
  scaling comes from log2(s_c) (TFLM's CheckedLog2, rounded, in float32); the output row is h.
The four int16 gate buffers are the layer's arena scratch, as TFLM's four scratch buffers.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import FIX_QUANTIZE, FIX_REEXPORT, EmitContext, LayerCode, kernel

GATES = ("input", "forget", "cell", "output")   # input weights 1-4, recurrent 5-8, biases 12-15
NONLINEAR_IN = float(np.float32(0.000244140625))    # 2^-12
NONLINEAR_OUT = float(np.float32(0.000030517578125))  # 2^-15
ABSENT = (9, 10, 11, 16, 17, 20, 21, 22, 23)


def _present(op: Op, k: int) -> bool:
    return k < len(op.inputs) and op.inputs[k] >= 0


def checked_log2(x: float) -> int:
    """TFLM's CheckedLog2 result (float32 log, rounded half away from zero)."""
    v = np.float32(np.log(np.float32(x))) * (np.float32(1.0) / np.float32(np.log(np.float32(2.0))))
    return quant.round_away(float(np.float32(v)))


def _mul_params(s1: float, s2: float, out: float):
    return quant.quantize_multiplier(float(np.float32(s1)) * float(np.float32(s2)) / float(np.float32(out)))


def _fc_params(x_scale: float, w_scale: float):
    return quant.quantize_multiplier(float(np.float32(x_scale)) * float(np.float32(w_scale)) / NONLINEAR_IN)


def _check(op: Op, g, ctx: EmitContext):
    if len(op.inputs) != 24 or len(op.outputs) != 1:
        raise ctx.unsupported(op, f"takes 24 inputs and 1 output, got {len(op.inputs)} and "
                                  f"{len(op.outputs)}", FIX_REEXPORT)
    for k in range(1, 9):
        if not _present(op, k):
            raise ctx.unsupported(op, f"input {k} (a gate weight) is missing; TFLite Micro's LSTM "
                                      "needs all four gates (no CIFG)",
                                  "Use a standard Keras LSTM layer")
    for k in ABSENT:
        if _present(op, k):
            raise ctx.unsupported(op, f"input {k} is present: peephole, projection and layer-norm "
                                      "LSTMs are not supported by TFLite Micro",
                                  "Use a standard Keras LSTM layer")
    for k in (0, 12, 13, 14, 15, 18, 19):
        if not _present(op, k):
            raise ctx.unsupported(op, f"input {k} is missing", FIX_REEXPORT)
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    h, c = ctx.t_in(op, 18), ctx.t_in(op, 19)
    if x.dtype != "int8":
        raise ctx.unsupported(op, f"the input is {x.dtype}; only the int8 LSTM (int16 cell state) "
                                  "is supported", FIX_QUANTIZE)
    ctx.require_int8(op, x, y, h)
    if not (h.is_variable and c.is_variable):
        raise ctx.unsupported(op, "the hidden and cell states (inputs 18, 19) must be variable "
                                  "tensors, as TFLite Micro requires", FIX_REEXPORT)
    if c.dtype != "int16" or not c.quantized:
        raise ctx.unsupported(op, f"the cell state is {c.dtype}; TFLite Micro's quantized LSTM "
                                  "needs a quantized int16 cell state", FIX_QUANTIZE)
    ws = [ctx.t_in(op, k) for k in range(1, 9)]
    bs = [ctx.t_in(op, k) for k in range(12, 16)]
    for t in ws:
        if t.dtype != "int8" or not t.is_const or not t.quantized:
            raise ctx.unsupported(op, f"weight {t.describe()} must be a constant quantized int8 "
                                      "tensor", FIX_QUANTIZE)
        if t.per_channel:
            raise ctx.unsupported(op, f"weight {t.describe()} is quantized per channel; TFLite "
                                      "Micro's LSTM uses one multiplier per gate",
                                  "Quantize the LSTM weights per tensor (the TFLite converter's default)")
    for t in bs:
        if t.dtype != "int32" or not t.is_const:
            raise ctx.unsupported(op, f"bias {t.describe()} must be a constant int32 tensor",
                                  FIX_QUANTIZE)
    if len(x.shape) != 3 or len(y.shape) != 3:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} must be 3-D",
                              FIX_REEXPORT)
    tm = bool(op.options.get("time_major", False))
    batch, steps = (int(x.shape[1]), int(x.shape[0])) if tm else (int(x.shape[0]), int(x.shape[1]))
    n_in = int(x.shape[2])
    if len(h.shape) < 2:
        raise ctx.unsupported(op, f"the hidden state has shape {list(h.shape)}; expected "
                                  "[batch, units]", FIX_REEXPORT)
    n_s = int(h.shape[1])
    for k, t in zip(range(1, 9), ws):
        want = (n_s, n_in) if k < 5 else (n_s, n_s)
        if tuple(int(d) for d in t.shape) != want:
            raise ctx.unsupported(op, f"weight input {k} has shape {list(t.shape)}, expected "
                                      f"{list(want)}", FIX_REEXPORT)
    for t in bs:
        if tuple(int(d) for d in t.shape) != (n_s,):
            raise ctx.unsupported(op, f"bias {t.describe()} must have shape [{n_s}]", FIX_REEXPORT)
    if h.numel != batch * n_s or c.numel != batch * n_s:
        raise ctx.unsupported(op, f"the states hold {h.numel} and {c.numel} values, expected "
                                  f"batch {batch} x {n_s} units", FIX_REEXPORT)
    if tuple(int(d) for d in y.shape) != (int(x.shape[0]), int(x.shape[1]), n_s):
        raise ctx.unsupported(op, f"output {list(y.shape)} does not match input {list(x.shape)} "
                                  f"and {n_s} units", FIX_REEXPORT)
    act = op.options.get("fused_activation_function", "NONE")
    if act != "TANH":
        raise ctx.unsupported(op, f"cell activation {act}; TFLite Micro's LSTM computes only tanh "
                                  "(or sigmoid) and aborts on anything else",
                              "Use activation='tanh' in the LSTM layer")
    return x, y, h, c, ws, bs, tm, batch, steps, n_in, n_s


@kernel("UNIDIRECTIONAL_SEQUENCE_LSTM")
def lstm(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y, h, c, ws, bs, tm, batch, steps, n_in, n_s = _check(op, g, ctx)
    rows = batch if tm else 1          # rows per step
    outer = 1 if tm else batch
    ns = rows * n_s
    # Gate parameters, input FC then recurrent FC, per gate.
    gate = {}
    for k, name in enumerate(GATES):
        w, r, b = ws[k], ws[4 + k], bs[k]
        q_in, s_in = _fc_params(x.s, w.s)
        q_rec, s_rec = _fc_params(h.s, r.s)
        gate[name] = dict(w=ctx.operand(op, 1 + k), r=ctx.operand(op, 5 + k),
                          b=ctx.operand(op, 12 + k), w_off=-w.zp, r_off=-r.zp,
                          q_in=q_in, s_in=s_in, q_rec=q_rec, s_rec=s_rec)
    q_fc, s_fc = _mul_params(NONLINEAR_OUT, c.s, c.s)
    q_ic, s_ic = _mul_params(NONLINEAR_OUT, NONLINEAR_OUT, c.s)
    q_h, s_h = _mul_params(NONLINEAR_OUT, NONLINEAR_OUT, h.s)
    power = checked_log2(c.s)
    shift = 15 + power - 3
    mult = 0
    if shift < 0:
        shift, mult = -shift, 3
    if mult == 0:                      # reference Tanh's power-of-two case
        mult, shift = 3 << shift, 0
    if shift > 30:
        raise ctx.unsupported(op, f"cell state scale {c.s:g} is too small for TFLite Micro's int16 "
                                  "tanh (its input shift exceeds 30 bits)", FIX_QUANTIZE)
    for q, s in [(p["q_in"], p["s_in"]) for p in gate.values()] + \
            [(p["q_rec"], p["s_rec"]) for p in gate.values()] + [(q_fc, s_fc), (q_ic, s_ic), (q_h, s_h)]:
        if s > 31:
            raise ctx.unsupported(op, f"a rescaling multiplier needs a left shift of {s} bits, "
                                      "beyond TFLite Micro's int32 arithmetic", FIX_QUANTIZE)
    if mult * 32768 >= 2 ** 31:
        raise ctx.unsupported(op, f"cell state scale {c.s:g} is too large for TFLite Micro's int16 "
                                  "tanh (its input scaling overflows)", FIX_QUANTIZE)
    clip = float(op.options.get("cell_clip", 0.0) or 0.0)
    clip_code = ""
    if clip > 0:
        qclip = int(min(max(float(np.float32(clip)) / float(np.float32(c.s)), -32768.0), 32767.0))
        clip_code = f"""
      for (int i = 0; i < {ns}; ++i) cc[i] = (int16_t)te_clamp(cc[i], {-qclip}, {qclip});"""

    def call(name, out, act):
        p = gate[name]
        s = (f"      te_lstm_gate(xt, {rows}, {n_in}, {-x.zp}, {p['w']}, {p['w_off']}, {p['b']}, "
             f"{p['q_in']}, {p['s_in']}, hh, {n_s}, {-h.zp}, {p['r']}, {p['r_off']}, {p['q_rec']}, "
             f"{p['s_rec']}, {out}, bt);\n")
        if act == "sigmoid":
            return s + f"      te_lstm_sigmoid({out}, {ns});\n"
        return s + f"      te_lstm_tanh({out}, {out}, {ns}, 3, 0);\n"

    x_at = f"t * {batch * n_in}" if tm else f"(b * {steps} + t) * {n_in}"
    o_at = f"t * {batch * n_s}" if tm else f"(b * {steps} + t) * {n_s}"
    body = f"""
  int16_t *bf = (int16_t *)(void *)scratch;
  int16_t *bi = bf + {ns};
  int16_t *bc = bi + {ns};
  int16_t *bt = bc + {ns};
  for (int b = 0; b < {outer}; ++b) {{
    int8_t *hh = in18 + b * {n_s};
    int16_t *cc = in19 + b * {n_s};
    for (int t = 0; t < {steps}; ++t) {{
      const int8_t *xt = in0 + {x_at};
{call("forget", "bf", "sigmoid")}{call("input", "bi", "sigmoid")}{call("cell", "bc", "tanh")}\
      te_lstm_mul16(bf, cc, cc, {ns}, {q_fc}, {s_fc});
      te_lstm_mul16(bi, bc, bi, {ns}, {q_ic}, {s_ic});
      te_lstm_add_sat(cc, bi, {ns});{clip_code}
{call("output", "bi", "sigmoid")}\
      te_lstm_tanh(cc, bf, {ns}, {mult}, {shift});
      te_lstm_mul8(bf, bi, hh, {ns}, {q_h}, {s_h}, {h.zp});
      memcpy(out0 + {o_at}, hh, {ns});
    }}
  }}"""
    return LayerCode(body=body, scratch_bytes=4 * ns * 2, headers=("te_lstm.h",))
