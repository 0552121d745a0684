"""The in-place depthwise layer with a band of plane rows as scratch instead of a whole plane.

The whole-plane form (depthwise.py) gathers a channel's entire zero-point-padded plane before
computing it; the band form runs a channel in bands of B output rows and holds only one band's
window of plane rows: R = (B - 1) * SH + (KH - 1) * DH + 1 rows of the plane's width. Outputs go
straight to the output tensor, over input slots of the same channel. A band's window shares its
first KEEP = R - B * SH rows with the previous band's (the vertical halo): those input rows may
already be overwritten by the previous band's outputs, so they are moved to the top of the
scratch; the rest are gathered from the tensor, where they are still intact (band_fits checks
that for every band from the shapes alone). Padding columns are zero-point-filled once per call
(gathers never write them); rows outside the image are refilled with the zero point when a band
reaches them (only at the image's top and bottom).

The band height is a memory decision (band_plan.py picks it, only for layers on the arena's peak
step where a smaller scratch lowers the arena); the kernel reads it from the op option
BAND_OPTION (0 or absent: the whole plane). The DSP branch reuses the whole-plane branch's asm
tiles unchanged: a tile reads only plane rows of its own outputs' windows, all inside the band's
window when every band is at least as tall as the tallest tile (BAND_MIN rows).
"""
from __future__ import annotations

BAND_OPTION = "te_band_rows"
BAND_MIN = 4        # the DSP path's tallest tile (depthwise._asm_shape): 4 output rows


def window_rows(win, band: int) -> int:
    """Plane rows one band of `band` output rows reads."""
    return (band - 1) * win.sh + (win.kh - 1) * win.dh + 1


def keep_rows(win, band: int) -> int:
    """Rows a band's window shares with the previous band's."""
    return max(0, window_rows(win, band) - band * win.sh)


def band_fits(lay, band: int) -> bool:
    """Whether bands of `band` output rows are correct and worth it for this layout: every band
    at least BAND_MIN rows, fewer rows than the output, and each input row a band gathers from
    the tensor not yet overwritten by the outputs of earlier bands (the output of row y is at
    pixels y*OW.., the input row iy at iy*IW..)."""
    w = lay.win
    if not lay.in_place or band < BAND_MIN or band >= w.oh or 0 < w.oh % band < BAND_MIN:
        return False
    keep = keep_rows(w, band)
    for y0 in range(band, w.oh, band):
        first = max(y0 * w.sh - w.pt + keep, 0)
        if first < lay.ih and first * lay.iw < y0 * w.ow:
            return False
    return True


def band_choices(lay) -> list:
    """(band rows, scratch bytes) of every band height band_fits allows, shortest first."""
    if not lay.in_place:
        return []
    pw = lay.plane[1]
    return [(b, window_rows(lay.win, b) * pw) for b in range(BAND_MIN, lay.win.oh)
            if band_fits(lay, b)]


def _loads(lay, plan) -> str:
    stored_at = {t: p for p, t in enumerate(plan.perm)}
    return ", ".join(f"w{t} = wc[{stored_at[t]}]" for t in range(lay.taps))


def _band_loop(lay, move: str, fill: str, gather: str, compute: str) -> str:
    """The loop over bands of one channel: halo rows moved up (`move`, bands after the first),
    new rows gathered (`gather`: d, s set) or filled with the zero point (`fill`: d set)."""
    win = lay.win
    pw = lay.plane[1]
    b = lay.band
    keep = keep_rows(win, b)
    span = (win.kh - 1) * win.dh + 1
    return f"""for (int y0 = 0; y0 < {win.oh}; y0 += {b}) {{
        const int nb = {win.oh} - y0 < {b} ? {win.oh} - y0 : {b};
        const int a = y0 * {win.sh} - {win.pt};{f"{chr(10)}        if (y0) {move}" if keep else ""}
        const int rows = (nb - 1) * {win.sh} + {span};
        for (int j = {f"y0 ? {keep} : 0" if keep else "0"}; j < rows; ++j) {{
          const int iy = a + j;
          int8_t *d = scratch + j * {pw};
          if (iy < 0 || iy >= {lay.ih}) {{
            {fill}
            continue;
          }}
          d += {win.pl};
          const int8_t *s = xb + iy * {lay.iw * lay.ic} + c;{gather}
        }}
{compute}
      }}"""


