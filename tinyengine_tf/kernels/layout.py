"""Data movement on int8 activations (and int16 ones in 16x8 models, except DEPTH_TO_SPACE /
SPACE_TO_DEPTH, which TFLM runs on int8 only): PAD, PADV2, CONCATENATION, TRANSPOSE, SLICE,
STRIDED_SLICE, SPLIT, SPLIT_V, DEPTH_TO_SPACE, SPACE_TO_DEPTH.

None of these ops computes anything: TFLite Micro copies raw int8 values (PAD fills with a
constant) without requantizing. Every op here is therefore expressed as a few n-d strided copies
whose geometry is fully known at generation time; ``copy_loops`` collapses each copy to the
fewest loops with literal bounds and a ``memcpy`` for every contiguous run, so the C compiler
sees straight-line block moves instead of TFLM's per-element index arithmetic.

The validations mirror the Prepare() checks of TFLM's kernels (read from tflite-micro's pad.cc,
concatenation.cc, transpose.cc, strided_slice.cc, split.cc, depth_to_space.cc,
space_to_depth.cc; confirmed against the interpreter):
where TFLM refuses a configuration, so do we.
"""
from __future__ import annotations

import numpy as np

from tinyengine_tf.ir import Op
from tinyengine_tf.kernels.base import EmitContext, LayerCode, kernel
from tinyengine_tf.kernels.base import FIX_CONSTANT, FIX_QUANTIZE, FIX_REEXPORT

PAD_MAX_RANK = 5            # reference_ops::PadKernelMaxDimensionCount()
CONCAT_MAX_INPUTS = 10      # concatenation.cc kMaxInputNum
CONCAT_MAX_RANK = 6         # RuntimeShape::kMaxSmallSize
TRANSPOSE_MAX_RANK = 5
SLICE_MAX_RANK = 5
STRIDED_SLICE_MAX_RANK = 4   # strided_slice_common.cc: "input dim should not exceed 4"


# -- the one code generator every op here uses ------------------------------------------------

def row_strides(shape) -> list:
    """Element strides of a row-major tensor."""
    strides, acc = [], 1
    for d in reversed(list(shape)):
        strides.append(acc)
        acc *= int(d)
    return strides[::-1]


def _merge_dims(counts, dst_strides, src_strides):
    """Drop unit dims and fuse neighbours that are nested contiguously in both buffers."""
    dims = [(int(c), int(d), int(s)) for c, d, s in zip(counts, dst_strides, src_strides) if int(c) != 1]
    merged: list = []
    for c, d, s in dims:
        if merged:
            pc, pd, ps = merged[-1]
            if pd == c * d and ps == c * s:
                merged[-1] = (pc * c, d, s)
                continue
        merged.append((c, d, s))
    return merged


def _term(index: str, stride: int) -> str:
    return f" + {index} * {stride}" if stride >= 0 else f" - {index} * {-stride}"


def copy_loops(dst: str, src: str, counts, dst_strides, src_strides, dst_base: int = 0,
               src_base: int = 0, indent: str = "  ", esize: int = 1) -> str:
    """C that copies an n-d box: dst[dst_base + sum i_k*dst_k] = src[src_base + sum i_k*src_k].

    Strides and bases count elements of the pointers' type, `esize` bytes each. Contiguous
    innermost runs become one memcpy.
    """
    if any(int(c) == 0 for c in counts):
        return ""
    dims = _merge_dims(counts, dst_strides, src_strides)
    run = 1
    if dims and dims[-1][1] == 1 and dims[-1][2] == 1:
        run = dims.pop()[0]
    lines, dexpr, sexpr = [], str(dst_base), str(src_base)
    pad = indent
    for k, (c, d, s) in enumerate(dims):
        lines.append(f"{pad}for (int i{k} = 0; i{k} < {c}; ++i{k}) {{")
        dexpr += _term(f"i{k}", d)
        sexpr += _term(f"i{k}", s)
        pad += "  "
    if run > 1:
        lines.append(f"{pad}memcpy({dst} + {dexpr}, {src} + {sexpr}, {run * esize});")
    else:
        lines.append(f"{pad}{dst}[{dexpr}] = {src}[{sexpr}];")
    for k in range(len(dims)):
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "\n" + "\n".join(lines)


