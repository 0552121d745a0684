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
/* (x0, x2) and (x1, x3) as halfword pairs from four int16 values at any address. */
TE_INLINE void te16_pairs(const int16_t *x, int32_t *x02, int32_t *x13) {
    uint32_t x01, x23;
    memcpy(&x01, x, 4);
    memcpy(&x23, x + 2, 4);
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(*x02) : "r"(x01), "r"(x23));
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(*x13) : "r"(x01), "r"(x23));
}

TE_INLINE void te16_dot2_wide(const int16_t *x, const int8_t *w0, const int8_t *w1, int k,
                              int64_t *a0, int64_t *a1) {
    int64_t s0 = *a0, s1 = a1 ? *a1 : 0;
    for (int j = k >> 2; j > 0; --j) {
        int32_t x02, x13;
        te16_pairs(x, &x02, &x13);
        const uint32_t u0 = te_ld32(w0);
        s0 = __smlald(te_sx02(u0), x02, s0);
        s0 = __smlald(te_sx13(u0), x13, s0);
        if (a1) {
            const uint32_t u1 = te_ld32(w1);
            s1 = __smlald(te_sx02(u1), x02, s1);
            s1 = __smlald(te_sx13(u1), x13, s1);
            w1 += 4;
        }
        x += 4;
        w0 += 4;
    }
    for (int i = 0; i < (k & 3); ++i) {
        s0 += (int32_t)w0[i] * (int32_t)x[i];
        if (a1) s1 += (int32_t)w1[i] * (int32_t)x[i];
    }
    *a0 = s0;
    if (a1) *a1 = s1;
}

TE_INLINE void te16_dot2(const int16_t *x, const int8_t *w0, const int8_t *w1, int k,
                         int32_t *a0, int32_t *a1) {
    int32_t s0 = *a0, s1 = a1 ? *a1 : 0;
    for (int j = k >> 2; j > 0; --j) {
        int32_t x02, x13;
        te16_pairs(x, &x02, &x13);
        const uint32_t u0 = te_ld32(w0);
        s0 = __smlad(te_sx02(u0), x02, s0);
        s0 = __smlad(te_sx13(u0), x13, s0);
        if (a1) {
            const uint32_t u1 = te_ld32(w1);
            s1 = __smlad(te_sx02(u1), x02, s1);
            s1 = __smlad(te_sx13(u1), x13, s1);
            w1 += 4;
        }
        x += 4;
        w0 += 4;
    }
    for (int i = 0; i < (k & 3); ++i) {
        s0 += (int32_t)w0[i] * (int32_t)x[i];
        if (a1) s1 += (int32_t)w1[i] * (int32_t)x[i];
    }
    *a0 = s0;
    if (a1) *a1 = s1;
}
#endif

#endif
