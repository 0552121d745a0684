/* tinyengine-tf helpers for element-wise arithmetic (ADD, SUB, MUL) and activations. C99.
 * Include after te_runtime.h. */
#ifndef TE_ACTIVATIONS_H
#define TE_ACTIVATIONS_H
#include <stdint.h>

/* te_mbqm_r(x, q, right) for q >= 0 (every multiplier TFLM produces), any int32 x and
 * 0 <= right <= 31, with one 64-bit rounding shift instead of SRDHM followed by
 * RoundingDivideByPOT. Exact: for t = x*q >= 0 the two roundings are
 * floor((floor((t + 2^30) / 2^31) + 2^(r-1)) / 2^r), and nested floors of integer offsets merge
 * into floor((t + 2^30 + 2^(30+r)) / 2^(31+r)); t < 0 mirrors it (both roundings go half away
 * from zero), which gives the second offset. |t| < 2^62, so nothing overflows. Vectorizes
 * where the two-step form does not fit the vector units as well. */
TE_INLINE int32_t te_mbqm_1r(int32_t x, int32_t q, int right) {
    const int s = 31 + right;
    const int64_t up = ((int64_t)1 << 30) + (right > 0 ? ((int64_t)1 << (30 + right)) : 0);
    const int64_t down = ((int64_t)1 << s) - up;
    const int64_t t = (int64_t)x * (int64_t)q;
    return (int32_t)((t + (t >= 0 ? up : down)) >> s);
}

#endif
