"""Sliding-window geometry shared by conv, depthwise and pooling, and the requantize epilogue."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyengine_tf import quant
from tinyengine_tf.errors import UnsupportedOpError


@dataclass
class Window:
    ih: int
    iw: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int   # rows of implicit padding before the input
    pl: int
    oh: int
    ow: int

    @classmethod
    def from_op(cls, op, ih, iw, kh, kw, oh, ow) -> "Window":
        o = op.options
        sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
        dh, dw = int(o.get("dilation_h_factor", 1)), int(o.get("dilation_w_factor", 1))
        if min(sh, sw, dh, dw) < 1 or min(kh, kw) < 1:
            raise UnsupportedOpError(f"{op.label()}: strides {sh}x{sw}, dilations {dh}x{dw} and kernel "
                                     f"{kh}x{kw} must be positive", op.kind, op.index)
        # explicit padding folded in from a preceding PAD op: (top, bottom, left, right)
        et, eb, el, er = o.get("pad_extra", (0, 0, 0, 0))
        ph, pw = ih + et + eb, iw + el + er
        padding = o.get("padding", "VALID")
        if padding not in ("SAME", "VALID"):
            raise UnsupportedOpError(f"{op.label()}: unknown padding {padding!r}", op.kind, op.index)
        eoh = quant.conv_output_size(ph, kh, sh, dh, padding)
        eow = quant.conv_output_size(pw, kw, sw, dw, padding)
        if (eoh, eow) != (oh, ow) or oh < 1 or ow < 1:
            raise UnsupportedOpError(
                f"{op.label()}: output is {oh}x{ow} but a {kh}x{kw} window with stride {sh}x{sw}, "
                f"dilation {dh}x{dw} and {padding} padding on {ih}x{iw} gives {eoh}x{eow}; "
                "the model is inconsistent, re-export it", op.kind, op.index)
        pt = et + (quant.same_padding(ph, kh, sh, dh, oh) if padding == "SAME" else 0)
        pl = el + (quant.same_padding(pw, kw, sw, dw, ow) if padding == "SAME" else 0)
        if max(sh, sw, dh, dw, pt, pl) > 32767:
            raise UnsupportedOpError(f"{op.label()}: strides, dilations and padding must fit in "
                                     "int16 as TFLite Micro stores them", op.kind, op.index)
        return cls(ih, iw, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow)

    def interior(self, axis: str) -> tuple[int, int]:
        """[lo, hi) of output rows (axis 'y') or columns ('x') whose whole window is in bounds."""
        size, k, s, d, p, out = ((self.ih, self.kh, self.sh, self.dh, self.pt, self.oh) if axis == "y"
                                 else (self.iw, self.kw, self.sw, self.dw, self.pl, self.ow))
        lo = -(-p // s)
        hi = (size - 1 - (k - 1) * d + p) // s + 1
        lo, hi = min(lo, out), max(min(hi, out), 0)
        return (lo, hi) if lo < hi else (0, 0)


def output_regions(win: Window) -> list:
    """(y0, y1, x0, x1, interior?) rectangles that cover the output once."""
    ylo, yhi = win.interior("y")
    xlo, xhi = win.interior("x")
    if ylo >= yhi or xlo >= xhi:
        return [(0, win.oh, 0, win.ow, False)]
    rects = [(0, ylo, 0, win.ow, False), (ylo, yhi, 0, xlo, False), (ylo, yhi, xlo, xhi, True),
             (ylo, yhi, xhi, win.ow, False), (yhi, win.oh, 0, win.ow, False)]
    return [r for r in rects if r[0] < r[1] and r[2] < r[3]]


def requant(ctx, acc: str, index: str, mults, shifts, per_channel: bool, zp: int, lo: int,
            hi: int) -> str:
    """int32 accumulator -> clamped int8 value, TFLM's MultiplyByQuantizedMultiplier path.

    Per-channel multipliers become const arrays indexed by `index`; per-tensor ones literals.
    """
    mults, shifts = np.asarray(mults).ravel(), np.asarray(shifts).ravel()
    if per_channel:
        mult = f"{ctx.const('mult', mults, 'int32_t')}[{index}]"
        shift_sym = f"{ctx.const('shift', shifts, 'int8_t')}[{index}]"
    else:
        mult, shift_sym = str(int(mults[0])), str(int(shifts[0]))
    # Whether a left shift can occur is a property of the scales, not a sized array: safe to test.
    if np.all(shifts <= 0):
        inner = f"te_mbqm_r({acc}, {mult}, -({shift_sym}))"
    else:
        inner = f"te_mbqm({acc}, {mult}, {shift_sym})"
    return f"te_clamp({inner} + {zp}, {lo}, {hi})"
