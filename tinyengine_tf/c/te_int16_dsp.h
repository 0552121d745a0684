/* tinyengine-tf 16x8 helpers for the Arm DSP extension (c/te_dsp.h), header-only C99. */
#ifndef TE_INT16_DSP_H
#define TE_INT16_DSP_H
#include <stdint.h>
#include <string.h>
#include "te_dsp.h"

/* Cortex-M DSP form of the 16x8 FULLY_CONNECTED inner product (kernels/int16x8.py's #if TE_DSP
 * branch): two output units at a time, four inputs per step. The weights stay in their plain
 * layout (the portable loop reads the same array): SXTB16 yields weights (0, 2) and, rotated,
 * (1, 3) as halfword pairs, and the inputs are repacked once per step into (x0, x2), (x1, x3)
 * for both units (PKHBT / PKHTB). SMLALD adds both 16 x 16 products to an int64 exactly, as
 * TFLM's int64 accumulator does; SMLAD to an int32, for layers whose sum the generator has
 * bounded below 2^31 (TFLM's int32 accumulator). a1 may be NULL: one unit. */
#if TE_DSP
TE_INLINE void te16_pairs(const int16_t *x, int32_t *x02, int32_t *x13) {
    uint32_t x01, x23;
    memcpy(&x01, x, 4);
    memcpy(&x23, x + 2, 4);
    *x02 = (int32_t)((x01 & 0xFFFFu) | (x23 << 16));
    *x13 = (int32_t)((x01 >> 16) | (x23 & 0xFFFF0000u));
}

TE_INLINE void te16_dot2_wide(const int16_t *x, const int8_t *w0, const int8_t *w1, int k,
                              int64_t *a0, int64_t *a1) {
    int64_t s0 = *a0, s1 = a1 ? *a1 : 0;
    int i = 0;
    for (; i + 4 <= k; i += 4) {
        int32_t x02, x13;
        te16_pairs(x + i, &x02, &x13);
        const uint32_t u0 = te_ld32(w0 + i);
        s0 = __smlald(te_sx02(u0), x02, s0);
        s0 = __smlald(te_sx13(u0), x13, s0);
        if (a1) {
            const uint32_t u1 = te_ld32(w1 + i);
            s1 = __smlald(te_sx02(u1), x02, s1);
            s1 = __smlald(te_sx13(u1), x13, s1);
        }
    }
    for (; i < k; ++i) {
        s0 += (int32_t)w0[i] * (int32_t)x[i];
        if (a1) s1 += (int32_t)w1[i] * (int32_t)x[i];
    }
    *a0 = s0;
    if (a1) *a1 = s1;
}

TE_INLINE void te16_dot2(const int16_t *x, const int8_t *w0, const int8_t *w1, int k,
                         int32_t *a0, int32_t *a1) {
    int32_t s0 = *a0, s1 = a1 ? *a1 : 0;
    int i = 0;
    for (; i + 4 <= k; i += 4) {
        int32_t x02, x13;
        te16_pairs(x + i, &x02, &x13);
        const uint32_t u0 = te_ld32(w0 + i);
        s0 = __smlad(te_sx02(u0), x02, s0);
        s0 = __smlad(te_sx13(u0), x13, s0);
        if (a1) {
            const uint32_t u1 = te_ld32(w1 + i);
            s1 = __smlad(te_sx02(u1), x02, s1);
            s1 = __smlad(te_sx13(u1), x13, s1);
        }
    }
    for (; i < k; ++i) {
        s0 += (int32_t)w0[i] * (int32_t)x[i];
        if (a1) s1 += (int32_t)w1[i] * (int32_t)x[i];
    }
    *a0 = s0;
    if (a1) *a1 = s1;
}
#endif

#endif
