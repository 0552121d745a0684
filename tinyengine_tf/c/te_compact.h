/* tinyengine-tf compact kernels: convert(..., optimize="size").
 *
 * One function per kernel family serves every layer of the model: the layer's sizes, strides,
 * padding and quantization are read from a small const descriptor (te_conv_p, te_dw_p) instead
 * of being literals in an unrolled specialization, so the code is paid once per model rather
 * than once per layer. Arithmetic is TFLite Micro's (te_mbqm for every output, every tap that
 * falls inside the input, int32 sums), so each function equals TFLM on any target; under TE_DSP
 * the dot products run two MACs per SMLAD, and 3x3 depthwise layers at stride 1 or 2 across
 * run asm steps that take the plane pitch and the channel stride in registers (te_c_dw3_steps).
 * Header-only, C99, no heap, no recursion. */
#ifndef TE_COMPACT_H
#define TE_COMPACT_H
#include "te_runtime.h"
#include "te_dsp.h"

/* Out of line and never cloned per caller: one copy of the code is the point of this mode.
 * ("unused": a model that calls only one of the families gets no warning for the other.) */
#if defined(__GNUC__) && !defined(__clang__)
#define TE_SHARED static __attribute__((noinline, noipa, unused))
#elif defined(__GNUC__)
#define TE_SHARED static __attribute__((noinline, unused))
#else
#define TE_SHARED static
#endif

/* Output zero point, clamp and whether the short DSP requantization applies (te_c_requant). */
typedef struct {
    int8_t zp, lo, hi, fast;
} te_rq_p;

/* CONV_2D with one group (and FULLY_CONNECTED as a 1x1 conv): weights [oc][kh][kw][ic]. */
typedef struct {
    const int8_t *w;
    const int32_t *bias;      /* [oc] */
    const int32_t *mult;      /* [oc], or (shift NULL) one multiplier for every channel */
    const int8_t *shift;      /* [oc], or NULL: s for every channel */
    uint16_t ih, iw, ic, oh, ow, oc;
    uint8_t kh, kw, sh, sw, pt, pl;
    int8_t izp, s;
    te_rq_p rq;
} te_conv_p;

/* DEPTHWISE_CONV_2D in place (depth multiplier 1): weights [c][kh][kw], bias with the input
 * zero point folded in (bias - izp * sum w), a scratch plane of ph x pw bytes. */
typedef struct {
    const int8_t *w;
    const int32_t *bias;
    const int32_t *mult;      /* as in te_conv_p */
    const int8_t *shift;
    uint16_t ih, iw, c, oh, ow, ph, pw;
    uint8_t kh, kw, sh, sw, pt, pl;
    int8_t izp, s;
    te_rq_p rq;
} te_dw_p;

/* TFLM's requantization. fast (the generator checked dsp.Requant's preconditions: |acc| < 2^30,
 * 1 <= -s <= 31) lets the DSP path use te_dsp_rq, a few instructions, instead of te_mbqm;
 * fast == 2 also says that te_dsp_rq2's value with the zero point in h needs only SSAT to int8
 * (te_c_dw's asm steps). */
TE_SHARED int8_t te_c_requant(int32_t acc, int32_t q, int s, const te_rq_p *r) {
    int32_t v;
#if TE_DSP
    if (r->fast) {
        v = te_dsp_rq(acc, q, (int32_t)(1u << (-s - 1)), -s);
    } else
#endif
    {
        v = te_mbqm(acc, q, s);
    }
    return (int8_t)te_clamp(v + r->zp, r->lo, r->hi);
}

#if TE_DSP
/* Bytes 1 and 3 of w sign-extended, plus the halfwords of a (one instruction). */
TE_INLINE int32_t te_c_sxa13(uint32_t a, uint32_t w) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(w));
    return r;
}
#endif

/* Four output channels at a time, each a dot product over the in-bounds part of the window:
 * taps outside the input are skipped (TFLM's zero-point padding), and each in-bounds kernel row
 * is one contiguous run of (kx1 - kx0) * ic input bytes against a contiguous run of weights.
 * The last group of four starts at oc - 4 and recomputes a few channels (same values); with
 * fewer than four channels the four accumulators all compute channel o (weight stride 0). */