# -- shared checks ----------------------------------------------------------------------------

def _const_ints(ctx: EmitContext, op: Op, k: int, what: str, dtypes=("int32",)) -> np.ndarray:
    if k >= len(op.inputs) or op.inputs[k] < 0:
        raise ctx.unsupported(op, f"the {what} input is missing")
    t = ctx.t_in(op, k)
    if not t.is_const:
        raise ctx.unsupported(op, f"the {what} tensor {t.describe()} is computed at run time; only "
                                  "constant values are supported", "Export the model with static shapes")
    if t.dtype not in dtypes:
        raise ctx.unsupported(op, f"the {what} tensor is {t.dtype}; TFLite Micro reads it as "
                                  f"{' or '.join(dtypes)}")
    return np.asarray(t.data).astype(np.int64).ravel()


def _require_data(op: Op, ctx: EmitContext, *tensors) -> int:
    """All int8, or all int16 (16x8 models), quantized; returns the element size."""
    if all(t.dtype == "int16" for t in tensors):
        for t in tensors:
            if not t.quantized:
                raise ctx.unsupported(op, f"tensor {t.describe()} has no quantization parameters",
                                      FIX_QUANTIZE)
        return 2
    ctx.require_int8(op, *tensors)
    return 1


def _same_quant(a, b) -> bool:
    return np.float32(a.scale[0]) == np.float32(b.scale[0]) and a.zp == b.zp


def _flash_of_const_inputs(g, op, positions) -> int:
    total = 0
    for k in positions:
        if k < len(op.inputs) and op.inputs[k] >= 0 and g.t(op.inputs[k]).is_const:
            total += g.t(op.inputs[k]).nbytes
    return total


# -- PAD / PADV2 ------------------------------------------------------------------------------

def _pad_footprint(op, g):
    return _flash_of_const_inputs(g, op, [0]), 0


@kernel("PAD", "PADV2", footprint=_pad_footprint)
def pad(op: Op, g, ctx: EmitContext) -> LayerCode:
    if len(op.inputs) not in (2, 3) or len(op.outputs) != 1:
        raise ctx.unsupported(op, f"expects 2 or 3 inputs and 1 output, has {len(op.inputs)} and "
                                  f"{len(op.outputs)}")
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    esize = _require_data(op, ctx, x, y)
    ctx.require_per_tensor(op, x, y)
    rank = len(x.shape)
    if len(y.shape) != rank or rank > PAD_MAX_RANK:
        raise ctx.unsupported(op, f"input {list(x.shape)} and output {list(y.shape)} must have the "
                                  f"same rank, at most {PAD_MAX_RANK} (TFLite Micro's limit)")
    pads = _const_ints(ctx, op, 1, "paddings")
    if pads.size != 2 * rank:
        raise ctx.unsupported(op, f"paddings hold {pads.size} values; a rank-{rank} tensor needs {2 * rank}")
    pads = pads.reshape(rank, 2)
    if (pads < 0).any():
        raise ctx.unsupported(op, f"negative paddings {pads.tolist()} (cropping) are not supported",
                              "Use a slice instead")
    expect = [int(d + lo + hi) for d, (lo, hi) in zip(x.shape, pads)]
    if expect != [int(d) for d in y.shape]:
        raise ctx.unsupported(op, f"input {list(x.shape)} padded by {pads.tolist()} gives {expect}, "
                                  f"but the output is {list(y.shape)}; the model is inconsistent")
    fill = _pad_value(op, ctx, y)
    src = ctx.operand(op, 0)
    body = ""
    if x.numel != y.numel:  # some padding exists: fill everything, then drop the input in place
        if esize == 1:
            body += f"\n  memset(out0, {fill & 0xFF}, {y.numel});  /* pad value {fill} */"
        else:
            body += f"\n  for (int i = 0; i < {y.numel}; ++i) out0[i] = {fill};"
    ys = row_strides(y.shape)
    base = int(sum(int(lo) * s for (lo, _), s in zip(pads, ys)))
    body += copy_loops("out0", src, x.shape, ys, row_strides(x.shape), dst_base=base, esize=esize)
    return LayerCode(body=body)