def portable_body(lay, syms: dict, epilogue: str, x_zp: int, plan) -> str:
    """The portable loops of the band form: each output straight to the output tensor."""
    win, c_n = lay.win, lay.ic
    pw = lay.plane[1]
    offsets = [ky * win.dh * pw + kx * win.dw for ky in range(win.kh) for kx in range(win.kw)]
    acc = "\n              ".join(f"acc += w{t} * (int32_t)p[{off}];" for t, off in enumerate(offsets))
    compute = f"""        for (int oy = 0; oy < nb; ++oy) {{
          const int8_t *pl = scratch + oy * {win.sh * pw};
          int8_t *restrict yo = yb + (y0 + oy) * {win.ow * c_n} + c;
          for (int ox = 0; ox < {win.ow}; ++ox) {{
            const int8_t *p = pl + ox * {win.sw};
            int32_t acc = bf;
              {acc}
            yo[ox * {c_n}] = (int8_t){epilogue};
          }}
        }}"""
    gather = f"\n          for (int ix = 0; ix < {lay.iw}; ++ix) d[ix] = s[ix * {c_n}];"
    pw_keep = keep_rows(win, lay.band) * pw
    move = f"memmove(scratch, scratch + {lay.band * win.sh * pw}, {pw_keep});"
    loop = _band_loop(lay, move, f"memset(d, {x_zp}, {pw});", gather, compute)
    return f"""
  /* In place in bands of {lay.band} output rows: out0 may equal in0 (depthwise_band.py). */
  memset(scratch, {x_zp}, {lay.scratch_bytes});
  for (int b = 0; b < {lay.n}; ++b) {{
    const int8_t *xb = in0 + b * {lay.ih * lay.iw * c_n};
    int8_t *yb = out0 + b * {win.oh * win.ow * c_n};
    for (int c = 0; c < {c_n}; ++c) {{
      const int8_t *wc = {syms['w']} + c * {lay.taps};
      const int32_t {_loads(lay, plan)};
      const int32_t bf = {syms['bias_folded']}[c];
      {loop}
    }}
  }}"""


def _copy_dsp(n: int, src: str) -> str:
    """te_dsp_copy4/te_dsp_copy calls moving n bytes from src to the scratch's start."""
    code = []
    if n >= 4:
        code.append(f"te_dsp_copy4(scratch, {src}, {n // 4});")
    if n % 4:
        code.append(f"te_dsp_copy(scratch + {n // 4 * 4}, {src} + {n // 4 * 4}, {n % 4});")
    return "{ " + " ".join(code) + " }"


def _fill_dsp(dst: str, n: int, x_zp: int) -> str:
    zp4 = (x_zp & 0xFF) * 0x01010101
    code = []
    if n >= 4:
        code.append(f"te_dsp_fill4({dst}, 0x{zp4:08x}u, {n // 4});")
    if n % 4:
        code.append(f"te_dsp_fill({dst} + {n // 4 * 4}, {x_zp}, {n % 4});")
    return " ".join(code)


def dsp_body(lay, syms: dict, rq, tables, epilogue: str, x_zp: int, records=None) -> str:
    """The DSP branch of the band form: the whole-plane branch's tiles over each band."""
    from tinyengine_tf.kernels import depthwise as D
    win, c_n = lay.win, lay.ic
    pw = lay.plane[1]
    two = rq.doubled
    ny, nx, setup, macs, rsetup, store = D._dsp_tile_parts(lay, rq, tables, epilogue, records)
    npairs = -(-win.ow // nx)
    tile_y = ("const int oy = i_y * {ny} < nb - {ny} ? i_y * {ny} : nb - {ny};".format(ny=ny)
              if ny > 1 else "const int oy = i_y;")
    compute = f"""        for (int i_y = 0; i_y < (nb + {ny - 1}) / {ny}; ++i_y) {{
          {tile_y}
          const int8_t *pr = scratch + oy * {win.sh * pw};
          int8_t *yo = yb + (y0 + oy) * {win.ow * c_n} + c;
          for (int i = 0; i < {npairs}; ++i) {{
            {D.dsp.tile_start("ox", "i", win.ow, nx)}
            const int8_t *pp = pr + ox * {win.sw};
            {macs}
            {store}
          }}
        }}"""
    gather = D._dsp_gather(lay.iw, c_n)
    move = _copy_dsp(keep_rows(win, lay.band) * pw, f"scratch + {lay.band * win.sh * pw}")
    loop = _band_loop(lay, move, _fill_dsp("d", pw, x_zp), gather, compute)
    return f"""
  {_fill_dsp("scratch", lay.scratch_bytes, x_zp)}
  for (int b = 0; b < {lay.n}; ++b) {{
    const int8_t *xb = in0 + b * {lay.ih * lay.iw * c_n};
    int8_t *yb = out0 + b * {win.oh * win.ow * c_n};
    for (int c = 0; c < {c_n}; ++c) {{
      {D._channel_values(lay, syms, two, records, tables, chr(10) + "      ").lstrip()}
      {setup}
      {rsetup}
      {loop}
    }}
  }}"""
