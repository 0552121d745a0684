/* tinyengine-tf softmax helpers: the gemmlowp fixed-point exp and reciprocal that TFLite Micro's
 * int8 softmax is built on, written out for one format each so every call is branch-light and
 * inlined. Raw values follow gemmlowp's convention: a Qm.n value v is stored as v * 2^n in an
 * int32 with n = 31 - m. Sums that gemmlowp leaves to wrap go through uint32 so that sanitized
 * builds stay clean; on every real target the results equal TFLM's. */
#ifndef TE_SOFTMAX_H
#define TE_SOFTMAX_H
#include "te_runtime.h"

TE_INLINE int32_t te_fp_add(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
TE_INLINE int32_t te_fp_sub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

/* gemmlowp RoundingHalfSum: (a + b) / 2 rounded half away from zero. */
TE_INLINE int32_t te_fp_rounding_half_sum(int32_t a, int32_t b) {
    int64_t sum = (int64_t)a + (int64_t)b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/* gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent: x * 2^e, saturated. */
TE_INLINE int32_t te_fp_sat_shl(int32_t x, int e) {
    const int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return te_shl(x, e);
}

/* gemmlowp's fixed-point product (SRDHM), out of line for the exp and the reciprocal: they make
 * a dozen of them per class, each some 30 B of Cortex-M4 code inlined (noipa: see
 * te_softmax_exp). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noinline, noipa, unused))
#elif defined(__GNUC__)
__attribute__((noinline, unused))
#endif
static int32_t te_fp_mul(int32_t a, int32_t b) { return te_srdhm(a, b); }

/* Count of leading zero bits of a nonzero value. */
TE_INLINE int te_clz32(uint32_t x) {
#if defined(__GNUC__)
    return __builtin_clz(x);
#else
    int n = 0;
    while (!(x & 0x80000000u)) { x <<= 1; ++n; }
    return n;
#endif
}

/* exp(a) for a Q0.31 value a in [-1/4, 0): gemmlowp's Taylor expansion around -1/8. */
TE_INLINE int32_t te_fp_exp_on_quarter(int32_t a) {
    const int32_t exp_minus_one_eighth = 1895147668;
    const int32_t one_third = 715827883;
    const int32_t x = te_fp_add(a, 1 << 28);
    const int32_t x2 = te_fp_mul(x, x);
    const int32_t x3 = te_fp_mul(x2, x);
    const int32_t x4 = te_fp_mul(x2, x2);
    const int32_t x4_over_4 = te_rdbpot(x4, 2);
    const int32_t tail = te_rdbpot(te_fp_add(te_fp_mul(te_fp_add(x4_over_4, x3), one_third), x2), 1);
    return te_fp_add(exp_minus_one_eighth, te_fp_mul(exp_minus_one_eighth, te_fp_add(x, tail)));
}

/* exp(a) as Q0.31 for a Q5.26 value a <= 0 (gemmlowp exp_on_negative_values, 5 integer bits):
 * the fractional quarter goes through the polynomial, each higher bit of -a multiplies by a
 * constant exp(-2^k). */
TE_INLINE int32_t te_fp_exp_on_negative_q5(int32_t a) {
    const int32_t quarter = 1 << 24;
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter;
    /* Rescale Q5.26 -> Q0.31: the value lies in [-1/4, 0), so the shift cannot saturate. */
    int32_t result = te_fp_exp_on_quarter(a_mod_quarter_minus_quarter * 32);
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    /* exp(-2^k) for k = -2 .. 4, one per bit 24 .. 30 of the remainder. A loop rather than seven
     * inlined SRDHMs: about 400 B less Cortex-M4 code, for a few instructions per class. */
    static const int32_t exp_of_minus_pot[7] = {1672461947, 1302514674, 790015084, 290630308,
                                                39332535, 720401, 242};
    for (int k = 0; k < 7; ++k)
        if (remainder & (1 << (24 + k))) result = te_fp_mul(result, exp_of_minus_pot[k]);
    return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) as Q0.31 for a Q0.31 value a in [0, 1): three Newton-Raphson steps in Q2.29. */
TE_INLINE int32_t te_fp_one_over_one_plus_x(int32_t a) {
    const int32_t half_denominator = te_fp_rounding_half_sum(a, INT32_MAX);
    const int32_t c48_over_17 = 1515870810;
    const int32_t c_neg32_over_17 = -1010580540;
    int32_t x = te_fp_add(c48_over_17, te_fp_mul(half_denominator, c_neg32_over_17));
    for (int i = 0; i < 3; ++i) {
        const int32_t one_minus_hd_x = te_fp_sub(1 << 29, te_fp_mul(half_denominator, x));
        x = te_fp_add(x, te_fp_sat_shl(te_fp_mul(x, one_minus_hd_x), 2));
    }
    return te_fp_sat_shl(x, 1);
}

/* TFLM GetReciprocal for a positive sum with 12 integer bits: returns 1/sum scaled into
 * [1/2, 1] as Q0.31 and the number of bits the sum has above 1.0. */
TE_INLINE int32_t te_softmax_reciprocal_q12(int32_t sum, int *bits_over_unit) {
    const int headroom_plus_one = te_clz32((uint32_t)sum);
    *bits_over_unit = 12 - headroom_plus_one;
    const int32_t shifted_minus_one =
        (int32_t)(((uint32_t)sum << headroom_plus_one) - 0x80000000u);
    return te_fp_one_over_one_plus_x(shifted_minus_one);
}

/* exp(beta * s * diff) as Q0.31 for an input difference diff <= 0 that passed the diff_min
 * cut-off (so diff * 2^left_shift fits in int32). Out of line: a softmax calls it for the sum
 * and again for the outputs, and inlined twice it is about 300 B of Cortex-M4 code more, for a
 * call's few instructions per class (VWW: 1,592 -> 1,312 B). noipa: gcc 12's interprocedural
 * constant propagation into a clone of it miscompiles the int8 -> int16 softmax at -O2 (all
 * outputs 0; -fno-ipa-cp or inlining gives TFLM's values, tests/test_kernels_softmax.py). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noinline, noipa, unused))
#elif defined(__GNUC__)
__attribute__((noinline, unused))
#endif
static int32_t te_softmax_exp(int32_t diff, int32_t multiplier, int left_shift) {
    return te_fp_exp_on_negative_q5(te_srdhm(te_shl(diff, left_shift), multiplier));
}

/* TFLM's int16 LUTLookup: a 513-entry table over the int16 range, linear interpolation across
 * each 128-value step (the int16 softmax's exp and 1 / (1 + x)). */
TE_INLINE int16_t te_lut16(int16_t value, const int16_t *lut) {
    const int index = 256 + (value >> 7);
    const int32_t offset = value & 0x7f;
    const int32_t base = lut[index];
    const int32_t slope = (int16_t)(lut[index + 1] - lut[index]);
    return (int16_t)(base + ((slope * offset + 64) >> 7));
}

#endif
