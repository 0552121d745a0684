"""The CONV_2D "o" form: one input channel at stride 2 across (KWS's first layer), the padded
image expanded once per call, and its row variant for three (the RGB first layers of VWW, ResNet
and the MobileNets), kernel rows expanded as output rows need them. conv_dsp.py has the overview
and chooses the form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.conv_dsp_base import DSP_STACK, DSP_STACK_FEW, _weight_index
from tinyengine_tf.kernels.conv_dsp_p import _pw_expand

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# -- "o" form: one or three input channels (the first layers) -------------------------------
#
# With one input channel a kernel row is kw bytes, and the other forms sign-extend each input
# word once per tile (a third of the loop) and patch every border tile (rows of 5 outputs all
# touch a border). Here the image is expanded once per call into int16 x - zp, zero-padded, on
# the stack; at stride 2 pixel p's row of taps starts at word p of that row, so P neighbouring
# pixels share P + m - 1 words (m = ceil(kw / 2) tap pairs, an odd kw's last pair padded with a
# zero weight). One channel's expanded filter row (m words) then serves the whole tile:
# (m + P + m - 1) / 2 LDRD and P * m SMLAD per row, 14 instructions for KWS's 20 MACs, with no
# extends and no patches; the accumulators start from the plain bias (x - zp needs no folding).
#
# The row variant takes the first layers over RGB images at an even stride across (VWW's and
# the MobileNets': 3 channels at stride 2), whose image would not fit the stack. Pixel p's kernel
# row of kw * ic taps (contiguous in NHWC) starts at word s p of an expanded row, s = ic * sw / 2,
# and spans m = ceil(kw ic / 2) words, the half-word past an odd row's taps against a zero weight.
# The kh input rows of an output row are expanded into kh row slots as x + 128 (the "p" form's
# expansion loop; padding holds zp + 128, the bias takes -(zp + 128) sum w) (input row iy in slot
# (iy + pt) % kh, so the rows two output rows share at stride < kh are expanded once), every
# channel's filter once per call; a tile of P pixels x 1 channel then takes (s (P - 1) + m) / 2
# LDRD and P m SMLAD per kernel row: 30 instructions for 36 MACs on VWW's 3 x 3 x 3 rows at
# P = 4, against 51 for 54 in the "w" form's 3 x 2 tiles, whose border tiles patch besides.
# At stride 1 (ResNet's first layer) odd pixels start mid-word: each slot also holds its row
# shifted by a half-word, which they read at the same word offsets (tiles start at even pixels:
# an even output width), 31 instructions a kernel row.

O_MAX_REGS = 7        # P accumulators + m filter words (+ 2 input words and 2 pointers)
O_MAX_PIXELS = 5
# Row variant: P + m of the 13 registers an asm statement may take (r7 is the frame pointer at
# -O0), with the 2 input words and 2 pointers.
O_ROW_REGS = 9


@dataclass
class _OPlan:
    m: int            # words per kernel row of taps (tap pairs)
    P: int            # pixels per tile
    PH: int           # rows of the padded image (row variant: the kh row slots)
    PW: int           # int16 columns of a padded row (even: rows are whole words)
    hs: int = 2       # half-words from one pixel's taps to the next one's
    rows: bool = False    # the row variant

    @property
    def shifted(self) -> bool:
        """Odd pixels start mid-word: each row slot holds the row again a half-word on."""
        return self.hs % 2 == 1

    def starts(self) -> list:
        """(copy, word) where each pixel of a tile starting at an even half-word reads its taps:
        copy 1 is the row shifted by a half-word (B[h] = A[h + 1])."""
        return [((self.hs * px) % 2, self.hs * px // 2) for px in range(self.P)]


def _o_plan(L: _Layer) -> _OPlan | None:
    w = L.win
    # (A one-channel layer's kernel rows are far shorter than the dot form's runs: the stored
    # bias is never folded here.)
    if L.groups != 1 or w.dw != 1 or w.dh != 1 or L.dot:
        return None
    if L.ic == 1 and w.sw == 2:
        return _o_whole_plan(L)
    # At stride 1 every other pixel starts mid-word (the shifted copy), so tiles start at even
    # pixels: an even output width.
    if L.ic == 3 and (w.sw % 2 == 0 or (w.sw == 1 and w.ow % 2 == 0)):
        return _o_row_plan(L)
    return None


def _o_whole_plan(L: _Layer) -> _OPlan | None:
    w = L.win
    m = -(-L.kw // 2)
    P = min(w.ow, O_MAX_PIXELS, O_MAX_REGS - m)
    if P < 2:
        return None
    PH = (w.oh - 1) * w.sh + L.kh
    PW = 2 * (w.ow - 1) + 2 * m
    last = ((L.kh - 1) * PW // 2 + P + m - 2) * 4      # LDRD reaches 1020 bytes
    if 2 * PH * PW + 4 * L.kh * m > DSP_STACK_FEW or last > 1020 or 4 * L.kh * m > 1020:
        return None
    return _OPlan(m, P, PH, PW)


def _o_row_plan(L: _Layer) -> _OPlan | None:
    w = L.win
    hs = L.ic * w.sw
    m = -(-(L.kw * L.ic) // 2)
    P = min(w.ow, O_MAX_PIXELS, O_ROW_REGS - m)
    if hs % 2:
        P -= P % 2                         # tiles of an even count start at even pixels
    # (Negative padding is left to the other forms.)
    if P < 2 or w.pl < 0 or w.pt < 0:
        return None
    row_words = hs * (w.ow - 1) // 2 + m       # up to the last pixel's m words
    R = _OPlan(m, P, L.kh, 2 * row_words, hs, True)
    slot = row_words * (2 if R.shifted else 1)
    last = (row_words if R.shifted else 0) + max(wd for _, wd in R.starts()) + m
    folded = L.oc if _o_folds(L) else 0        # the folded biases (_dsp_o_rows)
    if (4 * (L.kh * slot + L.oc * L.kh * m + folded) > DSP_STACK or 4 * last > 1020
            or 4 * L.kh * m > 1020):
        return None
    return R


def _o_folds(L: _Layer) -> bool:
    """Whether the row variant's bias takes -(zp + 128) sum w: its slots hold x + 128."""
    return L.zp != -128


