/* tinyengine-tf LSTM helpers: TFLite Micro's int8 x int8 -> int16-cell LSTM step pieces
 * (lstm_eval: gate fully-connected layers, saturating adds, the int16 sigmoid / tanh of
 * reference_integer_ops, the gate multiplications), header-only C99. Every int32 sum goes
 * through uint32 so it wraps where TFLM's int32 accumulators would, without undefined
 * behaviour. Sizes and multipliers are literals at every call site, so gcc specializes them. */
#ifndef TE_LSTM_H
#define TE_LSTM_H
#include <stdint.h>
#include "te_runtime.h"

/* out[r][o] = clamp16(mbqm(sum_i (w[o][i] + w_off) * (x[r][i] + x_off) + bias[o], q, shift)),
 * TFLM's reference FullyConnected with an int16 output of zero point 0 (bias may be NULL). */
TE_INLINE void te_lstm_fc(const int8_t *x, int rows, int n_in, int32_t x_off, const int8_t *w,
                          int32_t w_off, const int32_t *bias, int n_out, int32_t q, int shift,
                          int16_t *out) {
    for (int r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * n_in;
        for (int o = 0; o < n_out; ++o) {
            const int8_t *wo = w + o * n_in;
            uint32_t acc = 0;
            for (int i = 0; i < n_in; ++i)
                acc += (uint32_t)((int32_t)wo[i] + w_off) * (uint32_t)((int32_t)xr[i] + x_off);
            if (bias) acc += (uint32_t)bias[o];
            out[r * n_out + o] = (int16_t)te_clamp(te_mbqm((int32_t)acc, q, shift), -32768, 32767);
        }
    }
}

/* a = saturate16(a + b), lstm_internal::AddElementWise. */
TE_INLINE void te_lstm_add_sat(int16_t *a, const int16_t *b, int n) {
    for (int i = 0; i < n; ++i) a[i] = (int16_t)te_clamp((int32_t)a[i] + (int32_t)b[i], -32768, 32767);
}

TE_INLINE uint32_t te_lstm_abs(int32_t v) { return v < 0 ? 0u - (uint32_t)v : (uint32_t)v; }

/* out = int16 sigmoid(in), reference_integer_ops::Logistic (int16) with the multiplier and shift
 * already resolved, as te_lstm_sigmoid with a general input scaling: the standalone int16
 * LOGISTIC kernel (kernels/activations.py). in may equal out. */
TE_INLINE void te_lstm_logistic(const int16_t *in, int16_t *out, int n, int32_t mult, int shift,
                                const uint16_t *lut) {
    const int32_t round = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    for (int i = 0; i < n; ++i) {
        const int32_t v = ((int32_t)in[i] * mult + round) >> shift;
        const uint32_t a = te_lstm_abs(v);
        const uint32_t uh = a >> 9;
        uint32_t r;
        if (uh >= 255) {
            r = 0x7FFFu << 10;
        } else {
            const uint32_t ua = lut[uh], ub = lut[uh + 1];
            r = (ua << 9) + (a & 0x1FFu) * (ub - ua);
        }
        r = v >= 0 ? r + (1u << 9) : (1u << 25) - r + (1u << 9) - 1u;
        out[i] = (int16_t)(r >> 10);
    }
}

/* In place int16 sigmoid, Q3.12 in, Q0.15 out: reference_integer_ops::Logistic with input
 * multiplier 0 and shift 0 (so the input is scaled by 3). lut: sigmoid(i / 24) in 0.16 fixed
 * point for i = 0..255 (TFLite's sigmoid_table_uint16, a model constant: kernels/lstm.py). */
TE_INLINE void te_lstm_sigmoid(int16_t *d, int n, const uint16_t *lut) {
    te_lstm_logistic(d, d, n, 3, 0, lut);
}

/* out = int16 tanh(in), reference_integer_ops::Tanh with the multiplier and shift already
 * resolved: v = (in * mult + round) >> shift; the same table (tanh(x) = 2 sigmoid(2x) - 1).
 * Also the standalone int16 TANH kernel. in may equal out. */
TE_INLINE void te_lstm_tanh(const int16_t *in, int16_t *out, int n, int32_t mult, int shift,
                            const uint16_t *lut) {
    const int32_t round = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    for (int i = 0; i < n; ++i) {
        const int32_t v = ((int32_t)in[i] * mult + round) >> shift;
        const uint32_t a = te_lstm_abs(v);
        const uint32_t uh = a >> 8;
        int32_t r;
        if (uh >= 255) {
            r = 0xFFFF << 8;
        } else {
            const uint32_t ua = lut[uh], ub = lut[uh + 1];
            r = (int32_t)((ua << 8) + (a & 0xFFu) * (ub - ua));
        }
        r = v >= 0 ? r - (1 << 23) + (1 << 7) : -r + (1 << 23) + (1 << 7) - 1;
        out[i] = (int16_t)(r >> 8);
    }
}

