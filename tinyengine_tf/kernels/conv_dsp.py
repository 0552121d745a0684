"""CONV_2D on the Arm DSP extension (c/te_dsp.h): the ``#if TE_DSP`` branch of conv.py's layers.

conv.py holds the portable loops (the dot and broadcast forms) and decides everything a layer's
arrays depend on (_Layer); this module only reads those arrays, so Flash does not depend on the
target. Tiles of pixels x output channels, two MACs per SMLAD. This module chooses a layer's
form (_dsp_plan) and emits it (dsp_body); each form lives in a module of its own, named after it
(conv_dsp_wxd.py, conv_dsp_p.py, conv_dsp_e.py, conv_dsp_s.py, conv_dsp_r.py, conv_dsp_o.py),
and what they share in conv_dsp_base.py.

Each kernel row's run of kw * ic input bytes is read a word at a time; sign-extending bytes 0/2
and 1/3 of a word pairs them with the same bytes of the matching filter word. One side of the
product is read straight from its array (a word and two extends per 4 values); the other is
expanded once into int16 pairs on the stack and read back as two words per 4 values (LDRD):

- "w" form: the filters of a chunk of output channels are expanded once per call (doubled, so
  the accumulators hold 2 * acc and requantization skips a shift), the input is read directly.
  Cheap when many pixels share the expansion; large layers take 3-pixel tiles.
- "x" form: the window of two pixels is expanded (as 2 (x + 128), unsigned, against the dot
  form's bias) once per pixel pair and every output channel reads it; the filters are read in
  place, which needs them in [o][ky][kx][c] order (the dot form). Cheap when few pixels share
  many channels (the late, small layers). Windows past ~1 KB are interleaved word step by word
  step, so a step's pixels stay within LDRD's reach.
- "d" form: both sides read in place, for windows too large to expand (4 instructions more
  per 16 MACs), with the bias corrected once per call for the signed input.
- "p" form (1x1 stride-1 layers over whole words): like "x", but tiles of P = 3-6 pixels x 1
  channel, one filter word against P expanded pixels: 0.875-1.0 instructions per MAC in the
  loop (1.0 for "x"), one channel's multipliers serve P outputs, and P can divide the pixels. Chosen where its estimate
  beats the "x" or "w" form's (see _p_pixels). Each tile's pixels are expanded by an asm loop
  (11 instructions per 2 words), every channel's q, h, r once per call where they fit on the stack,
  and pixels P does not divide end in a tile of their own where that pays for its code
  (_p_tail).
- widened "p" form (only where convert(flash=...) leaves room for the filter as int16: the
  Flash planner, api._widen_in_flash, picks the layers): 3 pixels (2 where 3 windows would not
  fit the stack) x 1 channel, a step of 8 inputs one LDM of the filter and one per pixel of its
  expanded window, 0.67 instructions per MAC in the loop. Pointwise layers of 64 channels and
  up (VWW's 0.96 -> 0.73-0.85) and windowed ones over 8k channels, any stride and padding
  (ResNet's 3x3 layers, 0.97-1.18 -> 0.76-0.94).
- "e" form (unpadded 1x1 layers of 8-32 input channels, where "w" would be used; 8 where "s"
  does not apply): both sides expanded, the filters once per call as in "w", a block of pixels
  once per chunk of channels;
  2 x 2 tiles of 4 LDRD and 8 SMLAD per word step (0.75 instructions per MAC in the loop); a
  per-channel layer's q, h, r are computed once per chunk of channels (_e_rq).
- "s" form (flat 1x1 layers of 8 input channels whose outputs saturate at the int8 range, where
  "e" would be used): one channel's 4 expanded filter words and its requantization in
  registers against a stream of expanded pixels, 10.5 instructions per 8 MACs (VWW's second
  conv 1.73 -> 1.49, MobileNetV2's expansions 1.70 -> 1.52).
- "r" form (kernels wider than 1x1 over 8k input channels, where "w" would be used): as "e",
  but what is expanded per chunk of channels is the kernel rows under a block of outputs of
  one output row (zero point outside the image), which every window of the block reads at a
  word offset (ResNet's 3x3 16-channel layers: 0.97-1.05 instructions per MAC against 1.15-1.2).
- "o" form (one input channel, stride 2 across: KWS's first layer): the padded image expanded
  once per call into int16 x - zp, tiles of up to 5 pixels x 1 channel sharing each kernel
  row's input words (see _dsp_o_form). Its row variant takes three input channels (the RGB
  first layers: VWW's 1.54 -> 1.35 instructions per MAC, MobileNetV2's 1.54 -> 1.30, ResNet's
  at stride 1 1.54 -> 1.37), expanding the kernel rows of one output row at a time.

The "p" form and the flat "e" form read their pixel and channel counts (and chunk and block
sizes) as parameters, their asm depending only on the tile and the words per filter run: they
are Shareable blocks (kernels/base.py), so layers of one tile (and, for "e", one input width)
call one function for them (codegen._shareable_groups: VWW's 13 pointwise layers run three
shared functions and two of their own). A layer alone in its form keeps its block inline, the
sizes constants.

The multiply-accumulates of one word step are asm statements (gcc's scheduler would hoist all
loads of a C version and spill). A run whose length is not a multiple of 4 ends with a word that
overlaps its predecessor; the expanded side holds zeros for the overlapped bytes, so no read
leaves the run. A tile whose windows leave the input (padding) first copies them into a small
zero-point-filled patch laid out like the input, then runs the same code. Short kernel rows
(the first layers' 1-3 input channels) are written out rather than looped over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyengine_tf.kernels.base import Shareable
from tinyengine_tf.kernels.conv_dsp_base import (DSP_LONG_UNROLL, DSP_STACK, DSP_STACK_FEW,
                                                 DSP_WIDE, DSP_WIDE_MACS, _DspPlan)
from tinyengine_tf.kernels.conv_dsp_e import _dsp_e_form, _e_chunk
from tinyengine_tf.kernels.conv_dsp_o import _dsp_o_form, _o_plan
from tinyengine_tf.kernels.conv_dsp_p import _dsp_p_form, _p_pixels, _pw_pixels
from tinyengine_tf.kernels.conv_dsp_r import _dsp_r_form, _r_plan
from tinyengine_tf.kernels.conv_dsp_s import _dsp_s_form, _s_block
from tinyengine_tf.kernels.conv_dsp_wxd import _dsp_d_form, _dsp_w_form, _dsp_x_form

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


def _dsp_plan(L: _Layer) -> _DspPlan | None:
    w = L.win
    R = L.kw * L.ic
    if L.groups != 1 or w.dw != 1 or R < 4 or L.k > 4096:
        return None
    pixels = L.n * w.oh * w.ow
    run = pixels if L.flat else w.ow
    nw = -(-R // 4)
    budget = DSP_STACK_FEW if L.ic <= 3 else DSP_STACK
    if L.wide:
        return _DspPlan("p", R, nw, 1, _pw_pixels(L))
    sb = _s_block(L, nw, pixels)
    if sb:
        return _DspPlan("s", R, nw, 1, sb, L.oc)
    ob, pb = min(2, L.oc), min(2, run)
    per_channel = 8 * L.kh * nw + 4           # expanded filter and bias
    per_pixel = 8 * L.kh * nw
    patch = 0 if L.flat else L.kh * (L.kw + (pb - 1) * w.sw) * L.ic
    x_ok = L.dot and pb * per_pixel + patch <= budget
    w_ok = ob * per_channel + patch <= budget
    # Instructions per MAC each form spends outside its multiply-accumulates: "x" expands 2 pixel
    # windows (~1.5 per byte) for every oc channels and loads each tile's multipliers (~3 per
    # output); "w" expands every filter once per call (~2 per weight read a word at a time, ~8
    # byte by byte) for all pixels.
    cost_x = 1.5 / L.oc + 3.0 / L.k
    cost_w = (2.0 if L.dot and R % 4 == 0 else 8.0) / pixels
    # The "w" form takes tiles of 3 pixels x 2 channels: three direct operands (a word load and
    # two extends each) against two expanded ones, six accumulators, the most the registers
    # hold; 8% fewer instructions than 2 x 2 for some 100 bytes of code, spent on layers of at
    # least DSP_WIDE_MACS. (The "x" and "d" forms would gain 3%: they keep 2 x 2.)
    if x_ok and (cost_x < cost_w or not w_ok):
        pp = _p_pixels(L, nw, pixels)
        if pp:
            return _DspPlan("p", R, nw, 1, pp)
        # Windows of more than ~1 KB (ResNet's 3x3 64-channel layers): the second pixel's words
        # would lie beyond LDRD's reach of the first's, and the word steps fall back to C (which
        # gcc schedules into reloads: 1.29 instructions per MAC there); interleaved, a step's
        # pixels are 8 bytes apart.
        il = 4 * 2 * L.kh * nw * (pb - 1) + 8 * DSP_LONG_UNROLL > 1020
        return _DspPlan("x", R, nw, ob, pb, il=il)
    # Pointwise layers the "w" form would take: the "p" form where its estimate is lower (it
    # expands each tile's pixels once for every channel; "w" expands the filters once).
    pp = _p_pixels(L, nw, pixels, against_w=True)
    if pp:
        return _DspPlan("p", R, nw, 1, pp)
    # Where the "w" form's per-call filter expansion pays, the "e" form's does too (the same
    # expansion; the pixels' costs 1 per word and channel chunk).
    co = _e_chunk(L, nw, pixels)
    if co:
        return _DspPlan("e", R, nw, 2, 2, co)
    r = _r_plan(L, nw, budget)
    if r:
        return _DspPlan("r", R, nw, 2, r[1], r[0])
    if not w_ok:
        # Neither side fits expanded: read both in place (4 more instructions per 16 MACs).
        if L.dot and R % 4 == 0 and L.k < 4000 and 4 * L.oc + patch <= budget:
            return _DspPlan("d", R, nw, ob, pb)
        return None
    if pixels * L.oc * L.k >= DSP_WIDE_MACS and _wide_pays(L, nw, run):
        pb = min(DSP_WIDE, run)
        patch = 0 if L.flat else L.kh * (L.kw + (pb - 1) * w.sw) * L.ic
    # Chunks of whole tiles that divide the channels (no chunk recomputes another's), else
    # near-equal ones whose last overlaps the one before.
    most = max(ob, (budget - patch) // per_channel // ob * ob)
    fits = [c for c in range(ob, min(most, L.oc) + 1, ob) if L.oc % c == 0]
    if L.oc <= most:
        co = L.oc
    elif fits and 2 * max(fits) >= most:
        co = max(fits)
    else:
        chunks = -(-L.oc // most)
        co = min(L.oc, -(-(-(-L.oc // chunks)) // ob) * ob)
    return _DspPlan("w", R, nw, ob, pb, co)


def _wide_pays(L: _Layer, nw: int, run: int) -> bool:
    """Whether 3-pixel "w" tiles beat 2-pixel ones over rows of `run` outputs: 23 instructions
    per word step against 16, and some 60 against 50 per tile for its outputs, but a row whose
    length 3 does not divide recomputes the overlap (2 of ResNet's 16 outputs: 12%)."""
    steps = L.kh * nw
    def cost(p: int) -> int:
        return -(-run // p) * (steps * (23 if p == 3 else 16) + (60 if p == 3 else 50))
    return cost(min(DSP_WIDE, run)) <= cost(min(2, run))


def dsp_body(L) -> tuple[str, Shareable | None] | None:
    """(the layer body under #if TE_DSP, the Shareable block it is where the form reads its
    sizes at run time), or None where no DSP form applies (portable loops)."""
    O = _o_plan(L)
    if O is not None:
        return _dsp_o_form(L, O), None
    P = _dsp_plan(L)
    if P is None:
        return None
    code = {"w": _dsp_w_form, "x": _dsp_x_form, "d": _dsp_d_form, "p": _dsp_p_form,
            "e": _dsp_e_form, "r": _dsp_r_form, "s": _dsp_s_form}[P.form](L, P)
    if isinstance(code, Shareable):
        return code.inline(), code
    return code, None
