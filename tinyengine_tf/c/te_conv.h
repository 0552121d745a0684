/* tinyengine-tf convolution helpers: TFLM's per-channel requantization written so that a loop
 * over output channels vectorizes (no branches, no 64-bit division). Header-only, C99. */
#ifndef TE_CONV_H
#define TE_CONV_H
#include "te_runtime.h"

/* SaturatingRoundingDoublingHighMul for a multiplier q in [0, 2^31): the saturating case needs
 * q == INT32_MIN, which QuantizeMultiplier never produces, and for both signs of a*q the
 * truncating division of (a*q + nudge) by 2^31 equals an arithmetic shift of a*q + 2^30. */
TE_INLINE int32_t te_conv_srdhm(int32_t a, int32_t q) {
    return (int32_t)(((int64_t)a * (int64_t)q + ((int64_t)1 << 30)) >> 31);
}

/* RoundingDivideByPOT without branches (e in [0, 31]). */
TE_INLINE int32_t te_conv_rdbpot(int32_t x, int e) {
    const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
    const int32_t rem = x & mask;
    const int32_t thr = (mask >> 1) + (int32_t)(x < 0);
    return (x >> e) + (int32_t)(rem > thr);
}

/* MultiplyByQuantizedMultiplier with a right shift only (shift <= 0). */
TE_INLINE int32_t te_conv_rq(int32_t acc, int32_t q, int right) {
    return te_conv_rdbpot(te_conv_srdhm(acc, q), right);
}

/* MultiplyByQuantizedMultiplier for any shift (positive = left). */
TE_INLINE int32_t te_conv_rq_any(int32_t acc, int32_t q, int shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return te_conv_rdbpot(te_conv_srdhm(te_shl(acc, left), q), right);
}

#endif