def _o_row(R: _OPlan, ky: int, row_words: int, ptr: str = "xr") -> str:
    """One kernel row of a tile: the filter's m words, then the input words two at a time, each
    multiplied into every accumulator of a pixel that reads it. The row's words are at ptr
    (the row variant: one pointer per kernel row), else ky rows of row_words past it."""
    m, P = R.m, R.P
    base = 0 if R.rows else ky * row_words
    ins = []
    for t in range(0, m, 2):
        off = 4 * (ky * m + t)
        ins.append(f"ldrd %[w{t}], %[w{t + 1}], [%[e], #{off}]" if t + 1 < m
                   else f"ldr %[w{t}], [%[e], #{off}]")
    starts = R.starts()
    for copy in (0, 1):
        pix = [px for px in range(P) if starts[px][0] == copy]
        if not pix:
            continue
        first = min(starts[px][1] for px in pix)
        words = max(starts[px][1] for px in pix) + m
        for j in range(first, words, 2):
            off = 4 * (base + copy * row_words + j)
            pair = j + 1 < words
            ins.append(f"ldrd %[x0], %[x1], [%[d], #{off}]" if pair
                       else f"ldr %[x0], [%[d], #{off}]")
            for jj, reg in ((j, "x0"), (j + 1, "x1")) if pair else ((j, "x0"),):
                for px in pix:
                    t = jj - starts[px][1]
                    if 0 <= t < m:
                        ins.append(f"smlad %[a{px}], %[{reg}], %[w{t}], %[a{px}]")
    outs = ", ".join([f'[a{px}] "+r"(a{px})' for px in range(P)] +
                     [f'[w{t}] "=&r"(r_w{t})' for t in range(m)] +
                     ['[x0] "=&r"(r_x0)', '[x1] "=&r"(r_x1)'])
    decl = ", ".join([f"r_w{t}" for t in range(m)] + ["r_x0", "r_x1"])
    return (f'{{ int32_t {decl}; __asm__("' + "\\n\\t".join(ins) + f'" : {outs} : '
            f'[d] "r"({ptr}), [e] "r"(fx) : "memory"); (void)r_x1; }}')


def _o_outputs(L: _Layer, R: _OPlan, sep: str) -> tuple[str, str]:
    """(channel o's requantization set-up, the stores of a tile's accumulators a0..)."""
    rq = L.rq
    per_channel = L.tables[0] is not None
    stores = []
    for px in range(R.P):
        val = (f"(int8_t){rq.expr(f'a{px}', '0', per_channel, rq.doubled)}" if rq.ok
               else L.epi(f"a{px}", "o"))
        stores.append(f"yp[{px * L.oc}] = {val};")
    return (rq.setup("0", "o", *L.tables) if rq.ok else ""), sep.join(stores)


