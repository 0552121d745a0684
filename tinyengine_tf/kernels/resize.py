"""RESIZE_NEAREST_NEIGHBOR (int8/int16) and RESIZE_BILINEAR (int8), as TFLite Micro computes them.

Both map every output row and column to input rows and columns that depend only on the shapes
and the two options (align_corners, half_pixel_centers), so the maps are computed here, at
generation time, and baked as small ``const`` tables (their size depends only on the output
shape). TFLM's recipes (reference_ops::ResizeNearestNeighbor, ResizeBilinearInteger):

- nearest: ``scale = in / out`` in float32 (``(in - 1) / (out - 1)`` with align_corners),
  ``src = min(floor((dst + offset) * scale), in - 1)`` (TfLiteRound instead of floor with
  align_corners), offset 0.5 and a floor at 0 with half_pixel_centers; the channels are copied
  with one memcpy per output pixel.
- bilinear (int8): integer scales in 1/1024 units, ``((1 << 10) * in + out / 2) / out``; the
  source coordinate ``dst * scale`` (plus ``scale / 2 - 512`` with half_pixel_centers) splits into
  a lower and an upper neighbour and a 10-bit weight; the four products are summed in int64 and
  divided by 2^20 rounding half away from zero.
Neither requantizes: TFLM interpolates the raw codes.
"""
from __future__ import annotations

import math

import numpy as np

from tinyengine_tf.ir import C_TYPES, Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_REEXPORT


def _check(op: Op, ctx: EmitContext, dtypes):
    if len(op.inputs) != 2 or len(op.outputs) != 1 or min(op.inputs) < 0:
        raise ctx.unsupported(op, "expects an input, a size tensor and one output", FIX_REEXPORT)
    x, size, y = ctx.t_in(op, 0), ctx.t_in(op, 1), ctx.t_out(op)
    if x.dtype not in dtypes or y.dtype != x.dtype:
        raise ctx.unsupported(op, f"input {x.dtype} and output {y.dtype}; supported: "
                                  f"{' or '.join(dtypes)}, the same for both", "Quantize the model to int8")
    if len(x.shape) != 4:
        raise ctx.unsupported(op, f"input {list(x.shape)} must be 4-D (NHWC), as TFLite Micro requires",
                              FIX_REEXPORT)
    if size.dtype != "int32" or len(size.shape) != 1 or size.shape[0] != 2:
        raise ctx.unsupported(op, f"the size tensor {size.describe()} must be an int32 vector of 2",
                              FIX_REEXPORT)
    if not size.is_const:
        raise ctx.unsupported(op, "the size tensor is computed at run time; TFLite Micro needs a "
                                  "constant", "Export the model with a fixed output size")
    oh, ow = (int(v) for v in np.asarray(size.data).ravel())
    n, ih, iw, c = (int(d) for d in x.shape)
    if oh <= 0 or ow <= 0 or tuple(int(d) for d in y.shape) != (n, oh, ow, c):
        raise ctx.unsupported(op, f"output {list(y.shape)} is not the input's batch and channels at "
                                  f"the size {oh}x{ow}", "Re-export the model")
    align = bool(op.options.get("align_corners", False))
    half = bool(op.options.get("half_pixel_centers", False))
    return x, y, (n, ih, iw, c, oh, ow), align, half


def _round_away(v: np.float32) -> int:
    return int(math.floor(abs(float(v)) + 0.5)) * (1 if v >= 0 else -1)


def nearest_map(in_size: int, out_size: int, align: bool, half: bool) -> list:
    """GetNearestNeighbor for every output index, with float32 arithmetic."""
    f32 = np.float32
    if align and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    offset = f32(0.5) if half else f32(0.0)
    out = []
    for v in range(out_size):
        p = (f32(v) + offset) * scale
        src = _round_away(p) if align else int(math.floor(float(p)))
        src = min(src, in_size - 1)
        if half:
            src = max(0, src)
        out.append(src)
    return out


def _tables_footprint(op: Op, g) -> tuple[int, int]:
    y = g.t(op.outputs[0])
    oh, ow = int(y.shape[1]), int(y.shape[2])
    x = g.t(op.inputs[0])
    const = x.nbytes if x.is_const else 0
    return const + (4 * (oh + ow) if op.kind == "RESIZE_NEAREST_NEIGHBOR" else 12 * (oh + ow)), 0


