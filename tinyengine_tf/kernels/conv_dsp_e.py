"""The CONV_2D "e" form: filters and a block of pixels both expanded, 2 pixels x 2 channels (the
pointwise layers of 8-32 input channels). conv_dsp.py has the overview and chooses the form; the
"r" form (conv_dsp_r.py) reuses its word steps and expansion loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.base import Shareable
from tinyengine_tf.kernels.conv_dsp_base import (DSP_STACK, E_RQ_WORDS, _DspPlan, _dsp_accs,
                                                 _dsp_border, _dsp_expand_filters, _dsp_outputs,
                                                 _pair_head, _rq_params)

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# -- "e" form: both operands expanded, 2 pixels x 2 channels ----------------------------------
#
# The pointwise layers with 8-32 input channels (MobileNet's first blocks, ResNet's strided
# projections) have too short a dot product for the "p" form's per-tile setup, and the "w" form
# spends 23 instructions per 24 MACs extending the input again for every channel pair. Here the filters are expanded once per call
# (as the "w" form does) and a block of pixels once per chunk of channels, so a word step of a
# 2 x 2 tile is 4 LDRD and 8 SMLAD: 0.75 instructions per MAC, in 12 registers (4 accumulators,
# 2 pixels' and one channel's pairs, 2 pointers). Each channel pair's multipliers are loaded
# once per block; the whole run is one asm statement (E_MAX_WORDS word steps at most: literal
# offsets, no loop).

E_MAX_WORDS = 8
E_MIN_WORDS = 2       # 8 input channels and up
E_BLOCK_BYTES = 512   # expanded pixels per block


def _e_block(nw: int, pixels: int) -> int:
    """Pixels per block (even; the last block overlaps its predecessor)."""
    return max(2, min(E_BLOCK_BYTES // (8 * nw), pixels) // 2 * 2)


def _e_chunk(L: _Layer, nw: int, pixels: int) -> int:
    """Channels per "e"-form chunk (expanded filters on the stack beside a block of expanded
    pixels), or 0 where the form does not apply: unpadded 1x1 layers over whole words, 4 *
    E_MIN_WORDS to 4 * E_MAX_WORDS input channels (the "p" and "w" forms amortize their tiles
    over longer runs)."""
    if not (L.kh == L.kw == 1 and _dsp_border(L) is None and L.ic % 4 == 0
            and E_MIN_WORDS <= nw <= E_MAX_WORDS and L.oc >= 2 and pixels >= 2 and L.rq.ok):
        return 0
    if not L.flat and nw % 2:                  # strided pixels expand two words a turn
        return 0
    # Expanded filter and bias, and a per-channel layer's requantization (_e_rq).
    per_channel = 8 * nw + 4 + (4 * E_RQ_WORDS if L.tables[0] is not None else 0)
    # Beside the largest block of any pixel count: a function layers of this width share sizes
    # its arrays for the largest chunk and block among them (codegen._shareable_groups).
    most = (DSP_STACK - 8 * nw * _e_block(nw, 1 << 30)) // per_channel // 2 * 2
    if L.oc <= most:
        return L.oc
    # Chunks that divide the channels (none recomputed), else near-equal ones, the last
    # overlapping its predecessor (tile_start).
    fits = [c for c in range(2, most + 1, 2) if L.oc % c == 0]
    if fits and 2 * max(fits) >= most:
        return max(fits)
    chunks = -(-L.oc // most)
    return min(L.oc, -(-(-(-L.oc // chunks)) // 2) * 2)


def _e_macs(nw: int, dx: int = 0, df: int = 0, x: str = "xk", f: str = "w0") -> str:
    """One asm statement: every word step of channels j, j + 1 (at f, f + df bytes) against
    pixels 0, 1 (at x, x + dx bytes; both 8 nw by default), into a<pixel><channel>."""
    dx, df = dx or 8 * nw, df or 8 * nw
    lines = []
    for s in range(nw):
        lines += [f"ldrd %[p0], %[p1], [%[x], #{8 * s}]",
                  f"ldrd %[p2], %[p3], [%[x], #{8 * s + dx}]"]
        for ch in range(2):
            lines.append(f"ldrd %[f0], %[f1], [%[f], #{8 * s + ch * df}]")
            lines += [f"smlad %[a0{ch}], %[p0], %[f0], %[a0{ch}]",
                      f"smlad %[a0{ch}], %[p1], %[f1], %[a0{ch}]",
                      f"smlad %[a1{ch}], %[p2], %[f0], %[a1{ch}]",
                      f"smlad %[a1{ch}], %[p3], %[f1], %[a1{ch}]"]
    outs = ", ".join([f'[a{px}{ch}] "+r"(a{px}{ch})' for px in range(2) for ch in range(2)]
                     + [f'[p{k}] "=&r"(t_p{k})' for k in range(4)]
                     + [f'[f{k}] "=&r"(t_f{k})' for k in range(2)])
    sep = "\\n\\t"
    return (f"{{ int32_t t_p0, t_p1, t_p2, t_p3, t_f0, t_f1; "
            f"__asm__(\"{sep.join(lines)}\" : {outs} : [x] \"r\"({x}), [f] \"r\"({f}) : \"memory\"); }}")


def _expand_pairs_asm(s: str, d: str, end: str) -> str:
    """The asm loop that sign-extends the int8 bytes at s into int16 pairs at d (two input
    words a turn, d advancing to end: an even number of words)."""
    return f"""int32_t t0, t1, t2, t3;
        __asm__ volatile("1:\\n\\tldrd %[t0], %[t1], [%[s]], #8\\n\\t"
                         "sxtb16 %[t2], %[t0]\\n\\tsxtb16 %[t3], %[t0], ror #8\\n\\t"
                         "strd %[t2], %[t3], [%[d]], #16\\n\\t"
                         "sxtb16 %[t2], %[t1]\\n\\tsxtb16 %[t3], %[t1], ror #8\\n\\t"
                         "strd %[t2], %[t3], [%[d], #-8]\\n\\t"
                         "cmp %[d], %[end]\\n\\tbne 1b"
                         : [s] "+r"({s}), [d] "+r"({d}), [t0] "=&r"(t0), [t1] "=&r"(t1),
                           [t2] "=&r"(t2), [t3] "=&r"(t3)
                         : [end] "r"({end}) : "cc", "memory");"""


def _e_expand(words: int, dst: str = "xx") -> str:
    """words (even) input words contiguous at xp as int16 pairs at dst, two words a turn."""
    return f"""{{
        const int8_t *s = xp;
        int32_t *d = {dst};
        int32_t *const end = {dst} + {2 * words};
        {_expand_pairs_asm("s", "d", "end")}
      }}"""


def _e_block_expand(L: _Layer, P: _DspPlan, eb: int) -> str:
    """The block's pixels p0.. expanded: one run of the input where the layer is flat, else
    each pixel's ic bytes from its strided position."""
    if L.flat:
        return f"""const int8_t *xp = in0 + p0 * {L.ic};
      {_e_expand(eb * P.nw)}"""
    w = L.win
    plane = w.oh * w.ow
    return f"""for (int q = 0; q < {eb}; ++q) {{
        const int pq = p0 + q, b = pq / {plane}, oy = pq % {plane} / {w.ow}, ox = pq % {w.ow};
        const int8_t *xp = in0 + ((b * {L.ih} + oy * {w.sh}) * {L.iw} + ox * {w.sw}) * {L.ic};
        {_e_expand(P.nw, f"xx + q * {2 * P.nw}")}
      }}"""


