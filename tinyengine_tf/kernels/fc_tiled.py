"""FULLY_CONNECTED with the filter repacked at generation time into tiles of four units, read by
LDM (kernels/fully_connected.py picks the form; both keep TFLM's int32 accumulator exactly).

The input row is expanded once into int16 pairs: word 2g holds inputs 4g and 4g+2, word 2g+1
inputs 4g+1 and 4g+3 (what SXTB16 gives without a rotate-back), K padded with zeros to a
multiple of 4. A tile's filter words follow the order the loop reads them, so one pointer walks
all tiles of a row and every load post-increments it.

"pair" form (int8 weights, the default): two units A and B share each halfword of a filter
word, A's weight in the high byte and B's plus 128 in the low byte, so the halfword's int16
value is 256 A + (B + 128). One SMLAD of the raw word accumulates 256 SA + SB + 128 Sx, UXTB16
isolates B + 128 for a second SMLAD of SB + 128 Sx: their difference is 256 SA, exact as long as
|SA| < 2^23 (checked per A unit from its weights). Three instructions per 4 MACs against four
when both weights are sign-extended, and the filter keeps one byte per weight.

"w16" form (weights widened to int16 in Flash, only where convert(flash=...) leaves room):
one SMLAD per 2 MACs straight from the LDM'd words.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.base import WIDE_WEIGHTS

UNITS = 4               # units per tile: two pairs, or four int16 rows
UNROLL = 4              # steps (4 inputs each) per asm loop iteration
STACK = 2048            # bytes the expanded row may take on the stack
PAIR_MIN_N = 8          # below, expanding the row costs more than the pairs save
PAIR_A_LIMIT = 1 << 16  # sum |A| * 128 < 2^23 keeps 256 SA inside int32
# The filter words one step loads, a named ascending block (LDM needs ascending registers;
# r7 is the frame pointer at -O0), as te_dsp_copy_words does.
BLOCK = ("r4", "r5", "r6", "r8")

WIDE = WIDE_WEIGHTS


def padded(k: int) -> int:
    return -(-k // 4) * 4


def tile_starts(n: int) -> list:
    """First unit of each tile; the last moves back to n - UNITS (dsp.tile_start)."""
    return [min(UNITS * i, n - UNITS) for i in range(-(-n // UNITS))]


def form(op, weights: np.ndarray) -> str | None:
    """"w16", "pair" or None (the layer keeps fully_connected's own bodies)."""
    n, k = weights.shape
    if n < UNITS or 2 * padded(k) > STACK:
        return None
    if op.options.get(WIDE):
        return "w16"
    # The default form keeps the filter's byte count (optimize="size" stores the same arrays):
    # no padded inputs, no tile that repeats units.
    if n < PAIR_MIN_N or n % UNITS or k % 4:
        return None
    sums = np.abs(weights.astype(np.int64)).sum(axis=1)
    a_units = {u + j for u in tile_starts(n) for j in (0, 2)}
    return "pair" if all(sums[u] < PAIR_A_LIMIT for u in a_units) else None


def flash_bytes(shape_form: str, n: int, k: int) -> int:
    """Bytes of the packed filter (w16: K padded to whole steps, and where n % 4 != 0 the last
    tile overlaps the one before, its units repeated; the pair form has neither)."""
    per_weight = 2 if shape_form == "w16" else 1
    return len(tile_starts(n)) * UNITS * padded(k) * per_weight


def _steps(k: int) -> np.ndarray:
    """Input index of (step, word j, half h): step s covers expanded words 2s and 2s + 1."""
    s = np.arange(padded(k) // 4)[:, None, None]
    j = np.arange(2)[None, :, None]
    h = np.arange(2)[None, None, :]
    return 4 * s + j + 2 * h


def _words(halves: np.ndarray) -> np.ndarray:
    """int32 words of [..., 2] uint16 halves (low, high)."""
    w = (halves[..., 0] & 0xFFFF) | ((halves[..., 1] & 0xFFFF) << 16)
    return np.where(w >= 1 << 31, w - (1 << 32), w).astype(np.int64)


def pack(shape_form: str, weights: np.ndarray) -> np.ndarray:
    """The filter as the loop reads it, one int32 per filter word."""
    n, k = weights.shape
    w = np.zeros((n, padded(k)), np.int64)
    w[:, :k] = weights
    idx = _steps(k)
    tiles = []
    for u in tile_starts(n):
        if shape_form == "pair":     # [step, pair, word, half]
            a = np.stack([w[u][idx], w[u + 2][idx]], axis=1)
            b = np.stack([w[u + 1][idx], w[u + 3][idx]], axis=1)
            tiles.append(_words(((a & 0xFF) << 8) | (b + 128)))
        else:                        # [step, unit, word, half]
            tiles.append(_words(np.stack([w[u + t][idx] for t in range(UNITS)], axis=1)))
    return np.concatenate([t.ravel() for t in tiles])


def _portable(shape_form: str, rows: int, k: int, n: int, W: str, BF: str, epilogue: str) -> str:
    """The packed filter read back value by value (the host and -DTE_NO_DSP builds)."""
    steps, tiles = padded(k) // 4, len(tile_starts(n))
    xv = "e < " + str(k) + " ? (int32_t)x[e] : 0" if k % 4 else "(int32_t)x[e]"
    if shape_form == "pair":
        loops = f"""for (int p = 0; p < 2; ++p)
          for (int j = 0; j < 2; ++j, ++wp)
            for (int h = 0; h < 2; ++h) {{
              const int e = 4 * s + j + 2 * h;
              const int32_t xv = {xv};
              const int32_t half = (int32_t)(((uint32_t)*wp >> (16 * h)) & 0xFFFFu);
              d[2 * p] += (((half >> 8) ^ 0x80) - 0x80) * xv;
              d[2 * p + 1] += ((half & 0xFF) - 128) * xv;
            }}"""
    else:
        loops = f"""for (int t = 0; t < {UNITS}; ++t)
          for (int j = 0; j < 2; ++j, ++wp)
            for (int h = 0; h < 2; ++h) {{
              const int e = 4 * s + j + 2 * h;
              const int32_t xv = {xv};
              const int32_t half = (int32_t)(((uint32_t)*wp >> (16 * h)) & 0xFFFFu);
              d[t] += ((half ^ 0x8000) - 0x8000) * xv;
            }}"""
    return f"""
  for (int r = 0; r < {rows}; ++r) {{
    const int8_t *x = in0 + r * {k};
    int8_t *o = out0 + r * {n};
    const int32_t *wp = {W};
    for (int i = 0; i < {tiles}; ++i) {{
      {dsp.tile_start("u", "i", n, UNITS)}
      int32_t d[{UNITS}] = {{0, 0, 0, 0}};
      for (int s = 0; s < {steps}; ++s)
        {loops}
      for (int j = 0; j < {UNITS}; ++j) {{
        const int32_t acc = (int32_t)((uint32_t)d[j] + (uint32_t){BF}[u + j]);
        o[u + j] = (int8_t){epilogue.replace("[u]", "[u + j]")};
      }}
    }}
  }}"""


def _step_asm(shape_form: str) -> list:
    """One step: four inputs (two expanded words) against the tile's four units."""
    r0, r1, r2, r3 = BLOCK
    out = ["ldrd %[x0], %[x1], [%[x]], #8", f"ldmia %[w]!, {{{', '.join(BLOCK)}}}"]
    if shape_form == "pair":
        for (acc_a, acc_b), regs in ((("a0", "a1"), (r0, r1)), (("a2", "a3"), (r2, r3))):
            for reg, x in zip(regs, ("x0", "x1")):
                out += [f"smlad %[{acc_a}], {reg}, %[{x}], %[{acc_a}]", f"uxtb16 {reg}, {reg}",
                        f"smlad %[{acc_b}], {reg}, %[{x}], %[{acc_b}]"]
        return out
    for first, (acc0, acc1) in ((True, ("a0", "a1")), (False, ("a2", "a3"))):
        if not first:
            out.append(f"ldmia %[w]!, {{{', '.join(BLOCK)}}}")
        out += [f"smlad %[{acc0}], {r0}, %[x0], %[{acc0}]", f"smlad %[{acc0}], {r1}, %[x1], %[{acc0}]",
                f"smlad %[{acc1}], {r2}, %[x0], %[{acc1}]", f"smlad %[{acc1}], {r3}, %[x1], %[{acc1}]"]
    return out


def _asm(shape_form: str, k: int) -> tuple[str, str]:
    """(asm text, end pointer expression): whole iterations of UNROLL steps, then the rest."""
    steps = padded(k) // 4
    step = _step_asm(shape_form)
    lines = []
    if steps >= UNROLL:
        lines += ["1:"] + step * UNROLL + ["cmp %[x], %[end]", "bne 1b"]
    lines += step * (steps % UNROLL)
    end = f'[end] "r"(xx + {2 * UNROLL * (steps // UNROLL)})' if steps >= UNROLL else ""
    return "\\n\\t".join(lines), end


def _expand(shape_form: str, k: int, two: bool) -> str:
    """The input row as int16 pairs (doubled where the w16 requantization takes 2 * acc); the
    pair form (whole words only) also sums it (its B accumulators carry 128 Sx)."""
    words = k // 4
    pair = shape_form == "pair"
    lo_, hi_ = ("(int32_t)__sadd16(lo, lo)", "(int32_t)__sadd16(hi, hi)") if two else ("lo", "hi")
    total = "\n      sx = __smlad(lo, 0x00010001, __smlad(hi, 0x00010001, sx));" if pair else ""
    text = ""
    if words:
        text += f"""
    for (int i = 0; i < {words}; ++i) {{
      const uint32_t v = te_ld32(x + 4 * i);
      const int32_t lo = te_sx02(v), hi = te_sx13(v);
      xx[2 * i] = {lo_};
      xx[2 * i + 1] = {hi_};{total}
    }}"""
    if k % 4:
        scale = "2 * " if two else ""
        def val(e):
            return f"({scale}(int32_t)x[{e}])" if e < k else "0"

        def half_pair(e0, e1):
            return f"(int32_t)(((uint32_t){val(e1)} << 16) | (uint16_t){val(e0)})"
        b = 4 * words
        text += f"""
    xx[{2 * words}] = {half_pair(b, b + 2)};
    xx[{2 * words + 1}] = {half_pair(b + 1, b + 3)};"""
    return text


def body(shape_form: str, rows: int, k: int, n: int, W: str, BF: str, rq, mult, shift_sym,
         epilogue: str, outputs) -> str:
    """The layer's C: ``#if TE_DSP`` the asm tiles, else the portable read-back.
    outputs(units, names, two): fully_connected's stores of the units from C values."""
    two = shape_form == "w16" and rq.ok and rq.doubled
    tiles = len(tile_starts(n))
    text, end = _asm(shape_form, k)
    operands = ", ".join([f'[a{j}] "+r"(a{j})' for j in range(UNITS)]
                         + ['[x0] "=&r"(t0)', '[x1] "=&r"(t1)', '[x] "+r"(xs)', '[w] "+r"(ws)'])
    clobbers = ", ".join(f'"{r}"' for r in BLOCK)
    if shape_form == "pair":
        init = ("const int32_t c0 = (int32_t)((uint32_t){BF}[u + 1] + cx), "
                "c2 = (int32_t)((uint32_t){BF}[u + 3] + cx);\n"
                "      int32_t a0 = c0, a1 = c0, a2 = c2, a3 = c2;").format(BF=BF)
        # A's value: (a - b) / 256 (exact, |SA| < 2^23) plus its bias; B's: b already.
        finals = "".join(f"""
      const int32_t v{j} = (int32_t)((uint32_t)((int32_t)((uint32_t)a{j} - (uint32_t)a{j + 1}) >> 8)
                                     + (uint32_t){BF}[u + {j}]);
      const int32_t v{j + 1} = a{j + 1};""" for j in (0, 2))
        names = "v"
        setup = "\n    int32_t sx = 0;"
        row_const = "\n    const uint32_t cx = 0u - ((uint32_t)sx << 7);"
    else:
        if two:
            accs = ", ".join(f"a{j} = (int32_t)((uint32_t){BF}[u + {j}] << 1)" for j in range(UNITS))
        else:
            accs = ", ".join(f"a{j} = {BF}[u + {j}]" for j in range(UNITS))
        init, finals, names, setup, row_const = f"int32_t {accs};", "", "a", "", ""
    dsp_text = f"""
  int32_t xx[{padded(k) // 2}];
  for (int r = 0; r < {rows}; ++r) {{
    const int8_t *x = in0 + r * {k};
    int8_t *o = out0 + r * {n};{setup}{_expand(shape_form, k, two)}{row_const}
    const int32_t *ws = {W};
    for (int i = 0; i < {tiles}; ++i) {{
      {dsp.tile_start("u", "i", n, UNITS)}
      {init}
      {{
        const int32_t *xs = xx;
        int32_t t0, t1;
        __asm__("{text}"
                : {operands}
                : {end} : {clobbers}, "cc", "memory");
      }}{finals}{outputs(range(UNITS), names, two)}
    }}
  }}"""
    return f"""
#if TE_DSP{dsp_text}
#else{_portable(shape_form, rows, k, n, W, BF, epilogue)}
#endif"""
