/* tinyengine-tf helpers for the Arm DSP extension (Cortex-M4, M7, M33, M55): dual 16-bit
 * multiply-accumulates on int8 data. TE_DSP is 1 where the compiler targets the extension and
 * TE_NO_DSP is not defined; generated layers keep their portable loops under #if !TE_DSP, so
 * the host build never sees anything here but the macro. Header-only, C99. */
#ifndef TE_DSP_H
#define TE_DSP_H
#include "te_runtime.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(TE_NO_DSP)
#define TE_DSP 1
#include <arm_acle.h>

/* Four int8 values from any address (Cortex-M4 and up load unaligned words). */
TE_INLINE uint32_t te_ld32(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Copies and fills as asm loops: gcc turns the plain C loops into memcpy/memset calls, whose
 * instructions a per-layer profile would not see (and, for the short runs here, cost more).
 * n > 0 bytes or words; words need no alignment (unaligned LDR/STR). */
TE_INLINE void te_dsp_copy(int8_t *d, const int8_t *s, int n) {
    int32_t t;
    __asm__ volatile("1:\n\tldrb %[t], [%[s]], #1\n\tstrb %[t], [%[d]], #1\n\t"
                     "subs %[n], %[n], #1\n\tbne 1b"
                     : [d] "+r"(d), [s] "+r"(s), [n] "+r"(n), [t] "=&r"(t) : : "cc", "memory");
}

TE_INLINE void te_dsp_copy4(int8_t *d, const int8_t *s, int n) {
    int32_t t;
    __asm__ volatile("1:\n\tldr %[t], [%[s]], #4\n\tstr %[t], [%[d]], #4\n\t"
                     "subs %[n], %[n], #1\n\tbne 1b"
                     : [d] "+r"(d), [s] "+r"(s), [n] "+r"(n), [t] "=&r"(t) : : "cc", "memory");
}

/* n > 0 words, four at a time: by LDM/STM (one instruction each, against two per word) where
 * both pointers are word-aligned (LDM faults otherwise), else by post-incrementing LDR/STR (a
 * loop turn per four words). The border patches of layers with many channels are rows of
 * hundreds of bytes. The block registers are named (LDM needs them in ascending order); r7 is
 * left alone, as it is the frame pointer at -O0. */
TE_INLINE void te_dsp_copy_words(int8_t *d, const int8_t *s, int n) {
    int blocks = n >> 2;
    if (blocks && (((uintptr_t)d | (uintptr_t)s) & 3) == 0) {
        __asm__ volatile("1:\n\tldmia %[s]!, {r4, r5, r6, r8}\n\tstmia %[d]!, {r4, r5, r6, r8}\n\t"
                         "subs %[b], %[b], #1\n\tbne 1b"
                         : [d] "+r"(d), [s] "+r"(s), [b] "+r"(blocks)
                         : : "r4", "r5", "r6", "r8", "cc", "memory");
    } else if (blocks) {
        __asm__ volatile("1:\n\tldr r4, [%[s]], #4\n\tldr r5, [%[s]], #4\n\t"
                         "ldr r6, [%[s]], #4\n\tldr r8, [%[s]], #4\n\t"
                         "str r4, [%[d]], #4\n\tstr r5, [%[d]], #4\n\t"
                         "str r6, [%[d]], #4\n\tstr r8, [%[d]], #4\n\t"
                         "subs %[b], %[b], #1\n\tbne 1b"
                         : [d] "+r"(d), [s] "+r"(s), [b] "+r"(blocks)
                         : : "r4", "r5", "r6", "r8", "cc", "memory");
    }
    if (n & 3) te_dsp_copy4(d, s, n & 3);
}

/* Any n > 0 bytes: words while four or more remain (a border patch's rows of 3-channel pixels
 * are 9-21 bytes: a quarter of the byte loop's instructions), then bytes. */
TE_INLINE void te_dsp_copy_run(int8_t *d, const int8_t *s, int n) {
    if (n >= 4) {
        te_dsp_copy_words(d, s, n >> 2);
        d += n & ~3;
        s += n & ~3;
    }
    if (n & 3) te_dsp_copy(d, s, n & 3);
}

TE_INLINE void te_dsp_fill(int8_t *d, int32_t v, int n) {
    __asm__ volatile("1:\n\tstrb %[v], [%[d]], #1\n\tsubs %[n], %[n], #1\n\tbne 1b"
                     : [d] "+r"(d), [n] "+r"(n) : [v] "r"(v) : "cc", "memory");
}

TE_INLINE void te_dsp_fill4(int8_t *d, uint32_t v, int n) {
    __asm__ volatile("1:\n\tstr %[v], [%[d]], #4\n\tsubs %[n], %[n], #1\n\tbne 1b"
                     : [d] "+r"(d), [n] "+r"(n) : [v] "r"(v) : "cc", "memory");
}

/* Bytes 0 and 2 of w as two sign-extended halfwords. */
TE_INLINE int32_t te_sx02(uint32_t w) { return (int32_t)__sxtb16(w); }

/* Bytes 1 and 3 of w as two sign-extended halfwords: one instruction with the rotation that
 * gcc does not fold into __sxtb16 on its own. */
TE_INLINE int32_t te_sx13(uint32_t w) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(w));
    return r;
}

