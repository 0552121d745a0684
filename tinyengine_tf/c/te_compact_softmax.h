/* tinyengine-tf, optimize="size": the softmax exponential out of line. The specialized softmax
 * inlines it twice (the sum and the outputs); one shared copy is about half the layer's code. */
#ifndef TE_COMPACT_SOFTMAX_H
#define TE_COMPACT_SOFTMAX_H
#include "te_compact.h"
#include "te_softmax.h"

TE_SHARED int32_t te_c_softmax_exp(int32_t diff, int32_t multiplier, int left_shift) {
    return te_softmax_exp(diff, multiplier, left_shift);
}

#endif
