/* tinyengine-tf runtime helpers: TFLite Micro's integer arithmetic, header-only, C99.
 * Every function is static inline, so a model links exactly what its layers use.
 * Shifts and multiplies go through unsigned types where the C standard would call signed
 * overflow undefined; the results equal TFLM's on two's-complement targets. */
#ifndef TE_RUNTIME_H
#define TE_RUNTIME_H
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define TE_INLINE static inline __attribute__((always_inline))
#else
#define TE_INLINE static inline
#endif

TE_INLINE int32_t te_min_i32(int32_t a, int32_t b) { return a < b ? a : b; }
TE_INLINE int32_t te_max_i32(int32_t a, int32_t b) { return a > b ? a : b; }
TE_INLINE int32_t te_clamp(int32_t x, int32_t lo, int32_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* te_clamp(x, -128, 127): one SSAT where the target has it (Armv6-M lacks it); gcc keeps the
 * clamp as two compares and two conditional moves (four instructions and two ITs on an M4). */
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
#include <arm_acle.h>
TE_INLINE int32_t te_sat8(int32_t x) { return __ssat(x, 8); }
#else
TE_INLINE int32_t te_sat8(int32_t x) { return te_clamp(x, -128, 127); }
#endif

/* x * 2^s for s >= 0, wrapping like TFLM's int32 multiply does on every real target. */
TE_INLINE int32_t te_shl(int32_t x, int s) { return (int32_t)((uint32_t)x << s); }

/* gemmlowp SaturatingRoundingDoublingHighMul. */
TE_INLINE int32_t te_srdhm(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: round half away from zero. */
TE_INLINE int32_t te_rdbpot(int32_t x, int e) {
    int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
    int32_t rem = x & mask;
    int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > thr ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier, double rounding (TFLM's default). */
TE_INLINE int32_t te_mbqm(int32_t x, int32_t q, int shift) {
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    return te_rdbpot(te_srdhm(te_shl(x, left), q), right);
}

/* Same with the shift known to be <= 0 (the common requantization case). */
TE_INLINE int32_t te_mbqm_r(int32_t x, int32_t q, int right) {
    return te_rdbpot(te_srdhm(x, q), right);
}

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
    const int64_t t = (int64_t)x * (int64_t)q;
    /* The offset for t < 0, 2^s - up, is up - 2^31 for right >= 1 and up itself for right == 0:
     * subtracting the sign bit moved to bit 31 replaces the select (a compare and four
     * conditional moves on a Cortex-M4 by two instructions). */
    const int64_t neg = right > 0 ? (int64_t)((uint64_t)t >> 63) << 31 : 0;
    return (int32_t)((t + up - neg) >> s);
}

#endif