def _e_rq(L: _Layer, co, tables) -> tuple[str, str, str]:
    """(the declaration of rx and the loop that fills it once per chunk, the declarations of a
    pair's q, h and r read back from it, its size in words) for a per-channel layer; empty
    where the multipliers are literals. Read per pair and block, they cost some 26
    instructions a pair (loads, the rounding constants) and are spilled across the asm; read
    after each tile's asm (its memory clobber keeps the loads there) they cost three LDRD."""
    if tables[0] is None:
        return "", "", ""
    fill = L.rq.setup("", "c0 + j", *tables)
    build = f"""for (int j = 0; j < {co}; ++j) {{
      {fill}
      rx[{E_RQ_WORDS} * j] = q; rx[{E_RQ_WORDS} * j + 1] = h; rx[{E_RQ_WORDS} * j + 2] = r;
    }}"""
    read = ("const int32_t *rq = rx + 3 * j; const int32_t q0 = rq[0], h0 = rq[1], q1 = rq[3], "
            "h1 = rq[4]; const int r0 = rq[2], r1 = rq[5];")
    return build, read, f"{E_RQ_WORDS} * {co}"


def _dsp_e_form(L: _Layer, P: _DspPlan) -> str | Shareable:
    """Layers over contiguous pixels (flat) read their pixel and channel counts, chunk and
    block sizes at run time: the layers of one input width share the function."""
    if not L.flat:
        return _dsp_e_strided(L, P)
    pcw = 2 * P.nw                           # int32 words per expanded filter or pixel
    total = L.n * L.win.oh * L.win.ow
    eb = _e_block(P.nw, total)
    tables = ("mult", "shift") if L.tables[0] is not None else (None, None)
    setup, stores = _dsp_outputs(L, P, "n_oc", tables)
    build, read, rx_words = _e_rq(L, "n_co", tables)
    rx_decl = "\n  int32_t rx[RX_WORDS];" if build else ""
    if build:
        setup = ""
    body = f"""
  int32_t wx[WX_WORDS];
  int32_t bx[BX_WORDS];
  int32_t xx[XX_WORDS];{rx_decl}
  for (int i_c = 0; i_c < (n_oc + n_co - 1) / n_co; ++i_c) {{
    {_tile_start_n("c0", "i_c", "n_oc", "n_co")}
    {_dsp_expand_filters(L, P, "wt", "bs", "n_oc", "n_co")}
    {build}
    for (int i_b = 0; i_b < (n_px + n_eb - 1) / n_eb; ++i_b) {{
      {_tile_start_n("p0", "i_b", "n_px", "n_eb")}
      const int8_t *xp = in0 + p0 * {L.ic};
      {_e_expand_n(f"n_eb * {P.nw}")}
      for (int i_o = 0; i_o < n_co / 2; ++i_o) {{
        const int j = 2 * i_o;
        const int o = c0 + j;
        const int32_t *w0 = wx + j * {pcw};
        const int32_t bias0 = bx[j], bias1 = bx[j + 1];
        {setup}
        for (int k = 0; k < n_eb / 2; ++k) {{
          const int32_t *xk = xx + k * {2 * pcw};
          int8_t *yp = out0 + (p0 + 2 * k) * n_oc + o;
          {_dsp_accs(P, lambda ch: f"bias{ch}")}
          {_e_macs(P.nw)}
          {read}
          {stores}
        }}
      }}
    }}
  }}"""
    params = [("const int8_t *", "in0", "in0"), ("int8_t *", "out0", "out0"),
              ("const int8_t *", "wt", L.W), ("const int32_t *", "bs", L.B), *_rq_params(L),
              ("int", "n_px", str(total)), ("int", "n_oc", str(L.oc)), ("int", "n_co", str(P.co)),
              ("int", "n_eb", str(eb))]
    bounds = (("WX_WORDS", P.co * pcw), ("BX_WORDS", P.co), ("XX_WORDS", eb * pcw))
    if build:
        bounds += (("RX_WORDS", E_RQ_WORDS * P.co),)
    return Shareable(f"e{P.nw}", body, tuple(params), bounds, "TE_DSP", _dsp_e_strided(L, P))


