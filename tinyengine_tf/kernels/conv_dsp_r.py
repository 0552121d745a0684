"""The CONV_2D "r" form: the kernel rows under a block of outputs and the filters expanded, 2
pixels x 2 channels (ResNet's 3x3 layers over 16 channels). conv_dsp.py has the overview and
chooses the form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.conv_dsp_base import (_DspPlan, _dsp_accs, _dsp_expand_filters,
                                                 _dsp_outputs, _pair_head, _row_span)
from tinyengine_tf.kernels.conv_dsp_e import _e_macs, _expand_pairs_asm

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# -- "r" form: input rows and filters expanded, 2 pixels x 2 channels ------------------------------
#
# ResNet's 3x3 layers of 16 input channels spend 23 instructions per 24 MACs in the "w" form's
# 3 x 2 tiles (the input extended again for every channel pair) and some 0.2 per MAC besides.
# Here, as in the "e" form, the filters of a chunk are expanded once per call and the input
# once per chunk: the kernel rows under a block of B outputs of one output row, (B - 1) sw + kw
# pixels each, as int16 pairs with the zero point's pair outside the image (the biases are the
# "w" form's, for the sign-extended input, so a padded tap adds zp * w as TFLM's skipped one
# does not: bx already subtracts it). A window's run of kernel row ky then starts at a word
# (ic % 8 == 0) of row ky's buffer, and a word step of a 2 x 2 tile is 4 LDRD and 8 SMLAD
# (0.75 instructions per MAC), one asm statement per kernel row.

R_BLOCKS = (2, 4, 6, 8, 10, 12, 16)   # outputs per block tried
R_EXPAND = 5.0        # instructions per expanded input word (the asm loop, fills, row setup)
R_TILE = 40           # per 2 x 2 tile outside its word steps: accumulators, rows, outputs
R_PAIR = 20           # per channel pair and block: its biases and multipliers
R_MAX = 1.05          # instructions per MAC the estimate must be under: it reads 0.06 low on
                      # ResNet, where the "w" form's tiles take 1.15-1.2


def _r_cols(L: _Layer, B: int) -> int:
    return (B - 1) * L.win.sw + L.kw


def _r_plan(L: _Layer, nw: int, budget: int) -> tuple[int, int] | None:
    """(channels per chunk, outputs per block) of the "r" form, or None where it does not apply
    or its estimate (per MAC: 0.75 in the word steps, the expansion of every chunk's blocks and
    the tiles' and pairs' overheads) is over R_MAX."""
    w = L.win
    if (L.flat or L.ic % 8 or L.kh * L.kw == 1 or L.oc < 2 or w.ow < 2 or not L.rq.ok
            or 8 * nw + 8 * L.kh * nw > 1020 - 8 or 2 * w.sw * L.ic + 8 * nw > 1020 - 8):
        return None
    per_channel = 8 * L.kh * nw + 4
    best = None
    for B in R_BLOCKS:
        if B > w.ow:
            break
        words = L.kh * _r_cols(L, B) * L.ic // 4
        most = (budget - 8 * words) // per_channel // 2 * 2
        if most < 2:
            break
        fits = [c for c in range(2, min(most, L.oc) + 1, 2) if L.oc % c == 0]
        for co in fits or [min(most, L.oc // 2 * 2)]:
            chunks = -(-L.oc // co)
            blocks = -(-w.ow // B)
            macs = w.oh * blocks * B * chunks * co * L.k    # with the overlapped recomputation
            cost = (0.75 * macs + w.oh * blocks * chunks * (R_EXPAND * words + co // 2 * R_PAIR)
                    + macs // (4 * L.k) * R_TILE)
            per = cost / (w.oh * w.ow * L.oc * L.k)
            if best is None or per < best[0]:
                best = (per, co, B)
    if best is None or best[0] > R_MAX:
        return None
    return best[1], best[2]


def _r_rows(L: _Layer, P: _DspPlan) -> str:
    """The block's kernel rows expanded into xr, row ky at xr + ky * (2 cols ic / 4) words."""
    cols = _r_cols(L, P.pb)
    rw = 2 * cols * L.ic // 4               # int32 words per expanded row
    zp = L.zp
    zpp = ((zp & 0xFFFF) | ((zp & 0xFFFF) << 16))
    cw = L.ic // 4                            # input words per pixel
    return f"""for (int ky = 0; ky < {L.kh}; ++ky) {{
          int32_t *d = xr + ky * {rw};
          {_row_span(L, cols, '          ')}
          for (int t = 0; t < 2 * {cw} * lo; ++t) d[t] = (int32_t)0x{zpp:08x}u;
          for (int t = 2 * {cw} * hi; t < {rw}; ++t) d[t] = (int32_t)0x{zpp:08x}u;
          if (hi > lo) {{
            const int8_t *s = in0 + ((b * {L.ih} + iy) * {L.iw} + ix0 + lo) * {L.ic};
            int32_t *e = d + 2 * {cw} * lo;
            int32_t *const end = d + 2 * {cw} * hi;
            /* {cw} input words per pixel: an even count. */
            {_expand_pairs_asm("s", "e", "end")}
          }}
        }}"""


def _dsp_r_form(L: _Layer, P: _DspPlan) -> str:
    w = L.win
    B = P.pb
    pcw = 2 * L.kh * P.nw                     # int32 words per expanded filter
    rw = 2 * _r_cols(L, B) * L.ic // 4
    nchunks = -(-L.oc // P.co)
    npairs = -(-P.co // P.ob)
    P2 = _DspPlan("r", P.R, P.nw, 2, 2, P.co)   # the 2 x 2 tile's accumulators and stores
    setup, stores = _dsp_outputs(L, P2, L.oc)
    macs = _e_macs(P.nw, 2 * w.sw * L.ic, 4 * pcw, "xk", "fk")
    return f"""
  int32_t wx[{P.co * pcw}];
  int32_t bx[{P.co}];
  int32_t xr[{L.kh * rw}];
  for (int i_c = 0; i_c < {nchunks}; ++i_c) {{
    {dsp.tile_start("c0", "i_c", L.oc, P.co)}
    {_dsp_expand_filters(L, P)}
    for (int b = 0; b < {L.n}; ++b) {{
      for (int oy = 0; oy < {w.oh}; ++oy) {{
        const int iy0 = oy * {w.sh} - {w.pt};
        for (int i_b = 0; i_b < {-(-w.ow // B)}; ++i_b) {{
          {dsp.tile_start("ox0", "i_b", w.ow, B)}
          const int ix0 = ox0 * {w.sw} - {w.pl};
          {_r_rows(L, P)}
          for (int i_o = 0; i_o < {npairs}; ++i_o) {{
            {_pair_head(P, pcw, setup, '            ')}
            for (int q = 0; q < {B}; q += 2) {{
              int8_t *yp = out0 + ((b * {w.oh} + oy) * {w.ow} + ox0 + q) * {L.oc} + o;
              {_dsp_accs(P2, lambda ch: f"bias{ch}")}
              for (int ky = 0; ky < {L.kh}; ++ky) {{
                const int32_t *xk = xr + ky * {rw} + q * {2 * w.sw * L.ic // 4};
                const int32_t *fk = w0 + ky * {2 * P.nw};
                {macs}
              }}
              {stores}
            }}
          }}
        }}
      }}
    }}
  }}"""
