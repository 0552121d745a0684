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

/* CONV_2D with one group (and FULLY_CONNECTED as a 1x1 conv): weights [oc][kh][kw][ic]. */
typedef struct {
    const int8_t *w;
    const int32_t *bias;      /* [oc] */
    const int32_t *mult;      /* [oc], or NULL: q for every channel */
    const int8_t *shift;      /* [oc], or NULL: s for every channel */
    int32_t q;
    uint16_t ih, iw, ic, oh, ow, oc;
    uint8_t kh, kw, sh, sw, pt, pl;
    int8_t izp, ozp, lo, hi, s;
} te_conv_p;

/* DEPTHWISE_CONV_2D in place (depth multiplier 1): weights [c][kh][kw], bias with the input
 * zero point folded in (bias - izp * sum w), a scratch plane of ph x pw bytes. */
typedef struct {
    const int8_t *w;
    const int32_t *bias;
    const int32_t *mult;
    const int8_t *shift;
    int32_t q;
    uint16_t ih, iw, c, oh, ow, ph, pw;
    uint8_t kh, kw, sh, sw, pt, pl;
    int8_t izp, ozp, lo, hi, s;
} te_dw_p;

TE_SHARED int8_t te_c_requant(int32_t acc, int32_t q, int s, int zp, int lo, int hi) {
    return (int8_t)te_clamp(te_mbqm(acc, q, s) + zp, lo, hi);
}

#if TE_DSP
/* Bytes 1 and 3 of w sign-extended, plus the halfwords of a (one instruction). */
TE_INLINE int32_t te_c_sxa13(uint32_t a, uint32_t w) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(w));
    return r;
}
#endif

/* acc[j] += sum_i w[j*k + i] * (x[i] - izp) for j < nb (4 or 1), i < n. */
TE_INLINE void te_c_dot(const int8_t *x, const int8_t *w, int k, int n, int nb, int izp,
                        int32_t *acc) {
    int i = 0;
#if TE_DSP
    /* x - izp for two bytes at once: |x - izp| <= 255 fits each halfword. */
    const uint32_t off = ((uint32_t)(-izp) & 0xffffu) * 0x10001u;
    if (nb == 4) {
        int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        for (; i + 4 <= n; i += 4) {
            const uint32_t xv = te_ld32(x + i);
            const int32_t xa = __sxtab16(off, xv), xb = te_c_sxa13(off, xv);
            uint32_t v = te_ld32(w + i);
            a0 = __smlad(te_sx02(v), xa, a0); a0 = __smlad(te_sx13(v), xb, a0);
            v = te_ld32(w + k + i);
            a1 = __smlad(te_sx02(v), xa, a1); a1 = __smlad(te_sx13(v), xb, a1);
            v = te_ld32(w + 2 * k + i);
            a2 = __smlad(te_sx02(v), xa, a2); a2 = __smlad(te_sx13(v), xb, a2);
            v = te_ld32(w + 3 * k + i);
            a3 = __smlad(te_sx02(v), xa, a3); a3 = __smlad(te_sx13(v), xb, a3);
        }
        acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    } else {
        int32_t a0 = acc[0];
        for (; i + 4 <= n; i += 4) {
            const uint32_t xv = te_ld32(x + i), v = te_ld32(w + i);
            a0 = __smlad(te_sx02(v), __sxtab16(off, xv), a0);
            a0 = __smlad(te_sx13(v), te_c_sxa13(off, xv), a0);
        }
        acc[0] = a0;
    }
#endif
    for (; i < n; ++i) {
        const int32_t xv = (int32_t)x[i] - izp;
        for (int j = 0; j < nb; ++j) acc[j] += (int32_t)w[j * k + i] * xv;
    }
}

/* Taps outside the input are skipped (TFLM's zero-point padding): per output pixel the
 * in-bounds kernel rows and columns are found once, and each in-bounds kernel row is one
 * contiguous run of (kx1 - kx0) * ic input bytes, against a contiguous run of weights. */
TE_SHARED void te_c_conv(const te_conv_p *p, const int8_t *x, int8_t *y) {
    const int ic = p->ic, ih = p->ih, iw = p->iw, kh = p->kh, kw = p->kw, oc = p->oc;
    const int k = kh * kw * ic;
    for (int oy = 0; oy < p->oh; ++oy) {
        const int y0 = oy * p->sh - p->pt;
        const int ky0 = y0 < 0 ? -y0 : 0, ky1 = ih - y0 < kh ? ih - y0 : kh;
        for (int ox = 0; ox < p->ow; ++ox, y += oc) {
            const int x0 = ox * p->sw - p->pl;
            const int kx0 = x0 < 0 ? -x0 : 0, kx1 = iw - x0 < kw ? iw - x0 : kw;
            const int n = (kx1 - kx0) * ic;
            for (int o = 0; o < oc;) {
                const int nb = oc - o >= 4 ? 4 : 1;
                int32_t acc[4];
                for (int j = 0; j < nb; ++j) acc[j] = p->bias[o + j];
                if (n > 0) {
                    for (int ky = ky0; ky < ky1; ++ky) {
                        te_c_dot(x + ((y0 + ky) * iw + x0 + kx0) * ic,
                                 p->w + o * k + (ky * kw + kx0) * ic, k, n, nb, p->izp, acc);
                    }
                }
                for (int j = 0; j < nb; ++j, ++o) {
                    y[o] = te_c_requant(acc[j], p->mult ? p->mult[o] : p->q,
                                        p->shift ? p->shift[o] : p->s, p->ozp, p->lo, p->hi);
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
    const int nc = p->c, iw = p->iw, pw = p->pw, kh = p->kh, kw = p->kw;
    for (int i = 0; i < p->ph * pw; ++i) plane[i] = p->izp;
    for (int c = 0; c < nc; ++c) {
        for (int iy = 0; iy < p->ih; ++iy) {
            int8_t *dst = plane + (iy + p->pt) * pw + p->pl;
            const int8_t *src = x + iy * iw * nc + c;
            for (int ix = 0; ix < iw; ++ix) dst[ix] = src[ix * nc];
        }
        const int8_t *wc = p->w + c * kh * kw;
        const int32_t b = p->bias[c], q = p->mult ? p->mult[c] : p->q;
        const int s = p->shift ? p->shift[c] : p->s;
        int8_t *yc = y + c;
        for (int oy = 0; oy < p->oh; ++oy) {
            for (int ox = 0; ox < p->ow; ++ox, yc += nc) {
                const int8_t *win = plane + oy * p->sh * pw + ox * p->sw;
                int32_t acc = b;
                for (int ky = 0; ky < kh; ++ky) {
                    for (int kx = 0; kx < kw; ++kx) acc += (int32_t)wc[ky * kw + kx] * win[ky * pw + kx];
                }
                *yc = te_c_requant(acc, q, s, p->ozp, p->lo, p->hi);
            }
        }
    }
}

#endif
