"""The CONV_2D DSP forms that read one operand in place (conv_dsp.py has the overview): "w" (a
chunk of filters expanded once per call, the input read directly), "x" (two pixels' windows
expanded, the filters read in place) and "d" (both read in place), with the word steps, kernel-row
runs, border patches and pixel loops the three share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.conv_dsp_base import (DSP_FULL_UNROLL, DSP_LONG_UNROLL, DSP_ROW_UNROLL,
                                                 DSP_UNROLL, _DspPlan, _dsp_accs, _dsp_border,
                                                 _dsp_expand_filters, _dsp_outputs, _row_span)

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
    from tinyengine_tf.kernels.conv import _Layer


def _dsp_step(P: _DspPlan, d: str, d_off: int, d_stride: int, e: str, e_idx: int, e_stride: int,
              post: tuple | None = None) -> str:
    """One word step: direct operands (int8, at d + d_off and + d_stride) against expanded ones
    (int32 pairs at e[e_idx], e[e_idx + 1] and + e_stride), into acc a<pixel><channel>.

    Written as one asm statement: gcc's scheduler hoists every load of a C version to the top,
    runs out of registers and reloads. post = (bytes, words) advances d and e after their first
    load (offsets here are relative to the pointers before it)."""
    n_d, n_e = (P.ob, P.pb) if P.form == "x" else (P.pb, P.ob)
    inc_d, inc_e = post or (0, 0)
    unit = 1 if P.form == "d" else 4          # e counts bytes (direct) or int32 words
    e_offs = [unit * (e_idx + j * e_stride) for j in range(n_e)]
    d_offs = [d_off + i * d_stride for i in range(n_d)]
    fits = (all(-1020 <= o <= 1020 for o in e_offs) and all(-255 <= o <= 4095 for o in d_offs)
            and (not post or (e_offs[0] == 0 and d_offs[0] == 0)))
    if not fits:
        return _dsp_step_c(P, d, d_off, d_stride, e, e_idx, e_stride, post)
    if P.form == "d" and not all(-255 <= o <= 4095 for o in e_offs):
        return _dsp_step_c(P, d, d_off, d_stride, e, e_idx, e_stride, post)
    # Two statements: the expanded (or filter) operands first, then the multiply-accumulates.
    # The second needs at most 13 registers (6 accumulators, 4 operands, 2 temporaries, d), so
    # it compiles where r7 is the frame pointer (-O0, -fno-omit-frame-pointer) too.
    load = []
    for j in reversed(range(n_e)):      # the one that post-increments goes last
        if P.form == "d":                 # a filter word, sign-extended like the input's
            where = f"[%[e]], #{inc_e}" if post and j == 0 else f"[%[e], #{e_offs[j]}]"
            load += [f"ldr %[t], {where}", f"sxtb16 %[e{j}l], %[t]", f"sxtb16 %[e{j}h], %[t], ror #8"]
        elif post and j == 0:
            load.append(f"ldrd %[e{j}l], %[e{j}h], [%[e]], #{4 * inc_e}")
        else:
            load.append(f"ldrd %[e{j}l], %[e{j}h], [%[e], #{e_offs[j]}]")
    macs = []
    for i in reversed(range(n_d)):
        if post and i == 0:
            macs.append(f"ldr %[t], [%[d]], #{inc_d}")
        else:
            macs.append(f"ldr %[t], [%[d], #{d_offs[i]}]")
        accs = [f"a{j}{i}" if P.form == "x" else f"a{i}{j}" for j in range(n_e)]  # a<px><ch>
        macs.append("sxtb16 %[u], %[t]")
        macs += [f"smlad %[{a}], %[u], %[e{j}l], %[{a}]" for j, a in enumerate(accs)]
        macs.append("sxtb16 %[t], %[t], ror #8")
        macs += [f"smlad %[{a}], %[t], %[e{j}h], %[{a}]" for j, a in enumerate(accs)]
    accs = sorted({f"a{px}{ch}" for px in range(P.pb) for ch in range(P.ob)})
    evals = [f"e{j}{h}" for j in range(n_e) for h in "lh"]
    load_outs = [f'[{v}] "=&r"(x_{v})' for v in evals] + (['[t] "=&r"(x_t)'] if P.form == "d" else [])
    mac_outs = [f'[{a}] "+r"({a})' for a in accs] + ['[t] "=&r"(x_t)', '[u] "=&r"(x_u)']
    mac_ins = [f'[{v}] "r"(x_{v})' for v in evals]
    if post:
        load_outs.append(f'[e] "+r"({e})')
        mac_outs.append(f'[d] "+r"({d})')
        load_ins = ""
    else:
        load_ins = f'[e] "r"({e})'
        mac_ins.append(f'[d] "r"({d})')
    sep = "\\n\\t"
    return (f"{{ int32_t {', '.join(f'x_{v}' for v in evals + ['t', 'u'])}; "
            f"__asm__(\"{sep.join(load)}\" : {', '.join(load_outs)} : {load_ins} : \"memory\"); "
            f"__asm__(\"{sep.join(macs)}\" : {', '.join(mac_outs)} : {', '.join(mac_ins)} : \"memory\"); }}")


def _dsp_step_c(P: _DspPlan, d: str, d_off: int, d_stride: int, e: str, e_idx: int,
                e_stride: int, post: tuple | None = None) -> str:
    """_dsp_step in C, for offsets the instructions cannot encode."""
    n_d, n_e = (P.ob, P.pb) if P.form == "x" else (P.pb, P.ob)
    if P.form == "d":
        lines = [f"const uint32_t e{j} = te_ld32({e} + {e_idx + j * e_stride}); "
                 f"const int32_t e{j}l = te_sx02(e{j}), e{j}h = te_sx13(e{j});" for j in range(n_e)]
    else:
        lines = [f"const int32_t e{j}l = {e}[{e_idx + j * e_stride}], e{j}h = {e}[{e_idx + j * e_stride + 1}];"
                 for j in range(n_e)]
    for i in range(n_d):
        macs_l, macs_h = [], []
        for j in range(n_e):
            a = f"a{j}{i}" if P.form == "x" else f"a{i}{j}"
            macs_l.append(f"{a} = __smlad(vl, e{j}l, {a});")
            macs_h.append(f"{a} = __smlad(vh, e{j}h, {a});")
        lines.append(f"{{ const uint32_t v = te_ld32({d} + {d_off + i * d_stride}); "
                     f"const int32_t vl = te_sx02(v); {' '.join(macs_l)} "
                     f"const int32_t vh = te_sx13(v); {' '.join(macs_h)} }}")
    if post:
        lines.append(f"{d} += {post[0]}; {e} += {post[1]};")
    return "{ " + " ".join(lines) + " }"


def _dsp_e_type(P: _DspPlan) -> tuple[str, int]:
    """(C type of the e side, e units per word step)."""
    if P.form == "d":
        return "const int8_t", 4
    return "const int32_t", 2 * P.pb if P.il else 2


def _dsp_run(P: _DspPlan, d: str, d_stride: int, e: str, e_stride: int, e_base: int = 0) -> str:
    """All word steps of one kernel row's run, d pointing at its start and e at e_base units
    before it (e_base only where the run is fully unrolled)."""
    code = []
    main = P.main
    etype, u = _dsp_e_type(P)
    if main <= DSP_FULL_UNROLL:
        code += [_dsp_step(P, d, 4 * s, d_stride, e, e_base + u * s, e_stride) for s in range(main)]
    else:
        # DSP_UNROLL steps per iteration (two for short runs); the first one's loads advance both
        # pointers. The loop's compare and branch cost 2 instructions per iteration of 8 x 2 per
        # step (the 2 x 2 tiles): 6% of the MACs' time at two steps, 3% at four. With 3 x 2
        # tiles gcc also reloads the loop's end from the stack (5 per iteration, measured):
        # DSP_LONG_UNROLL steps where they divide the run (ResNet's 12, 24 and 48 words), 1.7%.
        if main >= 2 * DSP_LONG_UNROLL and main % DSP_LONG_UNROLL == 0:
            n = DSP_LONG_UNROLL
        else:
            n = DSP_UNROLL if main >= 2 * DSP_UNROLL else 2
        body = "\n              ".join(
            [_dsp_step(P, "ds", 0, d_stride, "es", 0, e_stride, post=(4 * n, n * u))]
            + [_dsp_step(P, "ds", -4 * k, d_stride, "es", -u * k, e_stride) for k in range(n - 1, 0, -1)])
        code.append(f"""const int8_t *ds = {d};
            {etype} *es = {e};
            {etype} *const ee = es + {n * u * (main // n)};
            do {{
              {body}
            }} while (es != ee);""")
        code += [_dsp_step(P, "ds", 4 * k, d_stride, "es", u * k, e_stride) for k in range(main % n)]
    if P.nw > main and P.R % 4 == 1 and P.form != "d":
        code.append(_dsp_tail_byte(P, d, d_stride, e, e_base + u * main, e_stride))
    elif P.nw > main:     # the overlapping last word
        code.append(_dsp_step(P, d, P.R - 4, d_stride, e, e_base + u * main, e_stride))
    return "\n            ".join(code)


def _dsp_tail_byte(P: _DspPlan, d: str, d_stride: int, e: str, e_idx: int, e_stride: int) -> str:
    """A run's single last byte: the expanded side's overlapping word holds [0, v] in its odd
    half (the other bytes repeat earlier ones), so one SMLABT per accumulator against the direct
    side's byte does it, instead of a whole overlapping word step."""
    n_d, n_e = (P.ob, P.pb) if P.form == "x" else (P.pb, P.ob)
    e_offs = [4 * (e_idx + 1 + j * e_stride) for j in range(n_e)]
    d_offs = [P.R - 1 + i * d_stride for i in range(n_d)]
    acc = [[f"a{j}{i}" if P.form == "x" else f"a{i}{j}" for j in range(n_e)] for i in range(n_d)]
    if not (all(o <= 4095 for o in e_offs) and all(o <= 4095 for o in d_offs)):
        lines = [f"const int32_t e{j} = {e}[{e_idx + 1 + j * e_stride}];" for j in range(n_e)]
        for i in range(n_d):
            lines.append(f"{{ const int32_t v = {d}[{d_offs[i]}]; "
                         + " ".join(f"{a} = __smlabt(v, e{j}, {a});" for j, a in enumerate(acc[i])) + " }")
        return "{ " + " ".join(lines) + " }"
    asm = [f"ldr %[e{j}], [%[e], #{o}]" for j, o in enumerate(e_offs)]
    for i in range(n_d):
        asm.append(f"ldrsb %[t], [%[d], #{d_offs[i]}]")
        asm += [f"smlabt %[{a}], %[t], %[e{j}], %[{a}]" for j, a in enumerate(acc[i])]
    accs = sorted({a for row in acc for a in row})
    outs = ([f'[{a}] "+r"({a})' for a in accs] + [f'[e{j}] "=&r"(x_e{j})' for j in range(n_e)]
            + ['[t] "=&r"(x_t)'])
    sep = "\\n\\t"
    return (f"{{ int32_t {', '.join(f'x_e{j}' for j in range(n_e))}, x_t; "
            f"__asm__(\"{sep.join(asm)}\" : {', '.join(outs)} : [d] \"r\"({d}), [e] \"r\"({e}) "
            f": \"memory\"); }}")


def _dsp_macs(L: _Layer, P: _DspPlan, d: str, d_row, d_stride: int, e: str,
              e_stride: int) -> str:
    """Every kernel row: d advances by d_row bytes (a literal or a C expression) per row, e by
    2 * nw words."""
    run = _dsp_run(P, "dr", d_stride, "er", e_stride)
    etype, u = _dsp_e_type(P)
    if 1 < L.kh and P.main <= DSP_FULL_UNROLL and L.kh * P.nw <= DSP_ROW_UNROLL:
        # Short rows (the first layers' 1-3 input channels): the row loop's counter, compare
        # and branch cost as much as a fifth of a row; written out, each row reads the expanded
        # side at literal offsets and only d moves.
        rows = "\n            du += {};\n            ".format(d_row).join(
            _dsp_run(P, "du", d_stride, "er", e_stride, ky * u * P.nw) for ky in range(L.kh))
        return f"""{{
            const int8_t *du = {d};
            {etype} *er = {e};
            {rows}
          }}"""
    if L.kh == 1:
        return f"""{{
            const int8_t *dr = {d};
            {etype} *er = {e};
            {run}
          }}"""
    return f"""{{
            const int8_t *dr = {d};
            {etype} *er = {e};
            for (int ky = 0; ky < {L.kh}; ++ky) {{
              {run}
              dr += {d_row};
              er += {u * P.nw};
            }}
          }}"""


def _dsp_patch_width(L: _Layer, P: _DspPlan) -> int:
    """Bytes per row of a border tile's patch: the pb windows' kernel row, as in the input."""
    return (L.kw + (P.pb - 1) * L.win.sw) * L.ic


def _dsp_pixels(L: _Layer, P: _DspPlan, inner, narrow=None) -> str:
    """Loops over every pixel tile; inner(yo) is the code of one tile whose first output is
    out0[yo] and whose windows start at xp, kernel rows drow bytes apart.

    A tile whose windows leave the input (padding) copies them into `patch` first, rows of both
    windows laid out as in the input with the zero point outside, so the same code serves every
    tile; TFLM's skipped taps are exactly taps reading the zero point.

    narrow: (plan, inner) of 2-pixel tiles that end each row after whole 3-pixel ones (see
    _mixed_rows), instead of a last 3-pixel tile recomputing outputs."""
    w = L.win
    if L.flat:
        total = L.n * w.oh * w.ow
        return f"""
        for (int i_p = 0; i_p < {-(-total // P.pb)}; ++i_p) {{
          {dsp.tile_start("p", "i_p", total, P.pb)}
          const int8_t *xp = in0 + p * {L.ic};
          {inner(f"p * {L.oc}")}
        }}"""

    def tiles(P: _DspPlan, inner, count: int, start: str) -> str:
        return f"""
            for (int i_p = 0; i_p < {count}; ++i_p) {{
              {start}
              const int ix0 = ox * {w.sw} - {w.pl};
              {_dsp_source(L, P)}
              {inner(f"((b * {w.oh} + oy) * {w.ow} + ox) * {L.oc}")}
            }}"""
    if narrow is None:
        loops = tiles(P, inner, -(-w.ow // P.pb), dsp.tile_start("ox", "i_p", w.ow, P.pb))
    else:
        wide, few = _mixed_rows(w.ow)
        loops = (tiles(P, inner, wide, f"const int ox = i_p * {P.pb};") +
                 tiles(narrow[0], narrow[1], few, f"const int ox = {wide * P.pb} + i_p * 2;"))
    return f"""
        for (int b = 0; b < {L.n}; ++b) {{
          for (int oy = 0; oy < {w.oh}; ++oy) {{
            const int iy0 = oy * {w.sh} - {w.pt};{loops}
          }}
        }}"""


def _narrow_plan(L: _Layer, P: _DspPlan) -> _DspPlan | None:
    """2-pixel "w" tiles to end rows that 3-pixel tiles do not divide, for the first layers
    (1-3 input channels, where _wide_pays chose 3-pixel tiles): MobileNetV1's 64 outputs per row
    in 22 tiles of 3 recompute 2; 20 of 3 and 2 of 2 cost 2% less for the layer."""
    w = L.win
    if P.form != "w" or P.pb != 3 or L.ic > 3 or L.flat or w.ow % 3 == 0 or w.ow < 5:
        return None
    return _DspPlan(P.form, P.R, P.nw, P.ob, 2, P.co)


def _mixed_rows(ow: int) -> tuple[int, int]:
    """(3-pixel tiles, 2-pixel tiles) covering a row of ow outputs exactly."""
    few = (3 - ow % 3) % 3
    return (ow - 2 * few) // 3, few


def _dsp_source(L: _Layer, P: _DspPlan) -> str:
    """A tile's window start xp (and drow), through the patch where the tile leaves the input."""
    w = L.win
    row = w.dh * L.iw * L.ic
    xo = f"((b * {L.ih} + iy0) * {L.iw} + ix0) * {L.ic}"
    border = _dsp_border(L)
    if border is None:
        source = f"const int8_t *xp = in0 + {xo};"
    else:
        ylo, yhi, xlo, xhi = border
        tests = [t for t, on in ((f"oy < {ylo}", ylo > 0), (f"oy >= {yhi}", yhi < w.oh),
                                 (f"ox < {xlo}", xlo > 0), (f"ox + {P.pb} > {xhi}", xhi - P.pb < w.ow - P.pb))
                 if on]
        if not tests or xlo >= xhi or ylo >= yhi:
            tests = ["1"]
        cols = L.kw + (P.pb - 1) * w.sw
        wp = cols * L.ic
        four = L.ic % 4 == 0                 # whole words per pixel: copy and fill by words
        zp4 = (L.zp & 0xFF) * 0x01010101

        def fill(dst: str, n: str) -> str:
            return (f"te_dsp_fill4({dst}, 0x{zp4:08x}u, ({n}) / 4);" if four
                    else f"te_dsp_fill({dst}, {L.zp}, {n});")

        def copy(dst: str, src: str, n: str) -> str:
            return f"te_dsp_copy_words({dst}, {src}, ({n}) / 4);" if four else f"te_dsp_copy_run({dst}, {src}, {n});"
        # Per kernel row: the columns inside the input are one contiguous run; zp around it.
        source = f"""const int8_t *xp;
              int drow = {row};
              if ({' || '.join(tests)}) {{
                int8_t *pt = patch;
                for (int ky = 0; ky < {L.kh}; ++ky, pt += {wp}) {{
                  {_row_span(L, cols, '                  ')}
                  if (lo > 0) {fill("pt", f"lo * {L.ic}")}
                  if (hi > lo) {{
                    const int8_t *src = in0 + ((b * {L.ih} + iy) * {L.iw} + ix0 + lo) * {L.ic};
                    {copy("pt + lo * " + str(L.ic), "src", f"(hi - lo) * {L.ic}")}
                  }}
                  if (hi < {cols}) {fill(f"pt + hi * {L.ic}", f"({cols} - hi) * {L.ic}")}
                }}
                xp = patch;
                drow = {wp};
              }} else {{
                xp = in0 + {xo};
              }}"""
    return source


def _dsp_pixels_outer(L: _Layer, P: _DspPlan) -> bool:
    """Whether the "w" form should loop over pixel tiles outside the channel pairs: then a
    border tile's patch is built once per chunk instead of once per channel pair, but every
    tile reloads its channels' multipliers (~20 instructions per channel pair, measured)."""
    border = _dsp_border(L)
    if border is None:
        return False
    w = L.win
    ylo, yhi, xlo, xhi = border
    tiles_per_row = -(-w.ow // P.pb)
    inner = max(0, yhi - ylo) * len([t for t in range(tiles_per_row)
                                     if xlo <= min(t * P.pb, w.ow - P.pb) and
                                     min(t * P.pb, w.ow - P.pb) + P.pb <= xhi])
    border_tiles = w.oh * tiles_per_row - inner
    patch_cost = L.kh * (12 + 3 * (L.kw + (P.pb - 1) * w.sw) * L.ic)
    pairs = -(-L.oc // P.ob)
    channel_outer = border_tiles * pairs * patch_cost
    pixel_outer = w.oh * tiles_per_row * pairs * 20 + border_tiles * patch_cost
    return pixel_outer < channel_outer


def _dsp_drow(L: _Layer) -> str | int:
    """Bytes between kernel rows of a tile's windows: a variable where border tiles use patches."""
    return "drow" if _dsp_border(L) is not None else L.win.dh * L.iw * L.ic


def _dsp_patch(L: _Layer, P: _DspPlan) -> str:
    if _dsp_border(L) is None:
        return ""
    # Word storage: the patch's rows are copied by LDM/STM where they are aligned.
    n = L.kh * _dsp_patch_width(L, P)
    return f"\n  int32_t patch_w[{-(-n // 4)}];\n  int8_t *const patch = (int8_t *)patch_w;"


def _dsp_w_form(L: _Layer, P: _DspPlan) -> str:
    w = L.win
    pcw = 2 * L.kh * P.nw                    # int32 words per expanded filter
    xq = L.ic if L.flat else w.sw * L.ic     # input offset of a tile's second pixel
    nchunks = -(-L.oc // P.co)
    npairs = -(-P.co // P.ob)
    setup, _ = _dsp_outputs(L, P, L.oc)
    pixels_outer = _dsp_pixels_outer(L, P)

    def tile_of(Q: _DspPlan):
        stores = _dsp_outputs(L, Q, L.oc)[1]

        def tile(yo: str) -> str:
            macs = _dsp_macs(L, Q, "xp", _dsp_drow(L), xq, "w0", pcw)
            # With the pixel tiles outermost each tile reads its pair's multipliers, after the
            # asm (held across it, they would be spilled and reloaded).
            return f"""{{
            int8_t *yp = out0 + {yo} + o;
            {_dsp_accs(Q, lambda ch: f"bias{ch}")}
            {macs}
            {setup if pixels_outer else ""}
            {stores}
          }}"""
        return tile
    tile = tile_of(P)
    Q = _narrow_plan(L, P)
    biases = " ".join(f"const int32_t bias{ch} = bx[j + {ch}];" for ch in range(P.ob))
    pairs = f"""for (int i_o = 0; i_o < {npairs}; ++i_o) {{
      {dsp.tile_start("j", "i_o", P.co, P.ob)}
      const int o = c0 + j;
      const int32_t *w0 = wx + j * {pcw};
      {biases}
      {"" if pixels_outer else setup}"""
    if not pixels_outer:
        # Channel pairs outermost: their multipliers stay in registers for every pixel.
        narrow = None if Q is None else (Q, tile_of(Q))
        tiles = f"""{pairs}{_dsp_pixels(L, P, tile, narrow)}
    }}"""
    else:
        # Pixel tiles outermost: a border tile's patch serves every channel pair of the chunk.
        def outer(tile):
            return lambda yo: f"""{{
            {pairs}
            {tile(yo)}
            }}
          }}"""
        narrow = None if Q is None else (Q, outer(tile_of(Q)))
        tiles = _dsp_pixels(L, P, outer(tile), narrow)
    return f"""
  int32_t wx[{P.co * pcw}];
  int32_t bx[{P.co}];{_dsp_patch(L, P)}
  for (int i_c = 0; i_c < {nchunks}; ++i_c) {{
    {dsp.tile_start("c0", "i_c", L.oc, P.co)}
    {_dsp_expand_filters(L, P)}
    {tiles}
  }}"""


def _dsp_x_form(L: _Layer, P: _DspPlan) -> str:
    w = L.win
    pxw = 2 * L.kh * P.nw                    # int32 words per expanded pixel window
    xq = L.ic if L.flat else w.sw * L.ic
    npairs = -(-L.oc // P.ob)
    setup, stores = _dsp_outputs(L, P, L.oc)
    # A doubled layer stores 2 (x + 128) (at most 510: no carry between the halves).
    two = L.rq.doubled
    lo_, hi_ = ("(int32_t)(__uxtb16(v) << 1)", "(int32_t)((uint32_t)te_ux13(v) << 1)") if two else \
        ("(int32_t)__uxtb16(v)", "te_ux13(v)")
    _, u = _dsp_e_type(P)                    # int32 words per word step of the expanded side
    expand_row = f"""for (int s_ = 0; s_ < {P.main}; ++s_) {{
                  const uint32_t v = te_ld32(s + 4 * s_) ^ 0x80808080u;
                  d[{u} * s_] = {lo_};
                  d[{u} * s_ + 1] = {hi_};
                }}"""
    if P.nw > P.main:        # the overlapping last word, its repeated bytes zeroed
        keep = P.keep_mask(P.main)
        mask = sum(0xFF << (8 * k) for k in range(4) if keep >> k & 1)
        expand_row += f"""
                {{
                  const uint32_t v = (te_ld32(s + {P.R - 4}) ^ 0x80808080u) & 0x{mask:08x}u;
                  d[{u * P.main}] = {lo_};
                  d[{u * P.main + 1}] = {hi_};
                }}"""

    if L.flat and P.nw == P.main and not P.il:
        # The tile's pixels are contiguous in the input, and so are their expanded windows.
        expand = f"""for (int s_ = 0; s_ < {P.pb * P.main}; ++s_) {{
              const uint32_t v = te_ld32(xp + 4 * s_) ^ 0x80808080u;
              xx[2 * s_] = {lo_};
              xx[2 * s_ + 1] = {hi_};
            }}"""
    else:
        expand = f"""for (int q = 0; q < {P.pb}; ++q) {{
              const int8_t *s = xp + q * {xq};
              int32_t *d = xx + q * {2 if P.il else pxw};
              for (int ky = 0; ky < {L.kh}; ++ky) {{
                {expand_row}
                s += {_dsp_drow(L)};
                d += {u * P.nw};
              }}
            }}"""

    def tile(yo: str) -> str:
        macs = _dsp_macs(L, P, f"{L.W} + o * {L.k}", P.R, L.k, "xx", 2 if P.il else pxw)
        return f"""{{
            int8_t *yq = out0 + {yo};
            {expand}
            for (int i_o = 0; i_o < {npairs}; ++i_o) {{
              {dsp.tile_start("o", "i_o", L.oc, P.ob)}
              int8_t *yp = yq + o;
              {_dsp_accs(P, (lambda ch: f"(int32_t)((uint32_t){L.B}[o + {ch}] << 1)") if two
                         else (lambda ch: f"{L.B}[o + {ch}]"))}
              {macs}
              {setup}
              {stores}
            }}
          }}"""
    return f"""
  int32_t xx[{P.pb * pxw}];{_dsp_patch(L, P)}{_dsp_pixels(L, P, tile)}"""


def _dsp_d_form(L: _Layer, P: _DspPlan) -> str:
    """Both sides read in place, pixel tiles outermost (a border tile's patch serves every
    channel). The stored dot-form bias assumes x + 128: the sign-extended input needs
    bias + 128 * sum(w), summed once per call."""
    npairs = -(-L.oc // P.ob)
    setup, stores = _dsp_outputs(L, P, L.oc)
    xq = L.ic if L.flat else L.win.sw * L.ic

    def tile(yo: str) -> str:
        macs = _dsp_macs(L, P, "xp", _dsp_drow(L), xq, f"{L.W} + o * {L.k}", L.k)
        return f"""{{
            int8_t *yq = out0 + {yo};
            for (int i_o = 0; i_o < {npairs}; ++i_o) {{
              {dsp.tile_start("o", "i_o", L.oc, P.ob)}
              int8_t *yp = yq + o;
              {_dsp_accs(P, lambda ch: f"bd[o + {ch}]")}
              {macs}
              {setup}
              {stores}
            }}
          }}"""
    return f"""
  int32_t bd[{L.oc}];{_dsp_patch(L, P)}
  for (int o = 0; o < {L.oc}; ++o) {{
    const int8_t *wp = {L.W} + o * {L.k};
    int32_t sum = 0;
    for (int s = 0; s < {L.k // 4}; ++s) {{
      const uint32_t v = te_ld32(wp + 4 * s);
      sum = __smlad(te_sx02(v), 0x00010001, sum);
      sum = __smlad(te_sx13(v), 0x00010001, sum);
    }}
    bd[o] = (int32_t)((uint32_t){L.B}[o] + ((uint32_t)sum << 7));
  }}{_dsp_pixels(L, P, tile)}"""
