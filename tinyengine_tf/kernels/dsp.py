"""Shared pieces of the Arm DSP code paths (c/te_dsp.h): the requantization every DSP layer
uses and small helpers of the generated C.

A layer keeps its portable loops for every other target and adds an ``#if TE_DSP`` branch. The
DSP branch reads the same constant arrays (weights, folded bias, multipliers), so Flash does not
depend on the target, and takes no arena scratch (its buffers are on the stack, at most about
2 KiB).

Requantization on the DSP path costs two to five instructions and a saturate per output
(te_dsp_rq*, te_dsp_rq_wide*). ``Requant`` checks their preconditions from the layer's values;
where they fail the layer uses the portable expression. Three rewrites of the constants keep both
paths equal to TFLM while widening where the shortcuts apply (the arrays keep their sizes):

- a channel with multiplier 0 always yields 0 + zp, whatever its shift: its shift becomes -2;
- a right shift larger than needed to round every reachable |acc| to 0 yields 0 + zp for any
  larger shift as well: shifts are clamped to bitlen(bound) + 1, which lets the zero point fold
  into the rounding constant without overflow;
- a channel whose filter is all zeros outputs a constant: constant_channels() gives it a small
  bias and multiplier that produce the same constant (pruned channels carry biases near 2^30).
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf import quant

ACC_LIMIT = 1 << 30


def constant_channels(bias, weights_abs_sum, q, shift, zp: int, lo: int, hi: int,
                      per_channel: bool):
    """(bias, q, shift) with every all-zero filter's channel rewritten to bias 4 m, multiplier
    2^30, shift -1, where m + zp is the constant the channel outputs: TFLM computes
    MultiplyByQuantizedMultiplier(bias, q, shift) for it whatever the input, and
    SRDHM(4 m, 2^30) = 2 m, rounded by 2 gives m exactly. Such channels often carry a saturated
    bias near 2^30 (a pruned filter), which would otherwise keep the whole layer off the short
    requantization. Per-channel multipliers only; the arrays keep their sizes."""
    bias = np.asarray(bias, np.int64).copy()
    q = np.asarray(q, np.int64).copy()
    shift = np.asarray(shift, np.int64).copy()
    if not per_channel or len(q) != len(bias):
        return bias, q, shift
    for c in np.flatnonzero(np.asarray(weights_abs_sum) == 0):
        v = min(max(quant.mbqm(int(bias[c]), int(q[c]), int(shift[c])) + zp, lo), hi)
        bias[c], q[c], shift[c] = 4 * (v - zp), 1 << 30, -1
    return bias, q, shift


def acc_bounds(bias, weights_abs_sum, x_zp: int) -> np.ndarray:
    """Per channel, the largest |bias + sum w * (x - zp)| any int8 input can reach."""
    reach = max(abs(-128 - x_zp), abs(127 - x_zp))
    return np.abs(np.asarray(bias, np.int64)) + reach * np.asarray(weights_abs_sum, np.int64)


class Requant:
    """acc -> int8 on the DSP path for one layer's multipliers (arrays with one entry per
    channel, or one entry for a per-tensor layer).

    Two forms: te_dsp_rq (SMMLAR of 2 * acc; needs |acc| < 2^30 and r >= 1) and, where some
    channel can reach |acc| >= 2^30 (a per-tensor layer with a huge bias), te_dsp_rq_wide
    (SMLAL; any acc, r >= 2), one instruction more per output. ``ok`` is False where neither
    applies. The first form also takes accumulators that hold 2 * acc (te_dsp_rq2: kernels that
    store one operand doubled save the doubling), and both drop the sign term (``_pos``) where
    the activation clamps at or above the zero point, as RELU does.
    """

    def __init__(self, q, shift, zp: int, lo: int, hi: int, bounds):
        q = np.asarray(q, np.int64).ravel()
        shift = np.asarray(shift, np.int64).ravel().copy()
        bounds = np.asarray(bounds, np.int64).ravel()
        if len(bounds) != len(q):              # per-tensor multiplier: the worst channel
            bounds = np.full(q.shape, int(np.max(bounds, initial=0)))
        # A zero multiplier gives 0 for any shift: -2 suits both forms.
        shift[(q == 0) & (shift > -2)] = -2
        need = np.array([max(int(b).bit_length() + 1, 2) for b in bounds])
        shift = np.where(-shift > need, -need, shift)
        self.shift = shift                      # what the layer's shift table must hold
        self.q, self.zp, self.lo, self.hi = q, zp, lo, hi
        r = [int(-v) for v in shift]
        valid_q = bool(np.all(q >= 0) and np.all(q < 2**31))
        self.wide = bool(np.any(bounds >= ACC_LIMIT))
        self.ok = valid_q and all(1 + self.wide <= v <= 31 for v in r)
        # Folded, the rounding constant with zp in it must fit (with SRDHM(acc, q) or the high
        # word of the product added to it).
        if self.wide:
            h = [(2 * zp + 1) << (v - 2) for v in r] if self.ok else [0]
            self.fold = bool(self.ok and all(abs(hv) + 2**30 + 1 < 2**31 for hv in h))
        else:
            h = [(2 * zp + 1) << (v - 1) for v in r] if self.ok else [0]
            self.fold = bool(self.ok and all(abs(hv) + int(b) + 1 < 2**31 for hv, b in zip(h, bounds)))

    def rounding(self, r: int) -> int:
        """The rounding constant for a literal shift r."""
        unit = 1 << (r - 2) if self.wide else 1 << (r - 1)
        return unit * (2 * self.zp + 1) if self.fold else unit

    def setup(self, tag: str, ch: str, mult_sym: str | None, shift_sym: str | None) -> str:
        """Declarations of channel ch's q, h and r (nothing for a per-tensor layer)."""
        if mult_sym is None:
            return ""
        zp2 = 2 * self.zp + 1 if self.fold else 1
        unit = f"r{tag} - 2" if self.wide else f"r{tag} - 1"
        return (f"const int32_t q{tag} = {mult_sym}[{ch}]; const int r{tag} = -{shift_sym}[{ch}]; "
                f"const int32_t h{tag} = (int32_t)((uint32_t){zp2} << ({unit}));")

    @property
    def doubled(self) -> bool:
        """Whether layers should accumulate 2 * acc (one instruction less per output)."""
        return self.ok and not self.wide

    def expr(self, acc: str, tag: str, per_channel: bool, doubled: bool = False) -> str:
        """The int8 value of acc (as an int32_t C expression); doubled: acc holds 2 * acc."""
        if per_channel:
            q, h, r = f"q{tag}", f"h{tag}", f"r{tag}"
        else:
            rr = int(-self.shift[0])
            q, h, r = str(int(self.q[0])), str(self.rounding(rr)), str(rr)
        fn = "te_dsp_rq_wide" if self.wide else ("te_dsp_rq2" if doubled else "te_dsp_rq")
        if self.positive:
            fn += "_pos"
        return self.finish(f"{fn}({acc}, {q}, {h}, {r})")

    @property
    def positive(self) -> bool:
        """Whatever a negative acc rounds to ends at the clamp's lower bound: no sign term."""
        return self.lo >= self.zp

    def tail_values(self, per_channel: bool) -> tuple[str, str, str]:
        """C values of q, h and r for te_dsp_rq2 (the names rq.setup declares, or literals)."""
        if per_channel:
            return "q", "h", "r"
        rr = int(-self.shift[0])
        return str(int(self.q[0])), str(self.rounding(rr)), str(rr)

    def finish(self, v: str) -> str:
        """te_dsp_rq*'s value v (a C expression) to the int8 output: zero point and clamp."""
        if not self.fold and self.zp:
            v = f"({v} + {self.zp})"
        if (self.lo, self.hi) == (-128, 127):
            return f"__ssat({v}, 8)"
        return f"te_clamp({v}, {self.lo}, {self.hi})"


def table_symbols(ctx, start: int) -> tuple[str | None, str | None]:
    """(mult, shift) symbols a requant() call declared after ctx.constants[start]."""
    mult = shift = None
    for sym, _, _ in ctx.constants[start:]:
        if sym.endswith("_mult"):
            mult = sym
        elif sym.endswith("_shift"):
            shift = sym
    return mult, shift


def tile_start(var: str, i: str, n: int, t: int) -> str:
    """Start of tile i of t over a run of n: the last tile moves back to n - t and recomputes a
    few values, so every tile has the same shape (outputs are written twice with equal values)."""
    if n % t == 0:
        return f"const int {var} = {i} * {t};"
    return f"const int {var} = {i} * {t} < {n - t} ? {i} * {t} : {n - t};"