def _dsp_o_form(L: _Layer, R: _OPlan) -> str:
    if R.rows:
        return _dsp_o_rows(L, R)
    w = L.win
    rq = L.rq
    two = rq.doubled
    row_words = R.PW // 2
    rows = min(L.ih, R.PH - w.pt)                  # input rows and columns the windows reach
    cols = min(L.iw, R.PW - w.pl)
    r0, c0 = max(0, -w.pt), max(0, -w.pl)          # negative padding: rows and columns unread
    accs = "int32_t " + ", ".join(f"a{px} = bias" for px in range(R.P)) + ";"
    macs = "\n            ".join(_o_row(R, ky, row_words) for ky in range(L.kh))
    setup, stores = _o_outputs(L, R, "\n          ")
    return f"""
  int32_t xw[{R.PH * R.PW // 2}];
  int16_t *const xh = (int16_t *)xw;
  int32_t fx[{L.kh * R.m}];
  te_dsp_fill4((int8_t *)xw, 0, {R.PH * R.PW // 2});
  for (int b = 0; b < {L.n}; ++b) {{
    for (int r = {r0}; r < {rows}; ++r) {{
      const int8_t *src = in0 + (b * {L.ih} + r) * {L.iw};
      int16_t *dst = xh + (r + {w.pt}) * {R.PW} + {w.pl};
      for (int c = {c0}; c < {cols}; ++c) dst[c] = (int16_t)(src[c] - {L.zp});
    }}
    for (int o = 0; o < {L.oc}; ++o) {{
      {_o_filters(L, R, two, f"ky * {R.m} + t")}
      const int32_t bias = (int32_t)((uint32_t){L.B}[o]{' << 1' if two else ''});
      {setup}
      for (int oy = 0; oy < {w.oh}; ++oy) {{
        for (int i_p = 0; i_p < {-(-w.ow // R.P)}; ++i_p) {{
          {dsp.tile_start("ox", "i_p", w.ow, R.P)}
          const int32_t *xr = xw + oy * {w.sh * row_words} + ox;
          {accs}
          {macs}
          int8_t *yp = out0 + ((b * {w.oh} + oy) * {w.ow} + ox) * {L.oc} + o;
          {stores}
        }}
      }}
    }}
  }}"""


def _o_filters(L: _Layer, R: _OPlan, two: bool, index: str) -> str:
    """The statements that pack filter o's kernel rows into fx[index]: tap pairs as int16 pairs
    (doubled where two), the pair past an odd row's last tap against zero."""
    taps = L.kw * L.ic
    dbl = "2 * " if two else ""
    second = f"{dbl}(int32_t){L.W}[{_weight_index(L, 'o', 'ky', '2 * t + 1')}]"
    if taps % 2:
        second = f"2 * t + 1 < {taps} ? {second} : 0"
    return f"""for (int ky = 0; ky < {L.kh}; ++ky) {{
        for (int t = 0; t < {R.m}; ++t) {{
          const int32_t v0 = {dbl}(int32_t){L.W}[{_weight_index(L, 'o', 'ky', '2 * t')}];
          const int32_t v1 = {second};
          fx[{index}] = te_pack16(v0, v1);
        }}
      }}"""


