"""What the CONV_2D DSP forms share (conv_dsp.py chooses among them and has the overview): the
stack budget and unroll limits, a layer's plan (_DspPlan), the filters expanded onto the stack
(the "w", "e" and "r" forms), the accumulators' declarations, the requantized stores and the
per-channel multiplier tables as Shareable parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinyengine_tf.kernels import dsp

if TYPE_CHECKING:                      # conv.py imports these modules: annotations only
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
    form: str         # "w", "x", "d", "p", "e", "r" or "s"
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


def _dsp_accs(P: _DspPlan, bias) -> str:
    return "int32_t " + ", ".join(f"a{px}{ch} = {bias(ch)}" for px in range(P.pb)
                                  for ch in range(P.ob)) + ";"


E_RQ_WORDS = 3        # per channel: q, h and r of the requantization ("p" and "e" forms)


def _rq_params(L: _Layer) -> list:
    """A per-channel layer's multiplier and shift tables as Shareable parameters (none where
    the portable requantization, which names the layer's arrays itself, is used)."""
    if L.tables[0] is None or not L.rq.ok:
        return []
    return [("const int32_t *", "mult", L.tables[0]), ("const int8_t *", "shift", L.tables[1])]


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


def _row_span(L: _Layer, cols: int, ind: str) -> str:
    """Kernel row ky's input row iy and the columns lo..hi of the window's cols it finds in the
    image (none past the top or bottom): the statements, lines after the first indented by ind."""
    return (f"const int iy = iy0 + ky * {L.win.dh};\n{ind}int lo = 0, hi = 0;\n"
            f"{ind}if (iy >= 0 && iy < {L.ih}) {{\n{ind}  lo = ix0 < 0 ? -ix0 : 0;\n"
            f"{ind}  hi = {L.iw} - ix0 < {cols} ? {L.iw} - ix0 : {cols};\n"
            f"{ind}  if (hi < lo) hi = lo;\n{ind}}}")


def _pair_head(P: _DspPlan, pcw: int, setup: str, ind: str) -> str:
    """The start of a chunk's channel pair j, j + 1 ("e" and "r" forms): its channel o, its
    expanded filters w0 and biases, and its requantization set-up (lines after the first
    indented by ind)."""
    return (f"{dsp.tile_start('j', 'i_o', P.co, P.ob)}\n{ind}const int o = c0 + j;\n"
            f"{ind}const int32_t *w0 = wx + j * {pcw};\n"
            f"{ind}const int32_t bias0 = bx[j], bias1 = bx[j + 1];\n{ind}{setup}")