TE_SHARED void te_c_conv(const te_conv_p *p, const int8_t *x, int8_t *y) {
    /* Locals, not p->: every int8 store may alias the descriptor, which p-> would reload. */
    const int ic = p->ic, ih = p->ih, iw = p->iw, kh = p->kh, kw = p->kw, oc = p->oc;
    const int k = kh * kw * ic, step = oc >= 4 ? 4 : 1, kk = oc >= 4 ? k : 0;
    const int izp = p->izp, s = p->s, oh = p->oh, ow = p->ow, sh = p->sh, sw = p->sw;
    const int8_t *const wt = p->w, *const shift = p->shift;
    const int32_t *const bias = p->bias, *const mult = p->mult;
    const te_rq_p *const rq = &p->rq;
#if TE_DSP
    /* x - izp for two bytes at once: |x - izp| <= 255 fits each halfword. */
    const uint32_t off = ((uint32_t)(-izp) & 0xffffu) * 0x10001u;
#endif
    for (int oy = 0; oy < oh; ++oy) {
        const int y0 = oy * sh - p->pt;
        const int ky0 = y0 < 0 ? -y0 : 0, ky1 = ih - y0 < kh ? ih - y0 : kh;
        for (int ox = 0; ox < ow; ++ox, y += oc) {
            const int x0 = ox * sw - p->pl;
            const int kx0 = x0 < 0 ? -x0 : 0, kx1 = iw - x0 < kw ? iw - x0 : kw;
            const int n = (kx1 - kx0) * ic;
            for (int g = 0; g < oc; g += step) {
                const int o = g + step <= oc ? g : oc - step;
                const int d = step == 4;
                int32_t a0 = bias[o], a1 = bias[o + d], a2 = bias[o + 2 * d], a3 = bias[o + 3 * d];
                for (int ky = ky0; n > 0 && ky < ky1; ++ky) {
                    const int8_t *xr = x + ((y0 + ky) * iw + x0 + kx0) * ic;
                    const int8_t *wr = wt + o * k + (ky * kw + kx0) * ic;
                    int i = 0;
#if TE_DSP
                    for (; i + 4 <= n; i += 4) {
                        const uint32_t xv = te_ld32(xr + i);
                        const int32_t xa = __sxtab16(off, xv), xb = te_c_sxa13(off, xv);
                        uint32_t v = te_ld32(wr + i);
                        a0 = __smlad(te_sx02(v), xa, a0); a0 = __smlad(te_sx13(v), xb, a0);
                        v = te_ld32(wr + kk + i);
                        a1 = __smlad(te_sx02(v), xa, a1); a1 = __smlad(te_sx13(v), xb, a1);
                        v = te_ld32(wr + 2 * kk + i);
                        a2 = __smlad(te_sx02(v), xa, a2); a2 = __smlad(te_sx13(v), xb, a2);
                        v = te_ld32(wr + 3 * kk + i);
                        a3 = __smlad(te_sx02(v), xa, a3); a3 = __smlad(te_sx13(v), xb, a3);
                    }
#endif
                    for (; i < n; ++i) {
                        const int32_t xv = (int32_t)xr[i] - izp;
                        a0 += wr[i] * xv; a1 += wr[kk + i] * xv;
                        a2 += wr[2 * kk + i] * xv; a3 += wr[3 * kk + i] * xv;
                    }
                }
                const int32_t acc[4] = {a0, a1, a2, a3};
                for (int j = 0; j < step; ++j) {
                    const int c = o + j;
                    y[c] = te_c_requant(acc[j], mult[shift ? c : 0], shift ? shift[c] : s, rq);
                }
            }
        }
    }
}

#if TE_DSP
/* Channel c's rows into the plane (rows pw apart from d): ih rows of iw bytes, nc apart in the
 * input and one row after the other there. Four LDRBs at register offsets (any channel count)
 * packed into one word store: 11 instructions a word, against 3-4 a byte in C. */