def _pad_value(op: Op, ctx: EmitContext, y) -> int:
    """PAD fills with the output zero point; PADV2 with its scalar constant (same quantization).
    int16 (pad.cc): PAD fills with 0, whatever the zero point, and PADV2 copies its constant's
    raw value without comparing quantizations."""
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return 0 if y.dtype == "int16" else y.zp
    v = ctx.t_in(op, 2)
    if not v.is_const or v.numel != 1 or v.dtype != y.dtype:
        raise ctx.unsupported(op, f"the pad value {v.describe()} must be a constant {y.dtype} scalar",
                              FIX_CONSTANT)
    if y.dtype == "int16":
        return int(np.asarray(v.data).ravel()[0])
    if not v.quantized or not _same_quant(v, y):
        raise ctx.unsupported(op, f"the pad value {v.describe()} is quantized differently from the "
                                  f"output {y.describe()}, which TFLite Micro rejects")
    return int(np.asarray(v.data).ravel()[0])


# -- CONCATENATION ----------------------------------------------------------------------------

def _concat_footprint(op, g):
    return _flash_of_const_inputs(g, op, range(len(op.inputs))), 0


@kernel("CONCATENATION", footprint=_concat_footprint)
def concatenation(op: Op, g, ctx: EmitContext) -> LayerCode:
    y = ctx.t_out(op)
    xs = [ctx.t_in(op, k) for k in range(len(op.inputs))]
    if not xs or any(i < 0 for i in op.inputs) or len(op.outputs) != 1:
        raise ctx.unsupported(op, "expects at least one input and exactly one output")
    if len(xs) > CONCAT_MAX_INPUTS:
        raise ctx.unsupported(op, f"{len(xs)} inputs; TFLite Micro concatenates at most "
                                  f"{CONCAT_MAX_INPUTS}", "Split it into several concatenations")
    act = op.options.get("fused_activation_function") or "NONE"
    if act != "NONE":
        raise ctx.unsupported(op, f"fused activation {act}; TFLite Micro only allows NONE")
    esize = _require_data(op, ctx, y, *xs)
    ctx.require_per_tensor(op, y, *xs)
    for x in xs:
        if esize == 2:  # int16 (concatenation.cc): zero points 0, scales not compared
            if x.zp != 0 or y.zp != 0:
                raise ctx.unsupported(op, "int16 inputs and output need zero point 0, as TFLite "
                                          "Micro requires", FIX_QUANTIZE)
        elif not _same_quant(x, y):
            raise ctx.unsupported(op, f"input {x.describe()} and output {y.describe()} are quantized "
                                      "differently; TFLite Micro requires equal scales and zero points")
    rank = len(y.shape)
    if rank == 0 or rank > CONCAT_MAX_RANK:
        raise ctx.unsupported(op, f"rank {rank}; supported ranks are 1 to {CONCAT_MAX_RANK}")
    axis = int(op.options.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise ctx.unsupported(op, f"axis {op.options.get('axis')} is out of range for rank {rank}")
    total = 0
    for x in xs:
        same = len(x.shape) == rank and all(int(a) == int(b) for d, (a, b) in
                                           enumerate(zip(x.shape, y.shape)) if d != axis)
        if not same:
            raise ctx.unsupported(op, f"input {list(x.shape)} does not fit output {list(y.shape)} "
                                      f"along axis {axis}")
        total += int(x.shape[axis])
    if total != int(y.shape[axis]):
        raise ctx.unsupported(op, f"inputs add up to {total} along axis {axis}, output has {y.shape[axis]}")
    ys = row_strides(y.shape)
    body, offset = "", 0
    for k, x in enumerate(xs):
        body += copy_loops("out0", ctx.operand(op, k), x.shape, ys, row_strides(x.shape),
                           dst_base=offset * ys[axis], esize=esize)
        offset += int(x.shape[axis])
    return LayerCode(body=body)


# -- SPLIT / SPLIT_V --------------------------------------------------------------------------

def _split_footprint(op, g):
    return _flash_of_const_inputs(g, op, [1 if op.kind == "SPLIT" else 0]), 0


@kernel("SPLIT", "SPLIT_V", footprint=_split_footprint)
def split(op: Op, g, ctx: EmitContext) -> LayerCode:
    # SPLIT: (axis, input); SPLIT_V: (input, size_splits, axis)
    data_k, axis_k = (1, 0) if op.kind == "SPLIT" else (0, 2)
    if len(op.inputs) != (2 if op.kind == "SPLIT" else 3):
        raise ctx.unsupported(op, f"unexpected number of inputs {len(op.inputs)}")
    x = ctx.t_in(op, data_k)
    ys = [ctx.t_out(op, k) for k in range(len(op.outputs))]
    esize = _require_data(op, ctx, x, *ys)
    ctx.require_per_tensor(op, x, *ys)
    # TFLM's SPLIT / SPLIT_V compare no quantization: outputs get the raw input codes.
    axis_v = _const_ints(ctx, op, axis_k, "axis")
    rank = len(x.shape)
    if axis_v.size != 1 or rank == 0:
        raise ctx.unsupported(op, "the axis must be a single value and the input at least 1-D")
    axis = int(axis_v[0]) + (rank if int(axis_v[0]) < 0 else 0)
    if not 0 <= axis < rank:
        raise ctx.unsupported(op, f"axis {int(axis_v[0])} is out of range for rank {rank}")
    offset = 0
    xs_ = row_strides(x.shape)
    src = ctx.operand(op, data_k)
    body = ""
    for k, y in enumerate(ys):
        fits = len(y.shape) == rank and all(int(a) == int(b) for d, (a, b) in
                                           enumerate(zip(x.shape, y.shape)) if d != axis)
        if not fits:
            raise ctx.unsupported(op, f"output {list(y.shape)} does not fit input {list(x.shape)}")
        body += copy_loops(f"out{k}", src, y.shape, row_strides(y.shape), xs_,
                           src_base=offset * xs_[axis], esize=esize)
        offset += int(y.shape[axis])
    if offset != int(x.shape[axis]):
        raise ctx.unsupported(op, f"outputs add up to {offset} along axis {axis}, input has "
                                  f"{x.shape[axis]}")
    return LayerCode(body=body)


# -- TRANSPOSE --------------------------------------------------------------------------------

def _single_input_footprint(op, g):
    return _flash_of_const_inputs(g, op, [0]), 0


@kernel("TRANSPOSE", footprint=_single_input_footprint)
def transpose(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    esize = _require_data(op, ctx, x, y)
    ctx.require_per_tensor(op, x, y)
    rank = len(x.shape)
    if rank == 0 or rank > TRANSPOSE_MAX_RANK:
        raise ctx.unsupported(op, f"rank {rank}; TFLite Micro transposes 1-D to {TRANSPOSE_MAX_RANK}-D")
    perm = [int(p) for p in _const_ints(ctx, op, 1, "permutation")]
    if sorted(perm) != list(range(rank)):
        raise ctx.unsupported(op, f"{perm} is not a permutation of {rank} axes")
    if [int(x.shape[p]) for p in perm] != [int(d) for d in y.shape]:
        raise ctx.unsupported(op, f"permuting {list(x.shape)} by {perm} does not give {list(y.shape)}")
    xs_ = row_strides(x.shape)
    body = copy_loops("out0", ctx.operand(op, 0), y.shape, row_strides(y.shape), [xs_[p] for p in perm],
                      esize=esize)
    return LayerCode(body=body)


# -- SLICE / STRIDED_SLICE --------------------------------------------------------------------

@kernel("SLICE", "STRIDED_SLICE", footprint=_single_input_footprint)
def slice_(op: Op, g, ctx: EmitContext) -> LayerCode:
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    esize = _require_data(op, ctx, x, y)
    ctx.require_per_tensor(op, x, y)
    rank = len(x.shape)
    limit = SLICE_MAX_RANK if op.kind == "SLICE" else STRIDED_SLICE_MAX_RANK
    if rank == 0 or rank > limit:
        raise ctx.unsupported(op, f"rank {rank}; TFLite Micro supports ranks 1 to {limit} here")
    starts, steps, counts, keep = (_slice_box(op, ctx, x) if op.kind == "SLICE"
                                   else _strided_box(op, ctx, x))
    out_shape = [c for c, k in zip(counts, keep) if k]
    if int(np.prod(out_shape, dtype=np.int64)) != y.numel or \
            [d for d in y.shape if d != 1] != [d for d in out_shape if d != 1]:
        raise ctx.unsupported(op, f"slicing {list(x.shape)} gives {out_shape}, but the output is "
                                  f"{list(y.shape)}; the model is inconsistent")
    xs_ = row_strides(x.shape)
    base = int(sum(s * st for s, st in zip(starts, xs_)))
    body = copy_loops("out0", ctx.operand(op, 0), counts, row_strides(counts),
                      [st * sp for st, sp in zip(xs_, steps)], src_base=base, esize=esize)
    return LayerCode(body=body)


def _slice_box(op, ctx, x):
    begin = _const_ints(ctx, op, 1, "begin", ("int32", "int64"))
    size = _const_ints(ctx, op, 2, "size", ("int32", "int64"))
    rank = len(x.shape)
    if begin.size != rank or size.size != rank:
        raise ctx.unsupported(op, f"begin/size must have {rank} entries")
    counts = []
    for d, (b, s) in enumerate(zip(begin, size)):
        n = int(x.shape[d]) - int(b) if s == -1 else int(s)
        if b < 0 or n < 0 or b + n > int(x.shape[d]):
            raise ctx.unsupported(op, f"slice begin {int(b)} size {int(s)} is outside dimension {d} "
                                      f"of {list(x.shape)}")
        counts.append(n)
    return [int(b) for b in begin], [1] * rank, counts, [True] * rank


def _strided_box(op, ctx, x):
    """Per-axis (start, step, count): numpy slice semantics, which TFLite's mask rules match."""
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0) or o.get("offset", False):
        raise ctx.unsupported(op, "ellipsis/new-axis masks and offset mode are not supported",
                              "Index with plain ranges (x[:, 1:5]) in the Keras model")
    begin = _const_ints(ctx, op, 1, "begin")
    end = _const_ints(ctx, op, 2, "end")
    strides = _const_ints(ctx, op, 3, "strides")
    rank = len(x.shape)
    n = begin.size
    if end.size != n or strides.size != n or n > rank:
        raise ctx.unsupported(op, f"begin/end/strides have {begin.size}/{end.size}/{strides.size} "
                                  f"entries for a rank-{rank} input")
    box = []  # (start, step, count, kept) per input axis
    for d in range(rank):
        size = int(x.shape[d])
        if d >= n:
            box.append((0, 1, size, True))
            continue
        step = int(strides[d])
        if step == 0:
            raise ctx.unsupported(op, f"stride 0 on axis {d}")
        if (o.get("shrink_axis_mask", 0) >> d) & 1:
            idx = int(begin[d]) + (size if int(begin[d]) < 0 else 0)
            if not 0 <= idx < size:
                raise ctx.unsupported(op, f"index {int(begin[d])} is outside axis {d} of size {size}")
            box.append((idx, 1, 1, False))
            continue
        b = None if (o.get("begin_mask", 0) >> d) & 1 else int(begin[d])
        e = None if (o.get("end_mask", 0) >> d) & 1 else int(end[d])
        picked = np.arange(size)[slice(b, e, step)]
        box.append((int(picked[0]) if picked.size else 0, step, int(picked.size), True))
    starts, steps, counts, keep = (list(v) for v in zip(*box))
    return starts, steps, counts, keep


# -- DEPTH_TO_SPACE / SPACE_TO_DEPTH ----------------------------------------------------------

@kernel("DEPTH_TO_SPACE", "SPACE_TO_DEPTH", footprint=_single_input_footprint)
def depth_space(op: Op, g, ctx: EmitContext) -> LayerCode:
    """TF's DCR order: out[b, h*bs + i, w*bs + j, c] = in[b, h, w, (i*bs + j)*C + c] (and the
    inverse), as one 6-D copy whose innermost run is C contiguous bytes. TFLM copies raw codes
    (no requantization) and computes the output shape itself: a different declared shape is
    refused."""
    if len(op.inputs) != 1 or len(op.outputs) != 1 or op.inputs[0] < 0:
        raise ctx.unsupported(op, "expects 1 input and 1 output", FIX_REEXPORT)
    x, y = ctx.t_in(op, 0), ctx.t_out(op)
    if x.dtype != "int8" or y.dtype != "int8":
        raise ctx.unsupported(op, f"input {x.dtype} and output {y.dtype}; only int8 is supported",
                              "Quantize the model to int8")
    if len(x.shape) != 4:
        raise ctx.unsupported(op, f"input {list(x.shape)} must be 4-D (NHWC), as TFLite Micro requires",
                              FIX_REEXPORT)
    bs = int(op.options.get("block_size", 0))
    if bs <= 0:
        raise ctx.unsupported(op, f"block size {bs} must be positive", FIX_REEXPORT)
    n, h, w, c = (int(d) for d in x.shape)
    if op.kind == "DEPTH_TO_SPACE":
        if c % (bs * bs):
            raise ctx.unsupported(op, f"{c} input channels are not a multiple of block size "
                                      f"{bs} squared, which TFLite Micro rejects", FIX_REEXPORT)
        want = (n, h * bs, w * bs, c // (bs * bs))
    else:
        if h % bs or w % bs:
            raise ctx.unsupported(op, f"input height {h} and width {w} must be multiples of the "
                                      f"block size {bs}, as TFLite Micro requires", FIX_REEXPORT)
        want = (n, h // bs, w // bs, c * bs * bs)
    if tuple(int(d) for d in y.shape) != want:
        raise ctx.unsupported(op, f"output {list(y.shape)} is not the {list(want)} TFLite Micro "
                                  "computes from the input and block size", "Re-export the model")
    src = ctx.operand(op, 0)
    if op.kind == "DEPTH_TO_SPACE":
        oh, ow, oc = want[1], want[2], want[3]
        counts = (n, h, bs, w, bs, oc)
        dst = (oh * ow * oc, bs * ow * oc, ow * oc, bs * oc, oc, 1)
        srcs = (h * w * c, w * c, bs * oc, c, oc, 1)
    else:
        oh, ow, oc = want[1], want[2], want[3]
        counts = (n, oh, bs, ow, bs, c)
        dst = (oh * ow * oc, ow * oc, bs * c, oc, c, 1)
        srcs = (h * w * c, bs * w * c, w * c, bs * c, c, 1)
    return LayerCode(body=copy_loops("out0", src, counts, dst, srcs))