def _o_expand_row(L: _Layer, R: _OPlan) -> str:
    """Input row iy's in-image bytes at src as int16 x + 128, in order, from half-word pl * ic of
    the row slot: 8 bytes a turn (conv_dsp_p._pw_expand, two LDR: rows need not be
    word-aligned) from a whole word on, a first byte at an odd half-word and the last bytes in
    C."""
    # The columns any window reads (a VALID layer's last ones may be unread).
    n = min(L.iw, (R.PW - L.win.pl * L.ic) // L.ic) * L.ic
    h0 = L.win.pl * L.ic
    lead = h0 % 2
    turns = (n - lead) // 8
    code = []
    if lead:
        code.append(f"((int16_t *)slot)[{h0}] = (int16_t)(src[0] + 128);")
    if turns:
        code.append(f"""{{
          const int8_t *s = src + {lead};
          const int8_t *const se = s + {8 * turns};
          int32_t *d = slot + {(h0 + lead) // 2};
          {_pw_expand(False, 1, aligned=False)}
        }}""")
    done = lead + 8 * turns
    if done < n:
        code.append(f"for (int k = {done}; k < {n}; ++k) "
                    f"((int16_t *)slot)[{h0} + k] = (int16_t)(src[k] + 128);")
    return "\n        ".join(code)


def _dsp_o_rows(L: _Layer, R: _OPlan) -> str:
    w = L.win
    rq = L.rq
    two = rq.doubled
    row_words = R.PW // 2
    slot_words = row_words * (2 if R.shifted else 1)
    fw = L.kh * R.m                                # filter words per channel
    accs = "int32_t " + ", ".join(f"a{px} = bias" for px in range(R.P)) + ";"
    rows = "\n          ".join(
        f"const int32_t *const row{ky} = xw + (top + {w.pt + ky}) % {L.kh} * {slot_words};"
        for ky in range(L.kh))
    start = f"ox * {R.hs // 2}" if R.hs % 2 == 0 else f"(ox * {R.hs} >> 1)"
    macs = "\n            ".join(
        f"{{ const int32_t *const x{ky} = row{ky} + {start};\n              {_o_row(R, ky, row_words, f'x{ky}')} }}"
        for ky in range(L.kh))
    shifted = ""
    if R.shifted:
        shifted = f"""
        {{
          const uint32_t *const a = (const uint32_t *)slot;
          uint32_t *const sh = (uint32_t *)slot + {row_words};
          for (int k = 0; k < {row_words - 1}; ++k) sh[k] = a[k] >> 16 | a[k + 1] << 16;
          sh[{row_words - 1}] = a[{row_words - 1}] >> 16;
        }}"""
    setup, stores = _o_outputs(L, R, "\n            ")
    # Slots hold x + 128: padding is the zero point's zp + 128, and the bias takes
    # -(zp + 128) sum w (over the packed filter: doubled where two), unless zp is -128.
    zw = f"0x{(L.zp + 128) * 0x00010001:08x}u"
    bias = f"(int32_t)((uint32_t){L.B}[o]{' << 1' if two else ''})"
    fold = ""
    if _o_folds(L):
        fold = f"""
    int32_t sum = 0;
    for (int t = 0; t < {fw}; ++t) sum = __smlad(fx[t], 0x00010001, sum);
    bx[o] = (int32_t)((uint32_t){bias} - (uint32_t)({L.zp + 128} * sum));"""
        bias = "bx[o]"
    return f"""
  int32_t xw[{L.kh * slot_words}];
  int32_t fx_all[{L.oc * fw}];{f"{chr(10)}  int32_t bx[{L.oc}];" if fold else ""}
  te_dsp_fill4((int8_t *)xw, {zw}, {L.kh * slot_words});
  for (int o = 0; o < {L.oc}; ++o) {{
    int32_t *const fx = fx_all + o * {fw};
    {_o_filters(L, R, two, f"ky * {R.m} + t")}{fold}
  }}
  for (int b = 0; b < {L.n}; ++b) {{
    int next = -{w.pt};               /* the first input row not yet in its slot */
    for (int oy = 0; oy < {w.oh}; ++oy) {{
      const int top = oy * {w.sh} - {w.pt};
      for (int iy = next > top ? next : top; iy < top + {L.kh}; ++iy) {{
        int32_t *const slot = xw + (iy + {w.pt}) % {L.kh} * {slot_words};
        if (iy < 0 || iy >= {L.ih}) {{
          te_dsp_fill4((int8_t *)slot, {zw}, {slot_words});
          continue;
        }}
        const int8_t *const src = in0 + (b * {L.ih} + iy) * {L.iw * L.ic};
        {_o_expand_row(L, R)}{shifted}
      }}
      next = top + {L.kh};
      {rows}
      int8_t *const yr = out0 + (b * {w.oh} + oy) * {w.ow * L.oc};
      for (int o = 0; o < {L.oc}; ++o) {{
        const int32_t *const fx = fx_all + o * {fw};
        const int32_t bias = {bias};
        {setup}
        for (int i_p = 0; i_p < {-(-w.ow // R.P)}; ++i_p) {{
          {dsp.tile_start("ox", "i_p", w.ow, R.P)}
          {accs}
          {macs}
          int8_t *const yp = yr + ox * {L.oc} + o;
          {stores}
        }}
      }}
    }}
  }}"""
