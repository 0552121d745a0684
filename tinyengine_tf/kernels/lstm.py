"""UNIDIRECTIONAL_SEQUENCE_LSTM, quantized as TFLM runs it, bit for bit: int8 (int8 weights,
int16 cell state, int32 biases: EvalLstm<int8_t, int8_t, int16_t, int32_t>) and 16x8 (int16
activations and hidden state, int8 weights, int16 cell state, int64 biases:
EvalLstm<int16_t, int8_t, int16_t, int64_t>).

Inputs (lstm_shared.h): 0 input [B, T, I] (or [T, B, I] time major); 1-4 input weights and 5-8
recurrent weights of the input, forget, cell and output gates (all required: no CIFG); 9-11
peephole, 16-17 projection and 20-23 layer-norm tensors must be absent, as TFLM requires;
12-15 gate biases; 18 hidden (output) state (the activation type) and 19 cell state int16,
variable tensors that live in the state buffer (kernels/state.py) and carry over between
invocations.

Per time step (TFLM's LstmStep), on one batch row (or all rows when time major):
- each gate is FC(x, W_gate, bias) + FC(h, R_gate) into int16 of scale 2^-12 (zero point 0,
  multipliers double(in_scale) * double(w_scale) / 2^-12), added with int16 saturation, then
  TFLM's int16 sigmoid (forget, input, output gates) or tanh (cell gate) into Q0.15. In 16x8 the
  FCs accumulate in int64 and requantize with TFLM's 64-bit MultiplyByQuantizedMultiplier (the
  multiplier reduced to 16 bits), as te_int16.h's te_mbqm64;
- c = f * c (scale 2^-15 x s_c / s_c), i * g (2^-15 x 2^-15 / s_c), c = sat16(c + i * g), then
  clipped to +-round_toward_zero(cell_clip / s_c) when cell_clip > 0;
- h = tanh(c) * o into the hidden state's type, scale and zero point, where tanh's input
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
BIAS_TYPE = {"int8": "int32", "int16": "int64"}
# sigmoid(i / 24) in 0.16 fixed point, i = 0..255: the values of TFLite's sigmoid_table_uint16
# (kernels/internal/common.h), which its int16 logistic and tanh interpolate. They are not the
# rounded formula everywhere, so they are data. Emitted once per model as a constant.
SIGMOID_U16 = (
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149,
    40794, 41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369,
    47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409, 51865, 52311, 52745, 53169,
    53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
    60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302,
    62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536,
    63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786,
    64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
    65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258,
    65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433,
    65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474,
    65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
    65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522,
    65523, 65523, 65524, 65524, 65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528,
    65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530, 65530, 65531, 65531,
    65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65534, 65534, 65534, 65535)


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
            variant = "peephole" if k < 12 else "projection" if k < 18 else "layer-norm"
            raise ctx.unsupported(op, f"input {k} is present: a {variant} LSTM, which TFLite "
                                      "Micro refuses too (it runs only the standard LSTM)",
                                  "Use a standard Keras LSTM layer")
    for k in (0, 12, 13, 14, 15, 18, 19):
        if not _present(op, k):
            raise ctx.unsupported(op, f"input {k} is missing", FIX_REEXPORT)
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    h, c = ctx.t_in(op, 18), ctx.t_in(op, 19)
    if x.dtype not in ("int8", "int16"):
        raise ctx.unsupported(op, f"the input is {x.dtype}; only the quantized LSTMs (int8, or "
                                  "16x8: int16 activations) with an int16 cell state are "
                                  "supported", FIX_QUANTIZE)
    for t in (y, h):
        # TFLM: the hidden state is fed back as an input and the output is the hidden state.
        if t.dtype != x.dtype:
            raise ctx.unsupported(op, f"tensor {t.describe()} is {t.dtype} but the input is "
                                      f"{x.dtype}; TFLite Micro's LSTM needs the same type for "
                                      "input, hidden state and output", FIX_QUANTIZE)
    for t in (x, y, h):
        if not t.quantized:
            raise ctx.unsupported(op, f"tensor {t.describe()} has no quantization parameters",
                                  FIX_QUANTIZE)
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
    # TFLM picks the bias width from the activation type (int32 for int8, int64 for 16x8) and
    # reads the bias buffer as that type whatever the tensor says, so the other width is refused.
    bias_type = BIAS_TYPE[x.dtype]
    for t in bs:
        if t.dtype != bias_type or not t.is_const:
            raise ctx.unsupported(op, f"bias {t.describe()} must be a constant {bias_type} tensor "
                                      f"for an {x.dtype} LSTM (TFLite Micro reads it as "
                                      f"{bias_type})", FIX_QUANTIZE)
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
        # A flatbuffer cannot name sigmoid (the schema's activations are NONE, RELU,
        # RELU_N1_TO_1, RELU6, TANH, SIGN_BIT), so tanh is the one TFLM can run.
        raise ctx.unsupported(op, f"cell activation {act}; TFLite Micro's LSTM computes only tanh "
                                  "for a model's cell gate and aborts on anything else",
                              "Use activation='tanh' in the LSTM layer")
    return x, y, h, c, ws, bs, tm, batch, steps, n_in, n_s


def footprint(op: Op, g) -> tuple[int, int]:
    """Flash: 8 int8 weight matrices, 4 biases (int32, or int64 in 16x8), the 256-entry uint16
    table (once per model in a compiled model; counted per layer here). Scratch: four int16
    gate buffers per step."""
    x, h = g.t(op.inputs[0]), g.t(op.inputs[18])
    n_in, n_s = int(x.shape[2]), int(h.shape[1])
    tm = bool(op.options.get("time_major", False))
    rows = int(x.shape[1]) if tm else 1
    bias_bytes = 8 if x.dtype == "int16" else 4
    return 4 * n_s * n_in + 4 * n_s * n_s + 4 * bias_bytes * n_s + 2 * 256, 4 * rows * n_s * 2


def _wide_params(op, ctx, q: int, shift: int, terms: int, a_zp: int, w_zp: int, bias_max: int):
    """TFLM's 64-bit requantization of a 16x8 gate FC: (reduced multiplier, total shift), after
    checking what its int64 arithmetic assumes (shift -31..7, |acc| < 2^47)."""
    if not -31 <= shift <= 7:
        raise ctx.unsupported(op, f"a gate multiplier's shift {shift} is outside TFLite Micro's "
                                  "64-bit requantization range (-31..7)", FIX_QUANTIZE)
    if terms * (32768 + abs(a_zp)) * (128 + abs(w_zp)) + bias_max >= 2 ** 47:
        raise ctx.unsupported(op, "a gate accumulator can exceed 2^47, the range of TFLite "
                                  "Micro's 64-bit requantization", "Split the layer or requantize")
    return ((q + (1 << 15)) >> 16 if q < 0x7FFF0000 else 0x7FFF), 15 - shift


@kernel("UNIDIRECTIONAL_SEQUENCE_LSTM", footprint=footprint)
def lstm(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y, h, c, ws, bs, tm, batch, steps, n_in, n_s = _check(op, g, ctx)
    rows = batch if tm else 1          # rows per step
    outer = 1 if tm else batch
    ns = rows * n_s
    wide = x.dtype == "int16"          # 16x8: int16 activations, int64 biases
    # Gate parameters, input FC then recurrent FC, per gate.
    gate = {}
    for k, name in enumerate(GATES):
        w, r, b = ws[k], ws[4 + k], bs[k]
        q_in, s_in = _fc_params(x.s, w.s)
        q_rec, s_rec = _fc_params(h.s, r.s)
        if wide:
            bmax = int(np.abs(b.data.astype(np.int64)).max(initial=0))
            q_in, s_in = _wide_params(op, ctx, q_in, s_in, n_in, x.zp, w.zp, bmax)
            q_rec, s_rec = _wide_params(op, ctx, q_rec, s_rec, n_s, h.zp, r.zp, 0)
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
    shifts = [] if wide else [(p["q_in"], p["s_in"]) for p in gate.values()] + \
        [(p["q_rec"], p["s_rec"]) for p in gate.values()]
    for q, s in shifts + [(q_fc, s_fc), (q_ic, s_ic), (q_h, s_h)]:
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

    # One table per model, shared by every LSTM layer.
    lut = next((sym for sym, _, _ in ctx.constants if sym.endswith("_sigmoid_u16")), None) or \
        ctx.const("sigmoid_u16", np.array(SIGMOID_U16, dtype=np.uint16), "uint16_t")

    def call(name, out, act):
        p = gate[name]
        s = (f"      te_lstm_gate{'16' if wide else ''}(xt, {rows}, {n_in}, {-x.zp}, {p['w']}, {p['w_off']}, {p['b']}, "
             f"{p['q_in']}, {p['s_in']}, hh, {n_s}, {-h.zp}, {p['r']}, {p['r_off']}, {p['q_rec']}, "
             f"{p['s_rec']}, {out}, bt);\n")
        if act == "sigmoid":
            return s + f"      te_lstm_sigmoid({out}, {ns}, {lut});\n"
        return s + f"      te_lstm_tanh({out}, {out}, {ns}, 3, 0, {lut});\n"

    x_at = f"t * {batch * n_in}" if tm else f"(b * {steps} + t) * {n_in}"
    o_at = f"t * {batch * n_s}" if tm else f"(b * {steps} + t) * {n_s}"
    at, size = ("int16_t", 2) if wide else ("int8_t", 1)
    h_out = (f"te_lstm_mul16z(bf, bi, hh, {ns}, {q_h}, {s_h}, {h.zp})" if wide else
             f"te_lstm_mul8(bf, bi, hh, {ns}, {q_h}, {s_h}, {h.zp})")
    body = f"""
  int16_t *bf = (int16_t *)(void *)scratch;
  int16_t *bi = bf + {ns};
  int16_t *bc = bi + {ns};
  int16_t *bt = bc + {ns};
  for (int b = 0; b < {outer}; ++b) {{
    {at} *hh = in18 + b * {n_s};
    int16_t *cc = in19 + b * {n_s};
    for (int t = 0; t < {steps}; ++t) {{
      const {at} *xt = in0 + {x_at};
{call("forget", "bf", "sigmoid")}{call("input", "bi", "sigmoid")}{call("cell", "bc", "tanh")}\
      te_lstm_mul16(bf, cc, cc, {ns}, {q_fc}, {s_fc});
      te_lstm_mul16(bi, bc, bi, {ns}, {q_ic}, {s_ic});
      te_lstm_add_sat(cc, bi, {ns});{clip_code}
{call("output", "bi", "sigmoid")}\
      te_lstm_tanh(cc, bf, {ns}, {mult}, {shift}, {lut});
      {h_out};
      memcpy(out0 + {o_at}, hh, {ns * size});
    }}
  }}"""
    return LayerCode(body=body, scratch_bytes=4 * ns * 2, headers=("te_lstm.h",))