/* Bytes 1 and 3 of w as two zero-extended halfwords. */
TE_INLINE int32_t te_ux13(uint32_t w) {
    int32_t r;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(w));
    return r;
}

/* acc + bytes 1 and 3 of w, each sign-extended and added to its own halfword of acc. */
TE_INLINE int32_t te_sxa13(int32_t acc, uint32_t w) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(w));
    return r;
}

/* The high halfwords of lo and hi packed into one word (PKHTB; gcc builds it from three). */
TE_INLINE uint32_t te_pack_hi16(int32_t lo, int32_t hi) {
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}

/* Two halfwords (bits 0-15 of lo, bits 0-15 of hi) packed into one word. */
TE_INLINE int32_t te_pack16(int32_t lo, int32_t hi) {
    return (int32_t)(((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16));
}

/* c + round(a * b / 2^32), rounding half up (SMMLAR). */
TE_INLINE int32_t te_smmlar(int32_t a, int32_t b, int32_t c) {
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

/* TFLM's MultiplyByQuantizedMultiplier(acc, q, -r) + zp for |acc| < 2^30, 0 <= q < 2^31,
 * 1 <= r <= 31, with h = 2^(r-1) + zp * 2^r (the generator checks that h + acc cannot
 * overflow; otherwise it passes h = 2^(r-1) and adds zp itself).
 * SaturatingRoundingDoublingHighMul(acc, q) is floor((2*acc*q + 2^31) / 2^32): SMMLAR of 2*acc.
 * RoundingDivideByPOT(s, r) is floor((s + 2^(r-1) - [s < 0]) / 2^r), and for r >= 1 the sign
 * of acc may stand in for the sign of s (when they differ, s == 0 and both give 0). zp * 2^r
 * is a multiple of 2^r, so adding it before the floor adds zp after it. */
TE_INLINE int32_t te_dsp_rq(int32_t acc, int32_t q, int32_t h, int r) {
    const int32_t u = te_smmlar((int32_t)((uint32_t)acc << 1), q, h) + (acc >> 31);
    return u >> r;
}

/* te_dsp_rq from acc2 = 2 * acc (a layer whose multiply-accumulates double every product). */
TE_INLINE int32_t te_dsp_rq2(int32_t acc2, int32_t q, int32_t h, int r) {
    return (te_smmlar(acc2, q, h) + (acc2 >> 31)) >> r;
}

/* te_dsp_rq and te_dsp_rq2 without the sign correction, for layers whose activation clamps at or
 * above the zero point: a negative acc gives at most zp either way, which the clamp raises to
 * its lower bound. */
TE_INLINE int32_t te_dsp_rq_pos(int32_t acc, int32_t q, int32_t h, int r) {
    return te_smmlar((int32_t)((uint32_t)acc << 1), q, h) >> r;
}

TE_INLINE int32_t te_dsp_rq2_pos(int32_t acc2, int32_t q, int32_t h, int r) {
    return te_smmlar(acc2, q, h) >> r;
}

/* The same for any int32 acc, with r >= 2 and hh = 2^(r-2) + zp * 2^(r-1) (the generator checks
 * hh, or passes 2^(r-2) and adds zp itself): TFLM's two roundings merge into one of
 * acc * q + 2^(30+r) +- 2^30 (+ for acc >= 0) by 2^(31+r) (see te_mbqm_1r); SMLAL adds the
 * product to that constant held as hi:lo, where the -2^30 of a negative acc borrows from hi. */
TE_INLINE int32_t te_dsp_rq_wide(int32_t acc, int32_t q, int32_t hh, int r) {
    uint32_t lo = 0x40000000u | ((uint32_t)acc & 0x80000000u);
    int32_t hi = hh + (acc >> 31);
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(acc), "r"(q));
    return hi >> (r - 1);
}

/* te_dsp_rq_wide for layers whose activation clamps at or above the zero point: the rounding
 * constant of a non-negative product serves every acc (a negative one still ends at most at zp). */
TE_INLINE int32_t te_dsp_rq_wide_pos(int32_t acc, int32_t q, int32_t hh, int r) {
    uint32_t lo = 0x40000000u;
    int32_t hi = hh;
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(acc), "r"(q));
    return hi >> (r - 1);
}

#else
#define TE_DSP 0
#endif

#endif
