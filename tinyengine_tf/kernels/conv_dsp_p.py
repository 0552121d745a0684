"""The CONV_2D "p" form, P pixels x 1 output channel (the pointwise layers), and its widened
variant over int16 filters, where the Flash planner (api._widen_in_flash) gives them room
(pointwise and windowed layers). conv_dsp.py has the overview and chooses the form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyengine_tf.kernels.base import Shareable
from tinyengine_tf.kernels.conv_dsp_base import (DSP_STACK, DSP_WIDE, E_RQ_WORDS, _DspPlan,
                                                 _rq_params)

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# -- "p" form: P pixels x 1 output channel ----------------------------------------------------
#
# The "x" form's 2 x 2 tile spends 16 instructions per word step on 16 MACs: 2 LDRD of expanded
# pixels, 2 LDR and 4 extends of filter words, 8 SMLAD. One filter word (LDR and 2 extends) against
# P expanded pixels (an LDRD and 2 SMLAD each) takes 3 + 3P for 4P MACs: 0.94 per MAC at P = 4,
# 0.875 at 6, and P accumulators share one channel's multiplier, shift and bias. The asm holds
# the P accumulators, the filter word's two halves, one pixel's expanded pair and three pointers:
# P <= 6 within 13 registers. Pixels are expanded interleaved (word step s of pixel q at
# xx[(s * P + q) * 2]), so every load of a step is within LDRD's reach of one pointer. For 1x1
# stride-1 layers over whole words (the pointwise layers of MobileNet and DS-CNN), where the
# "x" form would be used.

P_MAX = 6
P_UNROLL = 4          # word steps per loop iteration
# Runs of multiples of P_LONG_UNROLL words (32 input channels and up) take that many a turn:
# the loop's compare and branch cost 4 instructions per tile and channel less on KWS's
# 64-channel layers (8 on VWW's 128) for 4 more steps of code (~300 B).
P_LONG_UNROLL = 8


def _p_unroll(nw: int) -> int:
    return P_LONG_UNROLL if nw % P_LONG_UNROLL == 0 else P_UNROLL


def _p_pixels(L: _Layer, nw: int, pixels: int, against_w: bool = False) -> int:
    """Pixels per "p"-form tile (0: keep the other form): the count, 3 to P_MAX, whose tiles
    (the last overlapping) take the fewest instructions, if fewer than the "x" form's 2 x 2
    tiles (or the "w" form's 3 x 2 ones). Per tile: the word steps, about 6 per output for the
    requantization and 35 for the loop, the multipliers and the accumulators (fitted to
    VWW's layers), and 7 per pixel word for the expansion."""
    if not (L.flat and L.dot and L.ic % 4 == 0 and pixels >= 4):
        return 0
    return _p_best(L, nw, pixels, against_w)[0]


def _p_best(L: _Layer, nw: int, pixels: int, against_w: bool = False) -> tuple[int, int]:
    """(pixels per "p"-form tile, 0 where none beats the other form; the estimated instructions
    per call of the form taken) for _p_pixels and the Flash planner."""
    steps = nw
    if against_w:
        best_cost = -(-pixels // DSP_WIDE) * -(-L.oc // 2) * (23 * steps + 60)
    else:
        best_cost = -(-pixels // 2) * -(-L.oc // 2) * (16 * steps + 40)
    best = 0
    for P in range(3, min(P_MAX, pixels) + 1):
        if P * 8 * nw > DSP_STACK:
            break
        cost = _p_cost(L, nw, pixels, P)
        if cost < best_cost:
            best, best_cost = P, cost
    return best, best_cost


def _p_cost(L: _Layer, nw: int, pixels: int, P: int) -> int:
    return -(-pixels // P) * (L.oc * ((3 + 3 * P) * nw + 6 * P + 35) + 7 * P * nw)


def _p_records(L: _Layer, pb: int, nw: int) -> int:
    """Words of every channel's requantization record where they fit on the stack beside the
    expanded pixels, else 0 (VWW's 256-channel layers keep reading the tables): q, h, r, and
    for the widened form the bias first where that fits too."""
    for words in ((E_RQ_WORDS + 1, E_RQ_WORDS) if L.wide else (E_RQ_WORDS,)):
        if 4 * words * L.oc + 8 * pb * nw <= DSP_STACK:
            return words
    return 0


def _p_loop(P: int, nw: int) -> list:
    """The asm of every word step of one channel against the tile's P expanded pixels: d walks
    the filter (4 bytes a step), e the interleaved pixels (8 P bytes a step)."""
    U = _p_unroll(nw)
    def step(u: int, base_d: int, base_e: int, post: bool) -> list:
        out = [f"ldr %[t], [%[d]], #{4 * U}" if post else f"ldr %[t], [%[d], #{4 * u - base_d}]",
               "sxtb16 %[u], %[t]", "sxtb16 %[t], %[t], ror #8"]
        for j in range(P):
            # The first load of a post-incrementing step has moved e on: the others reach back.
            off = (u * P + j) * 8 - (8 * P * U if post else base_e)
            if post and j == 0:
                out.append(f"ldrd %[x0], %[x1], [%[e]], #{8 * P * U}")
            else:
                out.append(f"ldrd %[x0], %[x1], [%[e], #{off}]")
            out += [f"smlad %[a{j}], %[u], %[x0], %[a{j}]", f"smlad %[a{j}], %[t], %[x1], %[a{j}]"]
        return out
    lines = []
    loops = nw // U
    if loops:
        body = step(0, 0, 0, True)
        for u in range(1, U):
            body += step(u, 4 * U, 8 * P * U, False)
        lines += ["1:"] + body + ["cmp %[e], %[end]", "bne 1b"]
    for u in range(nw % U):
        lines += step(u, 0, 0, False)
    return lines


def _split_words(two: bool, aligned: bool = True) -> tuple:
    """(lo, hi shift operands, byte mask, the loop's first lines) of the expansion loops: a step
    loads 2 words (one LDRD, or two LDR where the source need not be word-aligned) and flips
    them to x + 128; AND with the mask (shifted) then moves a word's bytes 0/2 (lo) or 1/3 (hi)
    into halves, doubled where two."""
    lo, hi = (", lsl #1", ", lsr #7") if two else ("", ", lsr #8")
    mask = "0x01FE01FEu" if two else "0x00FF00FFu"
    load = (["ldrd %[t0], %[t1], [%[s]], #8"] if aligned
            else ["ldr %[t0], [%[s]], #8", "ldr %[t1], [%[s], #-4]"])
    head = ["1:", *load, "eor %[t0], %[t0], #0x80808080", "eor %[t1], %[t1], #0x80808080"]
    return lo, hi, mask, head


def _p_expand(pb: int, nw: int, two: bool, lo_: str, hi_: str) -> str:
    """Pixel q's n_ic bytes at xp + q * n_ic as (x + 128) pairs (doubled where two) at word
    step s of the interleaved xx. Runs of whole word pairs take an asm loop of 11 instructions
    per 2 words (gcc's loop takes 11 per word): with the byte mask in a register, one AND with
    a shifted operand both moves a word's bytes 0/2 (or 1/3) into halves and doubles them."""
    if nw % 2:
        return f"""const int8_t *s = xp + q * n_ic;
      int32_t *dx = xx + 2 * q;
      for (int s_ = 0; s_ < n_ic / 4; ++s_) {{
        const uint32_t v = te_ld32(s + 4 * s_) ^ 0x80808080u;
        dx[0] = {lo_};
        dx[1] = {hi_};
        dx += {2 * pb};
      }}"""
    lo, hi, mask, head = _split_words(two)
    sep = "\\n\\t"
    lines = head + [
             f"and %[t2], %[m], %[t0]{lo}", f"and %[t0], %[m], %[t0]{hi}",
             f"strd %[t2], %[t0], [%[d]], #{16 * pb}",
             f"and %[t2], %[m], %[t1]{lo}", f"and %[t1], %[m], %[t1]{hi}",
             f"strd %[t2], %[t1], [%[d], #-{8 * pb}]",
             "cmp %[s], %[se]", "bne 1b"]
    return f"""const int8_t *s = xp + q * n_ic;
      int32_t *d = xx + 2 * q;
      const int8_t *const se = s + n_ic;
      uint32_t t0, t1, t2;
      __asm__ volatile("{sep.join(lines)}"
                       : [s] "+r"(s), [d] "+r"(d), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2)
                       : [se] "r"(se), [m] "r"({mask}) : "cc", "memory");"""


# A layer whose pixels P does not divide recomputes P - r of them in its last, overlapping
# tile; a tile of the r pixels left is its own asm (some 4 (U (3 + 3 r) + 40) bytes): kept where
# it saves at least P_TAIL_PER_BYTE instructions a byte (VWW's 3x3-pixel layers at P = 5: one
# pixel in ten; KWS's 125 pixels at P = 6 would save 5 a byte).
P_TAIL_PER_BYTE = 30


def _p_tail(L: _Layer, pb: int, nw: int, pixels: int) -> int:
    """Pixels of the last tile where it is a tile of its own, else 0."""
    r = pixels % pb
    if not r or pixels < pb:
        return 0
    saved = L.oc * (pb - r) * (3 * nw + 6)
    return r if saved >= P_TAIL_PER_BYTE * 4 * (_p_unroll(nw) * (3 + 3 * r) + 40) else 0


# -- the widened "p" form: int16 filters (where the Flash planner gives them room) -------------
#
# With the filter stored as int16 pairs, a channel's 8 inputs are 4 words read by one LDM, and a
# pixel's expanded 8 by another: per 8 inputs and 3 pixels, 4 LDM and 12 SMLAD for 24 MACs
# (0.67 per MAC in the loop, against 0.875 for the int8 filter at P = 6; 2 pixels, 0.69). The
# LDM blocks are named registers (LDM loads ascending ones; r7 is the frame pointer at -O0),
# which leaves the accumulators and 2 pointers 5 of the other 6 (and the loop over turns of
# PW_UNROLL steps the sixth, at -O2). Each pixel's window is expanded (as x + 128, the dot
# form's bias) in pairs of neighbouring inputs (x0, x1), (x2, x3), ... to match the filter's
# [o][ky][kx][c] order, step t of pixel q at xx[(t * P + q) * 4]: one pointer walks a tile's
# steps. Pointwise layers expand one run per pixel; others (3x3 and the like, any stride) kh
# runs of the in-image columns, the taps outside the image written as the zero point's pairs
# (TFLM skips them: x = zp against the folded bias). 3 pixels where their windows fit the stack
# (2 * 3 * K bytes), else 2.

# 8-input steps per loop turn: the loop's 2-3 instructions a turn are 2% of 8 steps (VWW's
# 128-channel layers: 2 turns; 64 channels: no loop), 4% of 4, for 4 steps more of code (~240 B).
PW_UNROLL = 8
PW_MIN_IC = 64        # pointwise layers below: the "e" form (8-32 channels) already does as well
PW_X = ("r0", "r1", "r2", "r3")
PW_W = ("r8", "r9", "r10", "r11")
# Instructions per tile and channel outside the steps (bias, requantization of the P outputs,
# their stores, spills), read from VWW's and ResNet's generated code.
PW_CHANNEL = 40


def _pw_pixels(L: _Layer) -> int:
    return next((p for p in (3, 2) if 2 * p * L.k <= DSP_STACK), 0)


def wide_fits(L: _Layer) -> bool:
    """Whether the widened "p" form applies (the Flash planner widens nothing else)."""
    pixels = L.n * L.win.oh * L.win.ow
    pb = _pw_pixels(L)
    return (L.groups == 1 and L.win.dw == 1 and L.ic % 8 == 0 and pb > 0 and pixels >= pb
            and (L.ic >= PW_MIN_IC or not L.flat))


def _pw_cost(L: _Layer, pixels: int) -> int:
    pb = _pw_pixels(L)
    pairs = L.k // 8
    loops, _ = _pw_steps(L.k // 4)
    run = L.kw * L.ic
    expand = pb * L.kh * (15 * run // 8 + (6 if L.flat else 30))
    return -(-pixels // pb) * (L.oc * ((1 + 5 * pb) * pairs + 3 * loops + PW_CHANNEL) + expand)


# The int8 filters' forms of windowed layers per MAC, for the planner's estimate: ResNet's
# 16-channel 3x3 layers ("r") 0.97-1.05, its wider ones ("w", "x") 1.10-1.18.
PW_NOW_NARROW, PW_NOW_WIDER = 1.0, 1.1


def wide_saving(L: _Layer) -> int:
    """Instructions per inference the widened form saves, estimated against the int8 filter's
    "p" form (or the "x" form's 2 x 2 tiles where "p" would not be taken) on pointwise layers,
    from the measured figures (PW_NOW_*) on the others."""
    pixels = L.n * L.win.oh * L.win.ow
    if L.flat:
        now = _p_best(L, L.k // 4, pixels)[1]
    else:
        now = int(pixels * L.oc * L.k * (PW_NOW_NARROW if L.ic <= 16 else PW_NOW_WIDER))
    return now - _pw_cost(L, pixels)


def _pw_steps(nw: int) -> tuple[int, int]:
    """(loop turns of PW_UNROLL steps, steps written out past them) of nw words a window."""
    pairs = nw // 2
    loops = pairs // PW_UNROLL if pairs > PW_UNROLL else 0
    return loops, pairs - loops * PW_UNROLL


def _pw_step(pb: int) -> list:
    """The asm of one 8-input step of one channel against the tile's pb expanded pixels."""
    step = [f"ldm %[d]!, {{{', '.join(PW_W)}}}"]
    for j in range(pb):
        step.append(f"ldm %[e]!, {{{', '.join(PW_X)}}}")
        step += [f"smlad %[a{j}], {w}, {x}, %[a{j}]" for w, x in zip(PW_W, PW_X)]
    return step


def _pw_expand(two: bool, pb: int, aligned: bool = True) -> str:
    """The bytes [s, se) (a whole number of 8, at least 8) as (x + 128) pairs of neighbouring
    inputs (doubled where two) at d, 8 a step, pb * 4 words apart, leaving d past them: the byte
    mask splits a word into bytes 0/2 and 1/3 (and doubles them, by its shifts), PKHBT and PKHTB
    pair them up 0/1 and 2/3. aligned=False: s need not be word-aligned (the "o" form's rows)."""
    lo, hi, mask, head = _split_words(two, aligned)
    sep = "\\n\\t"
    lines = head + [
             f"and %[t2], %[m], %[t0]{lo}", f"and %[t0], %[m], %[t0]{hi}",
             "pkhbt %[t3], %[t2], %[t0], lsl #16", "pkhtb %[t0], %[t0], %[t2], asr #16",
             f"and %[t2], %[m], %[t1]{lo}", f"and %[t1], %[m], %[t1]{hi}",
             "pkhbt %[t4], %[t2], %[t1], lsl #16", "pkhtb %[t1], %[t1], %[t2], asr #16",
             "strd %[t4], %[t1], [%[d], #8]", f"strd %[t3], %[t0], [%[d]], #{16 * pb}",
             "cmp %[s], %[se]", "bne 1b"]
    return f"""{{
        uint32_t t0, t1, t2, t3, t4;
        __asm__ volatile("{sep.join(lines)}"
                         : [s] "+r"(s), [d] "+r"(d), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                           [t3] "=&r"(t3), [t4] "=&r"(t4)
                         : [se] "r"(se), [m] "r"({mask}) : "cc", "memory");
      }}"""


def _pw_window(L: _Layer, pb: int, two: bool) -> str:
    """Pixel px's window into xx (d at its first step): kh runs of kw * n_ic inputs, each the
    in-image columns expanded and the others (and rows outside the image) the zero point's
    pairs."""
    if L.flat:
        return f"""const int8_t *s = in0 + px * n_ic;
      const int8_t *const se = s + n_ic;
      {_pw_expand(two, pb)}"""
    fill = f"""for (int i = 0; i < {{n}}; ++i) {{{{
            d[0] = zw; d[1] = zw; d[2] = zw; d[3] = zw;
            d += {4 * pb};
          }}}}"""
    return f"""const int b = px / (n_oh * n_ow), r_ = px - b * (n_oh * n_ow);
      const int oy = r_ / n_ow, ox = r_ - oy * n_ow;
      const int iy0 = oy * s_h - p_t, ix0 = ox * s_w - p_l;
      const int kx_lo = ix0 < 0 ? -ix0 : 0;
      const int kx_hi = n_iw - ix0 < k_w ? n_iw - ix0 : k_w;
      for (int ky = 0; ky < k_h; ++ky) {{
        const int iy = iy0 + ky * d_h;
        if (iy < 0 || iy >= n_ih || kx_hi <= kx_lo) {{
          {fill.format(n="k_w * n_ic / 8")}
          continue;
        }}
        {fill.format(n="kx_lo * n_ic / 8")}
        {{
          const int8_t *s = in0 + ((b * n_ih + iy) * n_iw + ix0 + kx_lo) * n_ic;
          const int8_t *const se = s + (kx_hi - kx_lo) * n_ic;
          {_pw_expand(two, pb)}
        }}
        {fill.format(n="(k_w - kx_hi) * n_ic / 8")}
      }}"""


def _p_stores(pb: int, vals) -> str:
    """The tile's pb outputs of channel o, pixels n_oc apart: two stores per pointer step (the
    second at + n_oc, a register offset)."""
    stores = ["int8_t *y = yo;"]
    for j in range(0, pb, 2):
        stores.append(f"y[0] = {vals(j)};")
        if j + 1 < pb:
            stores.append(f"y[n_oc] = {vals(j + 1)};")
        if j + 2 < pb:
            stores.append("y += 2 * n_oc;")
    return "\n      ".join(stores)


def _pw_tile(L: _Layer, pb: int, two: bool, vals, setup: str, bias: str) -> str:
    """One tile of the widened form: pixels p..p+pb-1 expanded, then every channel against
    them."""
    nw = L.k // 4
    stores = _p_stores(pb, vals)
    sep = "\\n\\t"
    accs = [f"a{j}" for j in range(pb)]
    outs = ", ".join([f'[{a}] "+r"({a})' for a in accs] + ['[d] "+r"(ds)', '[e] "+r"(es)'])
    clobbers = ", ".join(f'"{r}"' for r in PW_X + PW_W)

    def asm(steps: int) -> str:
        return f"""__asm__("{sep.join(_pw_step(pb) * steps)}"
                : {outs} : : {clobbers}, "cc", "memory");"""
    # The loop over turns is C: its counter takes the one register the asm leaves (an asm
    # loop would need a sixth for its end; read from the stack, it cannot be at -O0).
    loops, rest = _pw_steps(nw)
    macs = ""
    if loops:
        macs += f"""
        for (int t = n_k / {8 * PW_UNROLL}; t > 0; --t)
          {asm(PW_UNROLL)}"""
    if rest:
        macs += f"""
        {asm(rest)}"""
    return f"""int8_t *yq = out0 + p * n_oc;
    for (int q = 0; q < {pb}; ++q) {{
      const int px = p + q;
      int32_t *d = xx + 4 * q;
      {_pw_window(L, pb, two)}
    }}
    /* The filters are read in order: the asm leaves ds at the next one. */
    const int16_t *ds = wt;
    int8_t *yo = yq;
    for (int o = 0; o < n_oc; ++o, ++yo) {{
      const int32_t bias = {bias};
      int32_t {', '.join(f'{a} = bias' for a in accs)};
      {{
        const int32_t *es = xx;{macs}
      }}
      {setup}
      {stores}
    }}"""


def _p_tile(pb: int, nw: int, two: bool, vals, setup: str, bias: str, lo_: str, hi_: str) -> str:
    """One tile: pixels p..p+pb-1 expanded, then every channel against them. vals(j, pb): the
    C value of accumulator a<j>."""
    # The empty asm keeps gcc from deriving one pointer per pixel from o, which it holds on the
    # stack.
    stores = _p_stores(pb, vals)
    sep = "\\n\\t"
    lines = _p_loop(pb, nw)
    accs = [f"a{j}" for j in range(pb)]
    outs = ", ".join([f'[{a}] "+r"({a})' for a in accs] + ['[t] "=&r"(x_t)', '[u] "=&r"(x_u)',
                      '[x0] "=&r"(x_0)', '[x1] "=&r"(x_1)', '[d] "+r"(ds)', '[e] "+r"(es)'])
    # The whole loop turns' end (U word steps each); the steps past them are literals.
    U = _p_unroll(nw)
    end = f"xx + {2 * pb * U} * (n_ic / {4 * U})"
    tail = f"\n        ds += {4 * (nw % U)};" if nw % U else ""
    return f"""const int8_t *xp = in0 + p * n_ic;
    int8_t *yq = out0 + p * n_oc;
    for (int q = 0; q < {pb}; ++q) {{
      {_p_expand(pb, nw, two, lo_, hi_)}
    }}
    /* The filters are read in order: the asm leaves ds at the next one. */
    const int8_t *ds = wt;
    int8_t *yo = yq;
    for (int o = 0; o < n_oc; ++o, ++yo) {{
      const int32_t bias = {bias};
      int32_t {', '.join(f'{a} = bias' for a in accs)};
      {{
        const int32_t *es = xx;
        int32_t x_t, x_u, x_0, x_1;
        __asm__("{sep.join(lines)}"
                : {outs}
                : [end] "r"({end}) : "cc", "memory");{tail}
      }}
      /* The multipliers are read after the asm (its memory clobber keeps them there): held
         across it, they would be spilled and reloaded. */
      {setup}
      {stores}
    }}"""


def _dsp_p_form(L: _Layer, P: _DspPlan) -> Shareable:
    """Only the tile's pixels and the steps past whole loop turns are literals: the layers of
    one P share the function whatever their pixel and channel counts."""
    pb, nw = P.pb, P.nw
    two = L.rq.doubled
    lo_, hi_ = ("(int32_t)(__uxtb16(v) << 1)", "(int32_t)((uint32_t)te_ux13(v) << 1)") if two else \
        ("(int32_t)__uxtb16(v)", "te_ux13(v)")
    per_channel = L.tables[0] is not None
    build = rx_decl = ""
    nr = 0
    bias = "(int32_t)((uint32_t)bs[o] << 1)" if two else "bs[o]"
    if L.rq.ok:
        setup = L.rq.setup("", "o", "mult", "shift") if per_channel else ""
        def vals(j):
            return f"(int8_t){L.rq.expr(f'a{j}', '', per_channel, two)}"
        nr = _p_records(L, pb, L.k // 4) if per_channel else 0
        if nr:
            # Every channel's q, h, r once per call (the tiles' channels read them back):
            # per tile and channel, the two tables' pointers (spilled across the asm) and the
            # rounding constant cost some 10 instructions, the record 5.
            # The widened form keeps the bias in the record too (one pointer across its asm).
            b0 = nr - E_RQ_WORDS
            bias_in = f"rx[{nr} * o] = {bias}; " if b0 else ""
            def at(k: int) -> str:
                return f"{nr} * o + {k}" if k else f"{nr} * o"
            build = f"""for (int o = 0; o < n_oc; ++o) {{
    {setup}
    {bias_in}rx[{at(b0)}] = q; rx[{at(b0 + 1)}] = h; rx[{at(b0 + 2)}] = r;
  }}"""
            rx_decl = "\n  int32_t rx[RX_WORDS];"
            setup = (f"const int32_t *rq = rx + {at(b0)}; const int32_t q = rq[0], "
                     "h = rq[1]; const int r = rq[2];")
    else:
        setup = ""
        def vals(j):
            return L.epi(f"a{j}", "o")
    if nr > E_RQ_WORDS:
        bias = f"rx[{nr} * o]"
    pixels = L.n * L.win.oh * L.win.ow
    r = 0 if L.wide else _p_tail(L, pb, nw, pixels)
    if L.wide:
        tile = _pw_tile(L, pb, two, vals, setup, bias)
    else:
        tile = _p_tile(pb, nw, two, vals, setup, bias, lo_, hi_)
    if r:
        # Whole tiles, then the last pixels as a tile of their own (its own asm).
        tiles = f"""const int n_tiles = n_px / {pb};
  for (int i_p = 0; i_p < n_tiles; ++i_p) {{
    const int p = i_p * {pb};
    {tile}
  }}
  {{
    const int p = n_tiles * {pb};
    {_p_tile(r, nw, two, vals, setup, bias, lo_, hi_)}
  }}"""
    else:
        tiles = f"""const int n_tiles = (n_px + {pb - 1}) / {pb};
  for (int i_p = 0; i_p < n_tiles; ++i_p) {{
    const int p = i_p * {pb} < n_px - {pb} ? i_p * {pb} : n_px - {pb};
    {tile}
  }}"""
    body = f"""
  int32_t xx[XX_WORDS];{rx_decl}
  {build}
  {tiles}"""
    params = [("const int8_t *", "in0", "in0"), ("int8_t *", "out0", "out0"),
              ("const int16_t *" if L.wide else "const int8_t *", "wt", L.W),
              ("const int32_t *", "bs", L.B), *_rq_params(L),
              ("int", "n_px", str(L.n * L.win.oh * L.win.ow)), ("int", "n_ic", str(L.ic)),
              ("int", "n_oc", str(L.oc))]
    if L.wide:
        params.append(("int", "n_k", str(L.k)))
    if L.wide and not L.flat:
        w = L.win
        z = (L.zp + 128) * (2 if two else 1)
        params += [("int", n, str(v)) for n, v in (
            ("n_ih", L.ih), ("n_iw", L.iw), ("n_oh", w.oh), ("n_ow", w.ow), ("k_h", L.kh),
            ("k_w", L.kw), ("s_h", w.sh), ("s_w", w.sw), ("p_t", w.pt), ("p_l", w.pl),
            ("d_h", w.dh))]
        params.append(("int32_t", "zw", str(z | (z << 16))))
    bounds = (("XX_WORDS", pb * L.k // 2),)
    if rx_decl:
        bounds += (("RX_WORDS", nr * L.oc),)
    form = f"p{pb}" + ("" if not L.wide else "w" if L.flat else "q")
    return Shareable(form, body, tuple(params), bounds, "TE_DSP")
