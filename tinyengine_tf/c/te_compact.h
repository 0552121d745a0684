/* tinyengine-tf compact kernels: convert(..., optimize="size").
 *
 * One function per kernel family serves every layer of the model: the layer's sizes, strides,
 * padding and quantization are read from a small const descriptor (te_conv_p, te_dw_p) instead
 * of being literals in an unrolled specialization, so the code is paid once per model rather
 * than once per layer. Arithmetic is TFLite Micro's (te_mbqm for every output, every tap that
 * falls inside the input, int32 sums), so each function equals TFLM on any target; under TE_DSP
 * the dot products run two MACs per SMLAD. Header-only, C99, no heap, no recursion. */
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
 * 1 <= -s <= 31) lets the DSP path use te_dsp_rq, a few instructions, instead of te_mbqm. */
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

/* Channel by channel: the input channel is gathered into the plane (whose ring holds the
 * zero point, written once per call), then the output channel is computed from the plane and
 * written to its slots. Output (y, x, c) sits in a slot of channel c, already gathered, so the
 * output may lie over the input, as the specialized in-place depthwise kernel allows. */
TE_SHARED void te_c_dw(const te_dw_p *p, const int8_t *x, int8_t *y, int8_t *plane) {
    const int nc = p->c, iw = p->iw, pw = p->pw, kh = p->kh, kw = p->kw, ow = p->ow;
    const te_rq_p *const rq = &p->rq;
    for (int i = 0; i < p->ph * pw; ++i) plane[i] = p->izp;
    for (int c = 0; c < nc; ++c) {
        for (int iy = 0; iy < p->ih; ++iy) {
            int8_t *dst = plane + (iy + p->pt) * pw + p->pl;
            const int8_t *src = x + iy * iw * nc + c;
            for (int ix = 0; ix < iw; ++ix) dst[ix] = src[ix * nc];
        }
        const int8_t *wc = p->w + c * kh * kw;
        const int32_t b = p->bias[c], q = p->mult[p->shift ? c : 0];
        const int s = p->shift ? p->shift[c] : p->s;
        for (int oy = 0; oy < p->oh; ++oy) {
            const int8_t *prow = plane + oy * p->sh * pw;
            int8_t *yc = y + oy * ow * nc + c;
            int ox = 0;
#if TE_DSP
            /* Three taps a row, stride 1: one word of the plane row serves two outputs,
             * bytes (0, 2) and (1, 3) against the weight pair (w0, w2), and w1 on the middle
             * bytes. The word's fourth byte is read only where the second output exists. */
            if (kw == 3 && p->sw == 1) {
                for (; ox + 2 <= ow; ox += 2, yc += 2 * nc) {
                    int32_t e = b, f = b;
                    for (int ky = 0; ky < kh; ++ky) {
                        const int8_t *wk = wc + 3 * ky;
                        const int32_t w02 = te_pack16(wk[0], wk[2]), w1 = wk[1];
                        const uint32_t v = te_ld32(prow + ky * pw + ox);
                        const int32_t v02 = te_sx02(v), v13 = te_sx13(v);
                        e = __smlad(w02, v02, e); e = __smlabb(w1, v13, e);
                        f = __smlad(w02, v13, f); f = __smlabt(w1, v02, f);
                    }
                    yc[0] = te_c_requant(e, q, s, rq);
                    yc[nc] = te_c_requant(f, q, s, rq);
                }
            }
#endif
            for (; ox < ow; ++ox, yc += nc) {
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
