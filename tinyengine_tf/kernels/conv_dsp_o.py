"""The CONV_2D "o" form: one input channel at stride 2 across (KWS's first layer), the padded
image expanded once per call. conv_dsp.py has the overview and chooses the form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.conv_dsp_base import DSP_STACK_FEW, _weight_index

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# -- "o" form: one input channel, stride 2 across (KWS's first layer) ---------------------------
#
# With one input channel a kernel row is kw bytes, and the other forms sign-extend each input
# word once per tile (a third of the loop) and patch every border tile (rows of 5 outputs all
# touch a border). Here the image is expanded once per call into int16 x - zp, zero-padded, on
# the stack; at stride 2 pixel p's row of taps starts at word p of that row, so P neighbouring
# pixels share P + m - 1 words (m = ceil(kw / 2) tap pairs, an odd kw's last pair padded with a
# zero weight). One channel's expanded filter row (m words) then serves the whole tile:
# (m + P + m - 1) / 2 LDRD and P * m SMLAD per row, 14 instructions for KWS's 20 MACs, with no
# extends and no patches; the accumulators start from the plain bias (x - zp needs no folding).

O_MAX_REGS = 7        # P accumulators + m filter words (+ 2 input words and 2 pointers)
O_MAX_PIXELS = 5


@dataclass
class _OPlan:
    m: int            # tap pairs per kernel row
    P: int            # pixels per tile
    PH: int           # rows of the padded image
    PW: int           # int16 columns of the padded image (even: rows are whole words)


def _o_plan(L: _Layer) -> _OPlan | None:
    w = L.win
    # (A one-channel layer's kernel rows are far shorter than the dot form's runs: the stored
    # bias is never folded here.)
    if L.ic != 1 or L.groups != 1 or w.sw != 2 or w.dw != 1 or w.dh != 1 or L.dot:
        return None
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


def _o_row(R: _OPlan, ky: int, row_words: int) -> str:
    """One kernel row of a tile: the filter's m words, then the input words two at a time, each
    multiplied into every accumulator of a pixel that reads it."""
    m, P = R.m, R.P
    ins = []
    for t in range(0, m, 2):
        off = 4 * (ky * m + t)
        ins.append(f"ldrd %[w{t}], %[w{t + 1}], [%[e], #{off}]" if t + 1 < m
                   else f"ldr %[w{t}], [%[e], #{off}]")
    words = P + m - 1
    for j in range(0, words, 2):
        off = 4 * (ky * row_words + j)
        pair = j + 1 < words
        ins.append(f"ldrd %[x0], %[x1], [%[d], #{off}]" if pair else f"ldr %[x0], [%[d], #{off}]")
        for jj, reg in ((j, "x0"), (j + 1, "x1")) if pair else ((j, "x0"),):
            for px in range(P):
                if 0 <= jj - px < m:
                    ins.append(f"smlad %[a{px}], %[{reg}], %[w{jj - px}], %[a{px}]")
    outs = ", ".join([f'[a{px}] "+r"(a{px})' for px in range(P)] +
                     [f'[w{t}] "=&r"(r_w{t})' for t in range(m)] +
                     ['[x0] "=&r"(r_x0)', '[x1] "=&r"(r_x1)'])
    decl = ", ".join([f"r_w{t}" for t in range(m)] + ["r_x0", "r_x1"])
    return (f'{{ int32_t {decl}; __asm__("' + "\\n\\t".join(ins) + f'" : {outs} : '
            f'[d] "r"(xr), [e] "r"(fx) : "memory"); (void)r_x1; }}')


def _dsp_o_form(L: _Layer, R: _OPlan) -> str:
    w = L.win
    rq = L.rq
    two = rq.doubled
    per_channel = L.tables[0] is not None
    row_words = R.PW // 2
    rows = min(L.ih, R.PH - w.pt)                  # input rows and columns the windows reach
    cols = min(L.iw, R.PW - w.pl)
    r0, c0 = max(0, -w.pt), max(0, -w.pl)          # negative padding: rows and columns unread
    dbl = "2 * " if two else ""
    second = (f"2 * t + 1 < {L.kw} ? {dbl}(int32_t){L.W}[{_weight_index(L, 'o', 'ky', '2 * t + 1')}] : 0"
              if L.kw % 2 else f"{dbl}(int32_t){L.W}[{_weight_index(L, 'o', 'ky', '2 * t + 1')}]")
    accs = "int32_t " + ", ".join(f"a{px} = bias" for px in range(R.P)) + ";"
    macs = "\n            ".join(_o_row(R, ky, row_words) for ky in range(L.kh))
    setup = rq.setup("0", "o", *L.tables) if rq.ok else ""
    stores = []
    for px in range(R.P):
        val = (f"(int8_t){rq.expr(f'a{px}', '0', per_channel, two)}" if rq.ok
               else L.epi(f"a{px}", "o"))
        stores.append(f"yp[{px * L.oc}] = {val};")
    stores = "\n          ".join(stores)
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
      for (int ky = 0; ky < {L.kh}; ++ky) {{
        for (int t = 0; t < {R.m}; ++t) {{
          const int32_t v0 = {dbl}(int32_t){L.W}[{_weight_index(L, 'o', 'ky', '2 * t')}];
          const int32_t v1 = {second};
          fx[ky * {R.m} + t] = te_pack16(v0, v1);
        }}
      }}
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
