/* tinyengine-tf 16x8 helpers: TFLite Micro's 64-bit MultiplyByQuantizedMultiplier (double-rounding
 * build). `reduced` is the 16-bit multiplier ((q + 2^15) >> 16, or 0x7FFF) and `total` is
 * 15 - shift (8..46), both computed by the generator. The product stays below 2^62 for the
 * accumulators the generator admits (|acc| < 2^47). */
#ifndef TE_INT16_H
#define TE_INT16_H
#include <stdint.h>

static inline int32_t te_mbqm64(int64_t acc, int32_t reduced, int total) {
    const int64_t r = acc * (int64_t)reduced + ((int64_t)1 << (total - 1));
    return (int32_t)(r >> total);
}

#endif