def _tile_start_n(var: str, i: str, n: str, t: str) -> str:
    """dsp.tile_start of C names: inline, where n and t are constants, gcc folds the test."""
    return (f"const int {var} = {n} % {t} == 0 || {i} * {t} < {n} - {t} ? {i} * {t} : {n} - {t};")


def _e_expand_n(words: str) -> str:
    """words (a C expression, even) input words contiguous at xp as int16 pairs at xx."""
    return f"""{{
        const int8_t *s = xp;
        int32_t *d = xx;
        int32_t *const end = xx + 2 * ({words});
        {_expand_pairs_asm("s", "d", "end")}
      }}"""


def _dsp_e_strided(L: _Layer, P: _DspPlan) -> str:
    """The "e" form with every size a literal (strided layers, and flat ones alone in their
    model)."""
    pcw = 2 * P.nw                           # int32 words per expanded filter or pixel
    total = L.n * L.win.oh * L.win.ow
    eb = _e_block(P.nw, total)
    nchunks = -(-L.oc // P.co)
    npairs = -(-P.co // P.ob)
    setup, stores = _dsp_outputs(L, P, L.oc)
    build, read, rx_words = _e_rq(L, P.co, L.tables)
    rx_decl = f"\n  int32_t rx[{rx_words}];" if build else ""
    if build:
        setup = ""
    return f"""
  int32_t wx[{P.co * pcw}];
  int32_t bx[{P.co}];
  int32_t xx[{eb * pcw}];{rx_decl}
  for (int i_c = 0; i_c < {nchunks}; ++i_c) {{
    {dsp.tile_start("c0", "i_c", L.oc, P.co)}
    {_dsp_expand_filters(L, P)}
    {build}
    for (int i_b = 0; i_b < {-(-total // eb)}; ++i_b) {{
      {dsp.tile_start("p0", "i_b", total, eb)}
      {_e_block_expand(L, P, eb)}
      for (int i_o = 0; i_o < {npairs}; ++i_o) {{
        {_pair_head(P, pcw, setup, '        ')}
        for (int k = 0; k < {eb // 2}; ++k) {{
          const int32_t *xk = xx + k * {2 * pcw};
          int8_t *yp = out0 + (p0 + 2 * k) * {L.oc} + o;
          {_dsp_accs(P, lambda ch: f"bias{ch}")}
          {_e_macs(P.nw)}
          {read}
          {stores}
        }}
      }}
    }}
  }}"""