@kernel("RESIZE_NEAREST_NEIGHBOR", footprint=_tables_footprint)
def resize_nearest(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y, (n, ih, iw, c, oh, ow), align, half = _check(op, ctx, ("int8", "int16"))
    ct = C_TYPES[x.dtype]
    ys = ctx.const("rows", [v * iw * c for v in nearest_map(ih, oh, align, half)], "int32_t")
    xs = ctx.const("cols", [v * c for v in nearest_map(iw, ow, align, half)], "int32_t")
    src = ctx.operand(op, 0)
    body = f"""
  {ct} *o = out0;
  for (int b = 0; b < {n}; ++b) {{
    const {ct} *ib = {src} + b * {ih * iw * c};
    for (int y = 0; y < {oh}; ++y) {{
      const {ct} *row = ib + {ys}[y];
      for (int x = 0; x < {ow}; ++x, o += {c}) memcpy(o, row + {xs}[x], {c * (2 if ct == 'int16_t' else 1)});
    }}
  }}"""
    return LayerCode(body=body)


def bilinear_map(in_size: int, out_size: int, align: bool, half: bool):
    """ComputeInterpolationValuesInteger for every output index: (lower, upper, weight of the
    upper neighbour in 1/1024), with C's truncating division."""
    def cdiv(a, b):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q
    scale = cdiv((1 << 10) * in_size + out_size // 2, out_size)
    if align and out_size > 1:
        scale = cdiv((1 << 10) * (in_size - 1) + (out_size - 1) // 2, out_size - 1)
    lo, hi, w = [], [], []
    for v in range(out_size):
        scaled = v * scale + cdiv(scale, 2) - (1 << 9) if half else v * scale
        low = max(cdiv(scaled, 1 << 10), 0)
        up = min(cdiv(scaled + (1 << 10) - 1, 1 << 10), in_size - 1)
        lo.append(low)
        hi.append(up)
        w.append(scaled - (1 << 10) * low)
    return lo, hi, w


@kernel("RESIZE_BILINEAR", footprint=_tables_footprint)
def resize_bilinear(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y, (n, ih, iw, c, oh, ow), align, half = _check(op, ctx, ("int8",))
    if align and half:
        raise ctx.unsupported(op, "align_corners and half_pixel_centers are both set, which "
                                  "TFLite Micro rejects", "Re-export with at most one of them")
    y0, y1, wy = bilinear_map(ih, oh, align, half)
    x0, x1, wx = bilinear_map(iw, ow, align, half)
    Y0 = ctx.const("y0", [v * iw * c for v in y0], "int32_t")
    Y1 = ctx.const("y1", [v * iw * c for v in y1], "int32_t")
    WY = ctx.const("wy", wy, "int32_t")
    X0 = ctx.const("x0", [v * c for v in x0], "int32_t")
    X1 = ctx.const("x1", [v * c for v in x1], "int32_t")
    WX = ctx.const("wx", wx, "int32_t")
    src = ctx.operand(op, 0)
    body = f"""
  int8_t *o = out0;
  for (int b = 0; b < {n}; ++b) {{
    const int8_t *ib = {src} + b * {ih * iw * c};
    for (int y = 0; y < {oh}; ++y) {{
      const int8_t *r0 = ib + {Y0}[y], *r1 = ib + {Y1}[y];
      const int64_t wy1 = {WY}[y], wy0 = 1024 - wy1;
      for (int x = 0; x < {ow}; ++x, o += {c}) {{
        const int64_t wx1 = {WX}[x], wx0 = 1024 - wx1;
        const int8_t *p00 = r0 + {X0}[x], *p01 = r0 + {X1}[x];
        const int8_t *p10 = r1 + {X0}[x], *p11 = r1 + {X1}[x];
        for (int k = 0; k < {c}; ++k) {{
          const int64_t acc = p00[k] * wy0 * wx0 + p10[k] * wy1 * wx0 + p01[k] * wy0 * wx1
                              + p11[k] * wy1 * wx1;
          o[k] = (int8_t)((acc + (acc > 0 ? (1 << 19) : -(1 << 19))) / (1 << 20));
        }}
      }}
    }}
  }}"""
    return LayerCode(body=body)
