"""CONV_2D on the Arm DSP extension (c/te_dsp.h): the ``#if TE_DSP`` branch of conv.py's layers.

conv.py holds the portable loops (the dot and broadcast forms) and decides everything a layer's
arrays depend on (_Layer); this module only reads those arrays, so Flash does not depend on the
target. Tiles of pixels x output channels, two MACs per SMLAD.

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
- "e" form (unpadded 1x1 layers of 8-32 input channels, where "w" would be used): both sides
  expanded, the filters once per call as in "w", a block of pixels once per chunk of channels;
  2 x 2 tiles of 4 LDRD and 8 SMLAD per word step (0.75 instructions per MAC in the loop); a
  per-channel layer's q, h, r are computed once per chunk of channels (_e_rq).
- "r" form (kernels wider than 1x1 over 8k input channels, where "w" would be used): as "e",
  but what is expanded per chunk of channels is the kernel rows under a block of outputs of
  one output row (zero point outside the image), which every window of the block reads at a
  word offset (ResNet's 3x3 16-channel layers: 0.97-1.05 instructions per MAC against 1.15-1.2).
- "o" form (one input channel, stride 2 across: KWS's first layer): the padded image expanded
  once per call into int16 x - zp, tiles of up to 5 pixels x 1 channel sharing each kernel
  row's input words (see _dsp_o_form).

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

from dataclasses import dataclass

from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp
from tinyengine_tf.kernels.base import Shareable

if TYPE_CHECKING:                      # conv.py imports this module: annotations only
    from tinyengine_tf.kernels.conv import _Layer


# Bytes of stack the expanded operands (and a border tile's patch) of one layer may take. Layers
# run one at a time, so this is per layer: the firmware's 4 KiB stack (firmware.STACK_BYTES)
# holds the deepest path, Reset_Handler -> main -> invoke -> a conv, at 3,232 B on ResNet
# (gcc -fcallgraph-info=su at -O2: the 3x3 64-channel layer's frame is 3,168 B), 2,872 B on VWW.
# 2048 B kept ResNet's 3x3 64-channel layer (two 1.1 KB windows and a 768 B patch) on the
# "d" form, and chunked its 16- and 32-channel layers' filters 4 channels at a time.
DSP_STACK = 3072
# The first layers' 1-3 input channels (KWS, VWW and ResNet's first convs) keep the budget
# their plans were tuned for.
DSP_STACK_FEW = 2048
DSP_WIDE = 3          # pixels per "w"-form tile of a large layer (see _dsp_plan)
DSP_WIDE_MACS = 250_000
DSP_FULL_UNROLL = 2   # word steps of a run written out without a loop up to this many
DSP_UNROLL = 4        # word steps per loop iteration of runs of at least twice as many
DSP_LONG_UNROLL = 6   # the same for runs of multiples of it from twice as many
# Kernel rows of fully unrolled runs written out up to this many word steps. Looping over the
# rows of the 3x3 first layers over 3 channels (9 steps; a limit of 6) saves 436 B on VWW and
# 724 B on ResNet for 54k and 48k more instructions: the default mode keeps the speed.
DSP_ROW_UNROLL = 10


@dataclass
class _DspPlan:
    form: str         # "w", "x", "d", "p", "e" or "r"
    R: int            # bytes per kernel-row run
    nw: int           # words per run (the last one overlapping when R % 4)
    ob: int           # output channels per tile
    pb: int           # pixels per tile ("r" form: per block)
    co: int = 0       # "w" form: channels per expanded chunk
    il: bool = False  # "x" form: the tile's expanded windows interleaved word step by word step

    @property
    def main(self) -> int:
        return self.R // 4

    def x_off(self, s: int) -> int:
        return min(4 * s, self.R - 4)

    def keep_mask(self, s: int) -> int:
        """Bytes of word s that are not already covered by word s - 1 (a 4-bit mask)."""
        dup = 4 * s - self.x_off(s)
        return (0xF << dup) & 0xF


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


def _dsp_outputs(L: _Layer, P: _DspPlan, yq, tables=None) -> tuple[str, str]:
    """(requantization setup of channels o..o+ob-1, stores of the tile's accumulators); yq:
    the outputs' pixel stride (a literal, or a C name), tables: the multiplier and shift
    arrays' C names (the layer's by default)."""
    rq = L.rq
    two = rq.doubled and P.form != "d"
    tables = L.tables if tables is None else tables
    per_channel = tables[0] is not None
    setup, stores = [], []
    for ch in range(P.ob):
        if rq.ok:
            setup.append(rq.setup(str(ch), f"o + {ch}", *tables))
        for px in range(P.pb):
            acc = f"a{px}{ch}"
            val = (f"(int8_t){rq.expr(acc, str(ch), per_channel, two)}" if rq.ok
                   else L.epi(acc, f"o + {ch}"))
            at = px * yq + ch if isinstance(yq, int) else (f"{px} * {yq} + {ch}" if px else ch)
            stores.append(f"yp[{at}] = {val};")
    return " ".join(s for s in setup if s), "\n            ".join(stores)


def _dsp_border(L: _Layer) -> tuple[int, int, int, int] | None:
    """(ylo, yhi, xlo, xhi) of the outputs whose windows lie inside the input, or None for a
    layer without padding (every window inside)."""
    w = L.win
    ylo, yhi = w.interior("y")
    xlo, xhi = w.interior("x")
    if L.flat or (ylo, yhi, xlo, xhi) == (0, w.oh, 0, w.ow):
        return None
    return ylo, yhi, xlo, xhi


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
                  const int iy = iy0 + ky * {w.dh};
                  int lo = 0, hi = 0;
                  if (iy >= 0 && iy < {L.ih}) {{
                    lo = ix0 < 0 ? -ix0 : 0;
                    hi = {L.iw} - ix0 < {cols} ? {L.iw} - ix0 : {cols};
                    if (hi < lo) hi = lo;
                  }}
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


def _dsp_accs(P: _DspPlan, bias) -> str:
    return "int32_t " + ", ".join(f"a{px}{ch} = {bias(ch)}" for px in range(P.pb)
                                  for ch in range(P.ob)) + ";"


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
            "e": _dsp_e_form, "r": _dsp_r_form}[P.form](L, P)
    if isinstance(code, Shareable):
        return code.inline(), code
    return code, None


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
E_RQ_WORDS = 3        # per channel: q, h and r of the requantization ("p" and "e" forms)
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


def _split_words(two: bool) -> tuple:
    """(lo, hi shift operands, byte mask, the loop's first lines) of the expansion loops: a step
    loads 2 words and flips them to x + 128; AND with the mask (shifted) then moves a word's
    bytes 0/2 (lo) or 1/3 (hi) into halves, doubled where two."""
    lo, hi = (", lsl #1", ", lsr #7") if two else ("", ", lsr #8")
    mask = "0x01FE01FEu" if two else "0x00FF00FFu"
    head = ["1:", "ldrd %[t0], %[t1], [%[s]], #8",
            "eor %[t0], %[t0], #0x80808080", "eor %[t1], %[t1], #0x80808080"]
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


def _rq_params(L: _Layer) -> list:
    """A per-channel layer's multiplier and shift tables as Shareable parameters (none where
    the portable requantization, which names the layer's arrays itself, is used)."""
    if L.tables[0] is None or not L.rq.ok:
        return []
    return [("const int32_t *", "mult", L.tables[0]), ("const int8_t *", "shift", L.tables[1])]


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


def _pw_expand(two: bool, pb: int) -> str:
    """The bytes [s, se) (a whole number of 8, at least 8) as (x + 128) pairs of neighbouring
    inputs (doubled where two) at d, 8 a step, leaving d past them: the byte mask splits a word
    into bytes 0/2 and 1/3 (and doubles them, by its shifts), PKHBT and PKHTB pair them up 0/1
    and 2/3."""
    lo, hi, mask, head = _split_words(two)
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
        {dsp.tile_start("j", "i_o", P.co, P.ob)}
        const int o = c0 + j;
        const int32_t *w0 = wx + j * {pcw};
        const int32_t bias0 = bx[j], bias1 = bx[j + 1];
        {setup}
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


def _weight_index(L: _Layer, o: str, ky: str, pos: str, oc=None) -> str:
    """Index in L.W of filter o's byte pos of kernel row ky, in either stored order (oc: the
    channel count as a C name, where it is read at run time)."""
    R = L.kw * L.ic
    if L.dot:
        return f"{o} * {L.k} + {ky} * {R} + {pos}"
    return f"({ky} * {R} + {pos}) * {L.oc if oc is None else oc} + {o}"


def _dsp_expand_filters(L: _Layer, P: _DspPlan, W=None, B=None, oc=None, co=None) -> str:
    """The loop that expands channels c0..c0+co-1 into wx (int16 pairs, 2 * kh * nw words each,
    the bytes an overlapping last word repeats zeroed) and their biases into bx, both for the
    sign-extended input: bias - zp * sum(w), from the stored (dot: zp + 128 folded) bias. A
    doubled layer stores 2 w (int16 holds it), so its accumulators hold 2 * acc. W, B, oc, co:
    C names of the weights, biases, channel count and chunk where they are parameters."""
    W, B, co = W or L.W, B or L.B, co or P.co
    pcw = 2 * L.kh * P.nw
    fold = 128 if L.dot else -L.zp
    two = L.rq.doubled
    if L.dot and L.kw * L.ic % 4 == 0:
        pair = "(int32_t)__sadd16(p, p)" if two else "p"
        expand_word = f"""const uint32_t v = te_ld32({W} + {_weight_index(L, "o", "ky", "4 * s", oc)});
              {{ const int32_t p = te_sx02(v); d[0] = {pair}; }}
              {{ const int32_t p = te_sx13(v); d[1] = {pair}; }}"""
    else:
        base = "4 * s" if P.R % 4 == 0 else f"(4 * s < {P.R - 4} ? 4 * s : {P.R - 4})"
        expand_word = f"""const int base = {base};
              int32_t v[4];
              for (int t = 0; t < 4; ++t)
                v[t] = base + t < 4 * s ? 0 : {'2 * ' if two else ''}(int32_t){W}[{_weight_index(L, "o", "ky", "base + t", oc)}];
              d[0] = te_pack16(v[0], v[2]);
              d[1] = te_pack16(v[1], v[3]);"""
    return f"""for (int j = 0; j < {co}; ++j) {{
      const int o = c0 + j;
      int32_t *d = wx + j * {pcw};
      int32_t sum = 0;
      for (int ky = 0; ky < {L.kh}; ++ky) {{
        for (int s = 0; s < {P.nw}; ++s) {{
          {{
              {expand_word}
              sum = __smlad(d[0], 0x00010001, sum);
              sum = __smlad(d[1], 0x00010001, sum);
          }}
          d += 2;
        }}
      }}
      bx[j] = (int32_t)(((uint32_t){B}[o]{' << 1' if two else ''}) + (uint32_t)({fold} * sum));
    }}"""


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
    w = L.win
    cols = _r_cols(L, P.pb)
    rw = 2 * cols * L.ic // 4               # int32 words per expanded row
    zp = L.zp
    zpp = ((zp & 0xFFFF) | ((zp & 0xFFFF) << 16))
    cw = L.ic // 4                            # input words per pixel
    return f"""for (int ky = 0; ky < {L.kh}; ++ky) {{
          int32_t *d = xr + ky * {rw};
          const int iy = iy0 + ky * {w.dh};
          int lo = 0, hi = 0;
          if (iy >= 0 && iy < {L.ih}) {{
            lo = ix0 < 0 ? -ix0 : 0;
            hi = {L.iw} - ix0 < {cols} ? {L.iw} - ix0 : {cols};
            if (hi < lo) hi = lo;
          }}
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
            {dsp.tile_start("j", "i_o", P.co, P.ob)}
            const int o = c0 + j;
            const int32_t *w0 = wx + j * {pcw};
            const int32_t bias0 = bx[j], bias1 = bx[j + 1];
            {setup}
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
