"""The CONV_2D "s" form: one output channel's filter held in registers against a stream of
expanded pixels (the pointwise layers of 8 input channels: MobileNetV2's expansions, VWW's
second conv). conv_dsp.py has the overview and chooses the form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.conv_dsp_base import DSP_STACK, _DspPlan, _dsp_expand_filters
from tinyengine_tf.kernels.conv_dsp_e import _e_expand_n

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# -- "s" form: 1 channel x a stream of pixels ------------------------------------------------
#
# With 8 input channels the "e" form's 2 x 2 tile spends as much outside its word steps (the
# requantization's loads, the accumulators' start, the pointers: ~29 instructions) as in them
# (24 for 32 MACs): 1.66-1.73 instructions per MAC. Here a channel's 4 expanded filter words,
# its bias, multiplier, rounding constant and shift stay in registers while one asm loop runs
# over a block of expanded pixels: per pixel 2 LDRD and 4 SMLAD (the first onto the bias), then
# SMMLAR, ASR, SSAT and a post-indexed STRB, 10 instructions for 8 MACs. That takes 13 registers
# (the most an asm statement gets where r7 is the frame pointer), none left for a loop counter
# or an end pointer: the block is a power of two of 16-byte pixels at an address aligned to its
# size, and the loop ends when the pixel pointer's low bits wrap to zero (LSLS). Blocks of
# S_BLOCK pixels (the last overlapping the one before) are expanded once for every channel.

S_BLOCK = 32          # pixels per block, a power of two (16 B each, 512 B aligned)
S_MIN_BLOCK = 8       # below, the per-channel set-up outweighs what the stream saves
S_UNROLL = 4          # pixels per turn of the loop (its test and branch: 0.5 instructions a pixel)


def _s_block(L: _Layer, nw: int, pixels: int) -> int:
    """Pixels per "s"-form block, or 0 where the form does not apply: flat 1x1 layers of 8
    input channels whose requantization ends at the int8 range (SSAT) and whose channel
    stride a post-indexed store reaches."""
    rq = L.rq
    if not (L.flat and L.ic == 8 and nw == 2 and L.groups == 1 and not L.wide
            and 1 <= L.oc <= 255 and rq.ok and rq.doubled and rq.finish("v") == "__ssat(v, 8)"):
        return 0
    block = S_BLOCK
    while block > pixels:
        block //= 2
    # expanded filters and biases, the block and its alignment slack
    if block < S_MIN_BLOCK or 20 * L.oc + 32 * block > DSP_STACK:
        return 0
    return block


def _s_rq(positive: bool) -> list:
    """te_dsp_rq2(_pos) of the accumulator in asm (x0 is free by then)."""
    if positive:
        return ["smmlar %[acc], %[acc], %[q], %[h]"]
    return ["smmlar %[x0], %[acc], %[q], %[h]", "add %[acc], %[x0], %[acc], asr #31"]


def _s_stream(L: _Layer, block: int) -> str:
    """The asm loop over the block: S_UNROLL pixels a turn, each one output of channel o."""
    pixel = ["ldrd %[x0], %[x1], [%[e]], #16",
             "smlad %[acc], %[x0], %[f0], %[bias]",
             "smlad %[acc], %[x1], %[f1], %[acc]",
             "ldrd %[x0], %[x1], [%[e], #-8]",
             "smlad %[acc], %[x0], %[f2], %[acc]",
             "smlad %[acc], %[x1], %[f3], %[acc]",
             *_s_rq(L.rq.positive),
             "asr %[acc], %[acc], %[r]",
             "ssat %[acc], #8, %[acc]",
             f"strb %[acc], [%[y]], #{L.oc}"]
    # Z once the pointer has passed the block's last pixel: its low log2(16 block) bits are 0.
    bits = (16 * block).bit_length() - 1
    lines = ["1:", *pixel * S_UNROLL, f"lsls %[x0], %[e], #{32 - bits}", "bne 1b"]
    asm = "\\n\\t".join(lines)
    return f"""{{
          const int32_t *e = xx;
          int8_t *y = out0 + p0 * {L.oc} + o;
          int32_t x0, x1, acc;
          __asm__ volatile("{asm}"
                           : [e] "+r"(e), [y] "+r"(y), [x0] "=&r"(x0), [x1] "=&r"(x1),
                             [acc] "=&r"(acc)
                           : [f0] "r"(f[0]), [f1] "r"(f[1]), [f2] "r"(f[2]), [f3] "r"(f[3]),
                             [bias] "r"(bias), [q] "r"(q), [h] "r"(h), [r] "r"(r)
                           : "cc", "memory");
        }}"""


def _dsp_s_form(L: _Layer, P: _DspPlan) -> str:
    block = P.pb
    total = L.n * L.win.oh * L.win.ow
    per_channel = L.tables[0] is not None
    if per_channel:
        rq = L.rq.setup("", "o", *L.tables)
    else:
        q, h, r = L.rq.tail_values(False)
        rq = f"const int32_t q = {q}, h = {h}; const int r = {r};"
    return f"""
  int32_t wx[{4 * L.oc}];
  int32_t bx[{L.oc}];
  int32_t xbuf[{8 * block}];
  /* the block at an address aligned to its {16 * block} bytes: the stream ends on it */
  int32_t *const xx = (int32_t *)(((uintptr_t)xbuf + {16 * block - 1}u) & ~(uintptr_t){16 * block - 1}u);
  {{
    const int c0 = 0;
    {_dsp_expand_filters(L, P, co=L.oc)}
  }}
  for (int i_b = 0; i_b < {-(-total // block)}; ++i_b) {{
    {dsp.tile_start("p0", "i_b", total, block)}
    const int8_t *xp = in0 + p0 * 8;
    {_e_expand_n(str(2 * block))}
    for (int o = 0; o < {L.oc}; ++o) {{
      const int32_t *const f = wx + 4 * o;
      const int32_t bias = bx[o];
      {rq}
      {_s_stream(L, block)}
    }}
  }}"""