TE_INLINE void te_c_gather(int8_t *d, const int8_t *s, int ih, int iw, int pw, int nc) {
    const int nc3 = 3 * nc, words = iw >> 2, rest = iw & 3;
    for (int iy = 0; iy < ih; ++iy, d += pw) {
        int8_t *dd = d;
        if (words) {
            int m = words;
            uint32_t t0, t1, t2, t3;
            __asm__ volatile("1:\n\tldrb %[t0], [%[s]]\n\tldrb %[t1], [%[s], %[c]]\n\t"
                             "ldrb %[t2], [%[s], %[c], lsl #1]\n\tldrb %[t3], [%[s], %[c3]]\n\t"
                             "add %[s], %[s], %[c], lsl #2\n\torr %[t0], %[t0], %[t1], lsl #8\n\t"
                             "orr %[t0], %[t0], %[t2], lsl #16\n\torr %[t0], %[t0], %[t3], lsl #24\n\t"
                             "str %[t0], [%[d]], #4\n\tsubs %[m], %[m], #1\n\tbne 1b"
                             : [s] "+r"(s), [d] "+r"(dd), [m] "+r"(m), [t0] "=&r"(t0),
                               [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
                             : [c] "r"(nc), [c3] "r"(nc3) : "cc", "memory");
        }
        for (int k = 0; k < rest; ++k, s += nc) dd[k] = *s;
    }
}

/* Kernel row words at k + OFF, (2 w0, 2 w2) and 2 w1, and the plane word at ADDR split into
 * its even bytes u = (x0, x2) and odd bytes t = (x1, x3). */
#define TE_C_DW3_LOAD(OFF, ADDR) \
    "ldrd %[wa], %[wb], [%[k], #" #OFF "]\n\tldr %[t], " ADDR "\n\tsxtb16 %[u], %[t]\n\t" \
    "sxtb16 %[t], %[t], ror #8\n\t"

/* One kernel row of the stride-1 step: the word from x0 serves the outputs at x0 and x1. */
#define TE_C_DW3_ROW(OFF, ADDR) \
    TE_C_DW3_LOAD(OFF, ADDR) "smlad %[a0], %[u], %[wa], %[a0]\n\t" \
    "smlabb %[a0], %[t], %[wb], %[a0]\n\tsmlad %[a1], %[t], %[wa], %[a1]\n\t" \
    "smlatb %[a1], %[u], %[wb], %[a1]\n\t"

/* The same at stride 2, a word per output. a0: (x0, x2) and x1 of the word at ADDR. a1 (window
 * x2..x4) reads the word from x1, one byte before its window, so that no load passes the
 * plane's end: (x2, x4) from its odd bytes, x3 from its even ones. */
#define TE_C_DW3_EVEN(OFF, ADDR) \
    TE_C_DW3_LOAD(OFF, ADDR) "smlad %[a0], %[u], %[wa], %[a0]\n\t" \
    "smlabb %[a0], %[t], %[wb], %[a0]\n\t"
#define TE_C_DW3_ODD(OFF, ADDR) \
    TE_C_DW3_LOAD(OFF, ADDR) "smlad %[a1], %[t], %[wa], %[a1]\n\t" \
    "smlatb %[a1], %[u], %[wb], %[a1]\n\t"

/* te_dsp_rq2 with the zero point in h (r->fast == 2), saturated to int8. */
#define TE_C_DW3_RQ(A) \
    "smmlar %[u], %[" A "], %[wa], %[wb]\n\tadd %[" A "], %[u], %[" A "], asr #31\n\t" \
    "asr %[" A "], %[" A "], %[t]\n\tssat %[" A "], #8, %[" A "]\n\t"

/* The step loop around MACS (a0 and a1 from the bias on): requantize, store, next step. */
#define TE_C_DW3_STEPS(MACS) \
    __asm__ volatile("1:\n\tldr %[a0], [%[k], #24]\n\tmov %[a1], %[a0]\n\t" MACS \
                     "ldrd %[wa], %[wb], [%[k], #28]\n\tldr %[t], [%[k], #36]\n\t" \
                     TE_C_DW3_RQ("a0") TE_C_DW3_RQ("a1") \
                     "strb %[a0], [%[y]]\n\tstrb %[a1], [%[y], %[c]]\n\t" \
                     "add %[y], %[y], %[c], lsl #1\n\tcmp %[p], %[e]\n\tbne 1b" \
                     : [a0] "=&r"(a0), [a1] "=&r"(a1), [t] "=&r"(t), [u] "=&r"(u), \
                       [wa] "=&r"(wa), [wb] "=&r"(wb), [p] "+r"(p), [y] "+r"(y) \
                     : [k] "r"(k), [P] "r"(pw), [c] "r"(nc), [e] "r"(e) : "cc", "memory")

/* A 3x3 output row of one channel, two outputs a step: n steps from the window at plane
 * position w (the loads pre-increment the pointer), outputs nc apart from y. Stride 1: one
 * word of each kernel row serves both outputs; stride 2: a word each (the kernel rows loaded
 * again). k: the channel's record, (2 w0, 2 w2) and 2 w1 of each kernel row, 2 bias, q, h, r.
 * The plane pitch and the channel stride are registers, so one copy serves every layer. */
TE_INLINE void te_c_dw3_steps(const int8_t *w, int8_t *y, const int32_t *k, int n, int pw, int nc,
                              int sw) {
    const int8_t *p = w - 1 - sw, *const e = p + 2 * sw * n;
    int32_t a0, a1, t, u, wa, wb;
    if (sw == 1) {
        TE_C_DW3_STEPS(TE_C_DW3_ROW(0, "[%[p], #2]!") TE_C_DW3_ROW(8, "[%[p], %[P]]")
                       TE_C_DW3_ROW(16, "[%[p], %[P], lsl #1]"));
    } else {
        TE_C_DW3_STEPS(TE_C_DW3_EVEN(0, "[%[p], #3]!") TE_C_DW3_EVEN(8, "[%[p], %[P]]")
                       TE_C_DW3_EVEN(16, "[%[p], %[P], lsl #1]")
                       TE_C_DW3_ODD(0, "[%[p], #1]!") TE_C_DW3_ODD(8, "[%[p], %[P]]")
                       TE_C_DW3_ODD(16, "[%[p], %[P], lsl #1]"));
    }
}
#endif

/* Channel by channel: the input channel is gathered into the plane (whose ring holds the
 * zero point, written once per call), then the output channel is computed from the plane and
 * written to its slots. Output (y, x, c) sits in a slot of channel c, already gathered, so the
 * output may lie over the input, as the specialized in-place depthwise kernel allows. */
TE_SHARED void te_c_dw(const te_dw_p *p, const int8_t *x, int8_t *y, int8_t *plane) {
    const int nc = p->c, iw = p->iw, pw = p->pw, kh = p->kh, kw = p->kw, ow = p->ow;
    const te_rq_p *const rq = &p->rq;
#if TE_DSP
    /* 3x3, stride 1 or 2 across, outputs that only saturate at the int8 range: the asm steps. */
    const int sw = p->sw, steps = rq->fast == 2 && kh == 3 && kw == 3 && sw <= 2 && ow >= 2;
#endif
    /* Locals: p-> after an int8 store would be read again (the store may alias it). */
    const int8_t izp = p->izp;
    const int plane_bytes = p->ph * pw;
    for (int i = 0; i < plane_bytes; ++i) plane[i] = izp;
    for (int c = 0; c < nc; ++c) {
#if TE_DSP
        te_c_gather(plane + p->pt * pw + p->pl, x + c, p->ih, iw, pw, nc);
#else
        for (int iy = 0; iy < p->ih; ++iy) {
            int8_t *dst = plane + (iy + p->pt) * pw + p->pl;
            const int8_t *src = x + iy * iw * nc + c;
            for (int ix = 0; ix < iw; ++ix) dst[ix] = src[ix * nc];
        }
#endif
        const int8_t *wc = p->w + c * kh * kw;
        const int32_t b = p->bias[c], q = p->mult[p->shift ? c : 0];
        const int s = p->shift ? p->shift[c] : p->s;
#if TE_DSP
        if (steps) {
            const int r = -s;
            int32_t k[10];
            for (int ky = 0; ky < 3; ++ky) {
                k[2 * ky] = te_pack16(2 * wc[3 * ky], 2 * wc[3 * ky + 2]);
                k[2 * ky + 1] = 2 * wc[3 * ky + 1];
            }
            k[6] = (int32_t)((uint32_t)b << 1);
            k[7] = q;
            k[8] = (int32_t)((uint32_t)(2 * rq->zp + 1) << (r - 1));
            k[9] = r;
            for (int oy = 0; oy < p->oh; ++oy) {
                const int8_t *const row = plane + oy * p->sh * pw;
                int8_t *const yc = y + oy * ow * nc + c;
                /* An odd row takes its last step again over its last two outputs (the same
                 * values written twice). One call site: one copy of the asm. */
                for (int j = 0; j <= (ow & 1); ++j) {
                    const int at = j ? ow - 2 : 0;
                    te_c_dw3_steps(row + at * sw, yc + at * nc, k, j ? 1 : ow >> 1, pw, nc, sw);
                }
            }
            continue;
        }
#endif
        for (int oy = 0; oy < p->oh; ++oy) {
            const int8_t *prow = plane + oy * p->sh * pw;
            int8_t *yc = y + oy * ow * nc + c;
            for (int ox = 0; ox < ow; ++ox, yc += nc) {
                const int8_t *win = prow + ox * p->sw;
                int32_t acc = b;
                for (int ky = 0; ky < kh; ++ky) {
                    for (int kx = 0; kx < kw; ++kx) acc += (int32_t)wc[ky * kw + kx] * win[ky * pw + kx];
                }
                *yc = te_c_requant(acc, q, s, rq);
            }
        }
    }
}

#endif
