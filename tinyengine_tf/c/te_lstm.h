/* tinyengine-tf LSTM helpers: TFLite Micro's int8 x int8 -> int16-cell LSTM step pieces
 * (lstm_eval: gate fully-connected layers, saturating adds, the int16 sigmoid / tanh of
 * reference_integer_ops, the gate multiplications), header-only C99. Every int32 sum goes
 * through uint32 so it wraps where TFLM's int32 accumulators would, without undefined
 * behaviour. Sizes and multipliers are literals at every call site, so gcc specializes them. */
#ifndef TE_LSTM_H
#define TE_LSTM_H
#include <stdint.h>
#include "te_runtime.h"

/* sigmoid(i / 24) in 0.16 fixed point, i = 0..255: the values of TFLite's sigmoid_table_uint16,
 * shared by its int16 logistic and tanh (tanh(x) = 2 sigmoid(2x) - 1). */
static const uint16_t te_sigmoid_u16[256] = {
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
    65534, 65534, 65534, 65535};

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

/* In place int16 sigmoid, Q3.12 in, Q0.15 out: reference_integer_ops::Logistic with input
 * multiplier 0 and shift 0 (so the input is scaled by 3). */
TE_INLINE void te_lstm_sigmoid(int16_t *d, int n) {
    for (int i = 0; i < n; ++i) {
        const int32_t v = (int32_t)d[i] * 3;
        const uint32_t a = te_lstm_abs(v);
        const uint32_t uh = a >> 9;
        uint32_t r;
        if (uh >= 255) {
            r = 0x7FFFu << 10;
        } else {
            const uint32_t ua = te_sigmoid_u16[uh], ub = te_sigmoid_u16[uh + 1];
            r = (ua << 9) + (a & 0x1FFu) * (ub - ua);
        }
        r = v >= 0 ? r + (1u << 9) : (1u << 25) - r + (1u << 9) - 1u;
        d[i] = (int16_t)(r >> 10);
    }
}

/* out = int16 tanh(in), reference_integer_ops::Tanh with the multiplier and shift already
 * resolved: v = (in * mult + round) >> shift. */
TE_INLINE void te_lstm_tanh(const int16_t *in, int16_t *out, int n, int32_t mult, int shift) {
    const int32_t round = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    for (int i = 0; i < n; ++i) {
        const int32_t v = ((int32_t)in[i] * mult + round) >> shift;
        const uint32_t a = te_lstm_abs(v);
        const uint32_t uh = a >> 8;
        int32_t r;
        if (uh >= 255) {
            r = 0xFFFF << 8;
        } else {
            const uint32_t ua = te_sigmoid_u16[uh], ub = te_sigmoid_u16[uh + 1];
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

#endif