/* out = clamp16(mbqm(a * b, q, shift)): MulElementwise int16 x int16 -> int16, offsets 0. */
TE_INLINE void te_lstm_mul16(const int16_t *a, const int16_t *b, int16_t *out, int n, int32_t q,
                             int shift) {
    for (int i = 0; i < n; ++i)
        out[i] = (int16_t)te_clamp(te_mbqm((int32_t)a[i] * (int32_t)b[i], q, shift), -32768, 32767);
}

/* out = clamp8(zp + mbqm(a * b, q, shift)): MulElementwise int16 x int16 -> int8. */
TE_INLINE void te_lstm_mul8(const int16_t *a, const int16_t *b, int8_t *out, int n, int32_t q,
                            int shift, int32_t zp) {
    for (int i = 0; i < n; ++i)
        out[i] = (int8_t)te_clamp((int32_t)((uint32_t)zp + (uint32_t)te_mbqm((int32_t)a[i] * (int32_t)b[i], q, shift)),
                                  -128, 127);
}

/* One gate: out = act(saturate16(FC(x, w, bias) + FC(h, r))); tmp holds the recurrent FC. */
TE_INLINE void te_lstm_gate(const int8_t *x, int rows, int n_in, int32_t x_off, const int8_t *w,
                            int32_t w_off, const int32_t *bias, int32_t q_in, int s_in,
                            const int8_t *h, int n_state, int32_t h_off, const int8_t *r,
                            int32_t r_off, int32_t q_rec, int s_rec, int16_t *out, int16_t *tmp) {
    te_lstm_fc(x, rows, n_in, x_off, w, w_off, bias, n_state, q_in, s_in, out);
    te_lstm_fc(h, rows, n_state, h_off, r, r_off, (const int32_t *)0, n_state, q_rec, s_rec, tmp);
    te_lstm_add_sat(out, tmp, rows * n_state);
}

/* 16x8 mode (int16 activations, int8 weights, int64 biases): TFLM's reference FullyConnected
 * <int16, int8, int16, int64>, an int64 accumulator requantized by its 64-bit
 * MultiplyByQuantizedMultiplier (reduced 16-bit multiplier, total shift 15 - shift). The
 * products fit int32 (|x + x_off| < 2^16, |w + w_off| < 2^8) as TFLM's do; the generator keeps
 * |acc| < 2^47 so acc * reduced stays inside int64. */
TE_INLINE void te_lstm_fc16(const int16_t *x, int rows, int n_in, int32_t x_off, const int8_t *w,
                            int32_t w_off, const int64_t *bias, int n_out, int32_t reduced,
                            int total, int16_t *out) {
    for (int r = 0; r < rows; ++r) {
        const int16_t *xr = x + r * n_in;
        for (int o = 0; o < n_out; ++o) {
            const int8_t *wo = w + o * n_in;
            int64_t acc = 0;
            for (int i = 0; i < n_in; ++i)
                acc += (int64_t)(((int32_t)wo[i] + w_off) * ((int32_t)xr[i] + x_off));
            if (bias) acc += bias[o];
            const int64_t v = acc * (int64_t)reduced + ((int64_t)1 << (total - 1));
            out[r * n_out + o] = (int16_t)te_clamp((int32_t)(v >> total), -32768, 32767);
        }
    }
}

/* out = clamp16(zp + mbqm(a * b, q, shift)): MulElementwise int16 x int16 -> int16 with the
 * hidden state's zero point (16x8 hidden state update). */
TE_INLINE void te_lstm_mul16z(const int16_t *a, const int16_t *b, int16_t *out, int n, int32_t q,
                              int shift, int32_t zp) {
    for (int i = 0; i < n; ++i)
        out[i] = (int16_t)te_clamp((int32_t)((uint32_t)zp + (uint32_t)te_mbqm((int32_t)a[i] * (int32_t)b[i], q, shift)),
                                   -32768, 32767);
}

/* One 16x8 gate, as te_lstm_gate. */
TE_INLINE void te_lstm_gate16(const int16_t *x, int rows, int n_in, int32_t x_off, const int8_t *w,
                              int32_t w_off, const int64_t *bias, int32_t red_in, int tot_in,
                              const int16_t *h, int n_state, int32_t h_off, const int8_t *r,
                              int32_t r_off, int32_t red_rec, int tot_rec, int16_t *out,
                              int16_t *tmp) {
    te_lstm_fc16(x, rows, n_in, x_off, w, w_off, bias, n_state, red_in, tot_in, out);
    te_lstm_fc16(h, rows, n_state, h_off, r, r_off, (const int64_t *)0, n_state, red_rec, tot_rec, tmp);
    te_lstm_add_sat(out, tmp, rows * n_state);
}

#endif
