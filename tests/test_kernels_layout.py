"""PAD/PADV2, CONCATENATION, TRANSPOSE, SLICE/STRIDED_SLICE, SPLIT/SPLIT_V, DEPTH_TO_SPACE/SPACE_TO_DEPTH
against TFLite Micro."""
from __future__ import annotations

import numpy as np
import pytest

from reference import assert_sanitized_matches_tflm, assert_unsupported, compile_and_check, int8_inputs
from tflite_builder import ModelBuilder

# These helpers lived here before reference.py took them; test files that still import them from
# this module keep working.
from reference import check_footprints, sample_shape, sanitized_run  # noqa: F401

RNG_SEED = 20240611


def _q(rng):
    return float(rng.uniform(0.005, 0.2)), int(rng.integers(-128, 128))


# -- PAD / PADV2 ------------------------------------------------------------------------------

def _pad_model(shape, pads, s, zp, value=None, out_q=None, pad_dtype="int32", value_q=None):
    """PAD, or PADV2 filling with `value` (quantized as the output unless value_q says else)."""
    b = ModelBuilder()
    x = b.tensor(shape, scale=s, zp=zp)
    p = b.tensor((len(shape), 2), dtype=pad_dtype, data=pads)
    out_shape = [d + lo + hi for d, (lo, hi) in zip(shape, pads)]
    os_, oz = out_q or (s, zp)
    y = b.tensor(out_shape, scale=os_, zp=oz)
    if value is None:
        b.op("PAD", [x, p], [y])
    else:
        vs, vz = value_q or (os_, oz)
        v = b.tensor((), scale=vs, zp=vz, data=value)
        b.op("PADV2", [x, p, v], [y])
    return b.build([x], [y])


def _pad_cases():
    rng = np.random.default_rng(RNG_SEED)
    cases = []
    for k in range(14):
        rank = 1 + k % 5
        shape = [1] + [int(d) for d in rng.integers(1, 6, rank - 1)] if rank > 1 else [int(rng.integers(2, 9))]
        pads = rng.integers(0, 4, (rank, 2))
        if rank > 1 and k % 3 == 0:
            pads[0] = 0
        value = None if k % 2 == 0 else int(rng.integers(-128, 128))
        s, zp = _q(rng)
        cases.append((shape, pads.tolist(), s, zp, value))
    return cases


@pytest.mark.parametrize("shape, pads, s, zp, value", _pad_cases())
def test_pad_matches_tflm(shape, pads, s, zp, value):
    cm = compile_and_check(_pad_model(shape, pads, s, zp, value))
    assert cm.graph.op_counts() == {("PAD" if value is None else "PADV2"): 1}


def test_pad_without_padding_is_a_copy():
    compile_and_check(_pad_model([1, 3, 4, 2], [[0, 0]] * 4, 0.05, 3))


def test_pad_copies_raw_values_when_quantization_differs():
    # TFLM does not requantize in PAD: it copies int8 values and fills with the output zero point
    compile_and_check(_pad_model([1, 3, 3, 2], [[0, 0], [1, 1], [2, 0], [0, 0]], 0.05, -3,
                                 out_q=(0.1, 9)))


def test_pad_rejects_what_tflm_rejects():
    assert_unsupported(_pad_model([1, 2, 2, 2, 2, 2], [[0, 0]] + [[1, 1]] * 5, 0.1, 0), "PAD", "rank")
    assert_unsupported(_pad_model([1, 4, 4, 1], [[0, 0], [1, -1], [0, 0], [0, 0]], 0.1, 0), "PAD",
                       "negative")
    one_row = [[0, 0], [1, 1], [0, 0], [0, 0]]
    assert_unsupported(_pad_model([1, 2, 2, 1], one_row, 0.1, 0, pad_dtype="int64"), "PAD", "int64")
    assert_unsupported(_pad_model([1, 2, 2, 1], one_row, 0.1, 0, value=5, value_q=(0.2, 0)), "PADV2",
                       "quantized differently")


# -- CONCATENATION ----------------------------------------------------------------------------

def _concat_model(shapes, axis, s, zp, const_index=None, rng=None, act=None):
    b = ModelBuilder()
    rank = len(shapes[0])
    a = axis % rank
    ins, all_t = [], []
    for k, shp in enumerate(shapes):
        if k == const_index:
            all_t.append(b.tensor(shp, scale=s, zp=zp, data=rng.integers(-128, 128, shp)))
        else:
            t = b.tensor(shp, scale=s, zp=zp)
            ins.append(t)
            all_t.append(t)
    out = list(shapes[0])
    out[a] = sum(shp[a] for shp in shapes)
    y = b.tensor(out, scale=s, zp=zp)
    opts = {"axis": axis}
    if act:
        opts["fusedActivationFunction"] = act
    b.op("CONCATENATION", all_t, [y], "ConcatenationOptions", **opts)
    return b.build(ins, [y])


def _concat_cases():
    rng = np.random.default_rng(RNG_SEED + 1)
    cases = []
    for k in range(12):
        rank = 1 + k % 6
        base = [1] + [int(d) for d in rng.integers(1, 5, rank - 1)] if rank > 1 else [3]
        axis = int(rng.integers(0, rank))
        n_in = [1, 2, 3, 10][k % 4]
        shapes = []
        for _ in range(n_in):
            shp = list(base)
            shp[axis] = int(rng.integers(1, 4))
            shapes.append(shp)
        if k % 2:
            axis -= rank  # negative axis
        const_index = 1 if n_in > 2 and k % 3 == 0 else None
        s, zp = _q(rng)
        cases.append((shapes, axis, s, zp, const_index))
    return cases


@pytest.mark.parametrize("shapes, axis, s, zp, const_index", _concat_cases())
def test_concatenation_matches_tflm(shapes, axis, s, zp, const_index):
    model = _concat_model(shapes, axis, s, zp, const_index, np.random.default_rng(3))
    cm = compile_and_check(model)
    if const_index is not None:
        assert cm.flash >= int(np.prod(shapes[const_index]))


def test_concatenation_rejects_what_tflm_rejects():
    b = ModelBuilder()
    a = b.tensor((1, 2, 3), scale=0.05, zp=-3)
    c = b.tensor((1, 2, 4), scale=0.1, zp=-3)
    y = b.tensor((1, 2, 7), scale=0.05, zp=-3)
    b.op("CONCATENATION", [a, c], [y], "ConcatenationOptions", axis=2)
    assert_unsupported(b.build([a, c], [y]), "CONCATENATION", "quantized differently")
    assert_unsupported(_concat_model([[1, 2, 3]] * 2, 2, 0.1, 0, act="RELU"), "CONCATENATION", "RELU")
    assert_unsupported(_concat_model([[1, 2]] * 11, 1, 0.1, 0), "CONCATENATION", "at most")


# -- TRANSPOSE --------------------------------------------------------------------------------

def _transpose_model(shape, perm, s, zp):
    b = ModelBuilder()
    x = b.tensor(shape, scale=s, zp=zp)
    p = b.tensor((len(perm),), dtype="int32", data=perm)
    y = b.tensor([shape[i] for i in perm], scale=s, zp=zp)
    b.op("TRANSPOSE", [x, p], [y], "TransposeOptions")
    return b.build([x], [y])


def _transpose_cases():
    rng = np.random.default_rng(RNG_SEED + 2)
    cases = [([1, 3, 4, 5], [0, 3, 1, 2]), ([1, 3, 4, 5], [0, 2, 3, 1]), ([3, 5], [1, 0]),
             ([1, 2, 3, 4, 5], [0, 1, 2, 3, 4])]
    for rank in (2, 3, 4, 5, 5):
        shape = [1] + [int(d) for d in rng.integers(2, 5, rank - 1)]
        perm = [0] + [int(p) + 1 for p in rng.permutation(rank - 1)]
        cases.append((shape, perm))
    return cases


@pytest.mark.parametrize("shape, perm", _transpose_cases())
def test_transpose_matches_tflm(shape, perm):
    compile_and_check(_transpose_model(shape, perm, 0.07, -5))


# -- SLICE / STRIDED_SLICE --------------------------------------------------------------------

def _slice_model(shape, begin, size, dtype="int32"):
    b = ModelBuilder()
    x = b.tensor(shape, scale=0.05, zp=4)
    bg = b.tensor((len(begin),), dtype=dtype, data=begin)
    sz = b.tensor((len(size),), dtype=dtype, data=size)
    out = [d - bb if s == -1 else s for d, bb, s in zip(shape, begin, size)]
    y = b.tensor(out, scale=0.05, zp=4)
    b.op("SLICE", [x, bg, sz], [y], "SliceOptions")
    return b.build([x], [y])


@pytest.mark.parametrize("shape, begin, size, dtype", [
    ([1, 6, 7, 5], [0, 1, 2, 0], [1, 3, -1, 5], "int32"),
    ([1, 6, 7, 5], [0, 0, 0, 2], [1, 6, 7, 2], "int32"),
    ([4, 9], [1, 3], [2, 5], "int64"),
    ([1, 2, 3, 4, 5], [0, 1, 1, 0, 2], [1, 1, 2, -1, 3], "int32"),
])
def test_slice_matches_tflm(shape, begin, size, dtype):
    compile_and_check(_slice_model(shape, begin, size, dtype))


def _numpy_strided_shape(shape, begin, end, strides, bmask, emask, smask):
    idx = []
    for d in range(len(shape)):
        if (smask >> d) & 1:
            idx.append(begin[d])
        else:
            idx.append(slice(None if (bmask >> d) & 1 else begin[d],
                             None if (emask >> d) & 1 else end[d], strides[d]))
    return list(np.empty(shape)[tuple(idx)].shape)


def _strided_model(shape, begin, end, strides, bmask=0, emask=0, smask=0):
    b = ModelBuilder()
    x = b.tensor(shape, scale=0.05, zp=-2)
    ts = [b.tensor((len(v),), dtype="int32", data=v) for v in (begin, end, strides)]
    y = b.tensor(_numpy_strided_shape(shape, begin, end, strides, bmask, emask, smask), scale=0.05, zp=-2)
    b.op("STRIDED_SLICE", [x, *ts], [y], "StridedSliceOptions", beginMask=bmask, endMask=emask,
         shrinkAxisMask=smask)
    return b.build([x], [y])


@pytest.mark.parametrize("shape, begin, end, strides, bmask, emask, smask", [
    ([1, 6, 7, 5], [0, 1, -1, 0], [1, 6, 0, 5], [1, 2, -2, 1], 0, 0, 0),
    ([1, 6, 7, 5], [0, 0, 0, 1], [1, 0, 0, 4], [1, 1, 1, 1], 0b0110, 0b0110, 0),
    ([1, 6, 7, 5], [0, 2, 0, 0], [1, 3, 7, 5], [1, 1, 3, 2], 0, 0, 0b0010),
    ([1, 8, 5], [0, -3, 1], [1, 100, 4], [1, 1, 1], 0, 0, 0),
    ([1, 8, 5], [0, 7, 4], [1, -100, -100], [1, -3, -1], 0, 0, 0),
    ([4, 3, 2], [1, 0, 1], [4, 3, 2], [2, 2, 1], 0, 0, 0b100),
    ([1, 9, 4], [0, 20, -2], [1, 0, 4], [1, -2, 1], 0, 0, 0),
    ([1, 9, 4], [0, 5, 3], [1, 1, 0], [1, -1, -1], 0b010, 0b100, 0),
    ([1, 9, 4], [0, -20, -1], [1, -2, -5], [1, 3, -1], 0, 0, 0),
    ([2, 6, 3], [-1, 0, 0], [0, 6, 3], [1, 1, 1], 0, 0, 0b001),
])
def test_strided_slice_matches_tflm(shape, begin, end, strides, bmask, emask, smask):
    compile_and_check(_strided_model(shape, begin, end, strides, bmask, emask, smask))


def test_strided_slice_rejects_what_tflm_rejects():
    assert_unsupported(_strided_model([1, 4, 4, 3, 2], [0, 0, 1, 0, 1], [1, 4, 4, 3, 2],
                                      [1, 2, 1, 2, 1]), "STRIDED_SLICE", "rank 5")
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 2), scale=0.05, zp=0)
    ts = [b.tensor((4,), dtype="int32", data=v) for v in ([0, 0, 0, 0], [1, 2, 2, 2], [1, 1, 1, 1])]
    y = b.tensor((1, 2, 2, 2), scale=0.05, zp=0)
    b.op("STRIDED_SLICE", [x, *ts], [y], "StridedSliceOptions", ellipsisMask=2)
    assert_unsupported(b.build([x], [y]), "STRIDED_SLICE", "ellipsis")


# -- SPLIT / SPLIT_V --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, n", [([1, 4, 6, 3], 2, 3), ([1, 4, 6, 4], -1, 2), ([6, 5], 0, 3)])
def test_split_matches_tflm(shape, axis, n):
    b = ModelBuilder()
    ax = b.tensor((), dtype="int32", data=axis)
    x = b.tensor(shape, scale=0.03, zp=7)
    part = list(shape)
    part[axis] //= n
    ys = [b.tensor(part, scale=0.03, zp=7) for _ in range(n)]
    b.op("SPLIT", [ax, x], ys, "SplitOptions", numSplits=n)
    compile_and_check(b.build([x], ys))


def test_split_v_matches_tflm():
    b = ModelBuilder()
    x = b.tensor((1, 5, 7, 2), scale=0.03, zp=7)
    sizes = b.tensor((3,), dtype="int32", data=[2, 4, 1])
    ax = b.tensor((), dtype="int32", data=2)
    ys = [b.tensor((1, 5, w, 2), scale=0.03, zp=7) for w in (2, 4, 1)]
    b.op("SPLIT_V", [x, sizes, ax], ys, "SplitVOptions", numSplits=3)
    compile_and_check(b.build([x], ys))


# -- memory safety ----------------------------------------------------------------------------

def test_layout_kernels_are_clean_under_sanitizers():
    b = ModelBuilder()
    x = b.tensor((1, 3, 4, 2), scale=0.05, zp=-3)
    p = b.tensor((4, 2), dtype="int32", data=[[0, 0], [1, 2], [2, 1], [1, 0]])
    xp = b.tensor((1, 6, 7, 3), scale=0.05, zp=-3)
    b.op("PAD", [x, p], [xp])
    perm = b.tensor((4,), dtype="int32", data=[0, 2, 1, 3])
    xt = b.tensor((1, 7, 6, 3), scale=0.05, zp=-3)
    b.op("TRANSPOSE", [xp, perm], [xt], "TransposeOptions")
    ts = [b.tensor((4,), dtype="int32", data=v) for v in ([0, 6, 5, 0], [1, -8, -7, 3], [1, -2, -1, 1])]
    xs_ = b.tensor((1, 4, 6, 3), scale=0.05, zp=-3)
    b.op("STRIDED_SLICE", [xt, *ts], [xs_], "StridedSliceOptions")
    c = b.tensor((1, 4, 6, 2), scale=0.05, zp=-3)
    y = b.tensor((1, 4, 6, 5), scale=0.05, zp=-3)
    b.op("CONCATENATION", [xs_, c], [y], "ConcatenationOptions", axis=3)
    model = b.build([x, c], [y])
    cm = compile_and_check(model)
    xs = [int8_inputs((3, 4, 2), 5), int8_inputs((4, 6, 2), 5, seed=9)]
    assert_sanitized_matches_tflm(cm, model, xs)


# -- DEPTH_TO_SPACE / SPACE_TO_DEPTH ----------------------------------------------------------

def _depth_space_model(kind, shape, bs, q=(0.05, -3), out_q=None, out_shape=None):
    n, h, w, c = shape
    if out_shape is None:
        out_shape = ((n, h * bs, w * bs, c // (bs * bs)) if kind == "DEPTH_TO_SPACE"
                     else (n, h // bs, w // bs, c * bs * bs))
    b = ModelBuilder()
    x = b.tensor(shape, scale=q[0], zp=q[1])
    y = b.tensor(out_shape, scale=(out_q or q)[0], zp=(out_q or q)[1])
    opts = "DepthToSpaceOptions" if kind == "DEPTH_TO_SPACE" else "SpaceToDepthOptions"
    b.op(kind, [x], [y], opts, blockSize=bs)
    return b.build([x], [y])


# (shape, block size): channels 1 per output position up to many, batch 2, non-square maps.
DEPTH_TO_SPACE_CASES = [((1, 3, 4, 8), 2), ((1, 2, 2, 4), 2), ((2, 3, 2, 18), 3), ((1, 1, 1, 16), 4),
                        ((1, 5, 3, 12), 2), ((1, 4, 4, 7), 1), ((1, 2, 3, 27), 3)]
SPACE_TO_DEPTH_CASES = [((1, 4, 6, 3), 2), ((1, 2, 2, 1), 2), ((2, 6, 3, 5), 3), ((1, 4, 4, 2), 4),
                        ((1, 8, 2, 4), 2), ((1, 3, 5, 2), 1), ((1, 6, 9, 8), 3)]


@pytest.mark.parametrize("shape,bs", DEPTH_TO_SPACE_CASES)
def test_depth_to_space_matches_tflm(shape, bs):
    compile_and_check(_depth_space_model("DEPTH_TO_SPACE", shape, bs))


@pytest.mark.parametrize("shape,bs", SPACE_TO_DEPTH_CASES)
def test_space_to_depth_matches_tflm(shape, bs):
    compile_and_check(_depth_space_model("SPACE_TO_DEPTH", shape, bs))


def test_depth_space_copy_raw_codes_when_quantization_differs():
    for kind, shape in (("DEPTH_TO_SPACE", (1, 2, 3, 8)), ("SPACE_TO_DEPTH", (1, 4, 2, 3))):
        compile_and_check(_depth_space_model(kind, shape, 2, q=(0.05, -3), out_q=(0.2, 40)))


def test_depth_space_rejects_what_tflm_rejects():
    assert_unsupported(_depth_space_model("DEPTH_TO_SPACE", (1, 2, 2, 6), 2, out_shape=(1, 4, 4, 1)),
                       "DEPTH_TO_SPACE", "multiple")
    assert_unsupported(_depth_space_model("SPACE_TO_DEPTH", (1, 3, 4, 2), 2, out_shape=(1, 1, 2, 8)),
                       "SPACE_TO_DEPTH", "multiples")
    assert_unsupported(_depth_space_model("DEPTH_TO_SPACE", (1, 2, 2, 8), 2, out_shape=(1, 4, 4, 1)),
                       "DEPTH_TO_SPACE", "computes")
    assert_unsupported(_depth_space_model("SPACE_TO_DEPTH", (1, 2, 2, 8), 0, out_shape=(1, 2, 2, 8)),
                       "SPACE_TO_DEPTH", "block size")


def test_depth_space_clean_under_sanitizers():
    """Each op alone on exact-size heap buffers (a read or write outside them is reported)."""
    import tinyengine_tf as te
    for kind, shape in (("SPACE_TO_DEPTH", (1, 4, 6, 3)), ("DEPTH_TO_SPACE", (1, 2, 3, 12)),
                        ("DEPTH_TO_SPACE", (2, 2, 3, 18))):
        model = _depth_space_model(kind, shape, 2 if shape[-1] != 18 else 3)
        xs = int8_inputs(shape[1:] if shape[0] == 1 else shape, 5)
        assert_sanitized_matches_tflm(te.convert(model), model, xs, layer=0)


# -- int16 (16x8 models) ----------------------------------------------------------------------

def _int16(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, (n, *shape)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    return x


def _check16(model, shapes):
    import tinyengine_tf as te
    from reference import assert_matches_tflm, check_footprints
    cm = te.convert(model)
    xs = [_int16(s, seed=k) for k, s in enumerate(shapes)]
    assert_matches_tflm(cm, model, xs if len(xs) > 1 else xs[0])
    check_footprints(cm)
    return cm


@pytest.mark.parametrize("zp,value", [(0, None), (37, None), (0, -1234), (5, 32767)])
def test_pad_int16(zp, value):
    """int16 PAD fills with 0 whatever the zero point; PADV2 with its constant's raw value."""
    b = ModelBuilder()
    x = b.tensor((1, 3, 4, 2), dtype="int16", scale=1e-4, zp=zp)
    p = b.tensor((4, 2), dtype="int32", data=[[0, 0], [1, 2], [0, 3], [1, 0]])
    y = b.tensor((1, 6, 7, 3), dtype="int16", scale=1e-4, zp=zp)
    if value is None:
        b.op("PAD", [x, p], [y])
    else:
        v = b.tensor((), dtype="int16", scale=2e-4, zp=0, data=value)
        b.op("PADV2", [x, p, v], [y])
    cm = _check16(b.build([x], [y]), [(3, 4, 2)])
    if zp == 0 and value is None:
        from reference import assert_sanitized_matches_tflm
        assert_sanitized_matches_tflm(cm, b.build([x], [y]), _int16((3, 4, 2)), layer=0)


def test_concatenation_int16_copies_raw_values():
    """int16 CONCATENATION: zero points 0, scales may differ (TFLM copies raw values)."""
    b = ModelBuilder()
    xs = [b.tensor((1, 3, 2, c), dtype="int16", scale=s, zp=0) for c, s in ((2, 1e-4), (3, 3e-4))]
    y = b.tensor((1, 3, 2, 5), dtype="int16", scale=2e-4, zp=0)
    b.op("CONCATENATION", xs, [y], "ConcatenationOptions", axis=3)
    _check16(b.build(xs, [y]), [(3, 2, 2), (3, 2, 3)])
    b = ModelBuilder()
    xs = [b.tensor((1, 4), dtype="int16", scale=1e-4, zp=z) for z in (0, 3)]
    y = b.tensor((1, 8), dtype="int16", scale=1e-4, zp=0)
    b.op("CONCATENATION", xs, [y], "ConcatenationOptions", axis=1)
    assert_unsupported(b.build(xs, [y]), "CONCATENATION", "zero point 0")


def test_transpose_slices_splits_int16():
    b = ModelBuilder()
    q = dict(dtype="int16", scale=1e-4, zp=0)
    x = b.tensor((1, 4, 6, 3), **q)
    perm = b.tensor((4,), dtype="int32", data=[0, 2, 1, 3])
    t = b.tensor((1, 6, 4, 3), **q)
    b.op("TRANSPOSE", [x, perm], [t], "TransposeOptions")
    ss = [b.tensor((4,), dtype="int32", data=v) for v in ([0, 1, 0, 0], [1, 6, 4, 3], [1, 2, 1, 1])]
    s = b.tensor((1, 3, 4, 3), **q)
    b.op("STRIDED_SLICE", [t, *ss], [s], "StridedSliceOptions")
    begin = b.tensor((4,), dtype="int32", data=[0, 0, 1, 0])
    size = b.tensor((4,), dtype="int32", data=[1, 3, 2, 3])
    sl = b.tensor((1, 3, 2, 3), **q)
    b.op("SLICE", [s, begin, size], [sl], "SliceOptions")
    axis = b.tensor((), dtype="int32", data=3)
    parts = [b.tensor((1, 3, 2, 1), **q) for _ in range(3)]
    b.op("SPLIT", [axis, sl], parts, "SplitOptions", numSplits=3)
    sizes = b.tensor((2,), dtype="int32", data=[1, 2])
    axis2 = b.tensor((), dtype="int32", data=1)
    v1, v2 = b.tensor((1, 1, 2, 1), **q), b.tensor((1, 2, 2, 1), **q)
    b.op("SPLIT_V", [parts[1], sizes, axis2], [v1, v2], "SplitVOptions", numSplits=2)
    model = b.build([x], [parts[0], v2, parts[2]])
    _check16(model, [(4, 6, 3)])


@pytest.mark.parametrize("kind", ["SPLIT", "SPLIT_V"])
def test_split_copies_raw_values_when_quantization_differs(kind):
    """TFLM's split kernels compare no quantization: outputs quantized otherwise than the input
    get its raw codes (issue 11: accept what TFLM accepts)."""
    b = ModelBuilder()
    x = b.tensor((1, 4, 6), scale=0.05, zp=-3)
    ys = [b.tensor((1, 4, 3), scale=s, zp=z) for s, z in ((0.1, 7), (0.02, -40))]
    if kind == "SPLIT":
        axis = b.tensor((), dtype="int32", data=2)
        b.op("SPLIT", [axis, x], ys, "SplitOptions", numSplits=2)
    else:
        sizes = b.tensor((2,), dtype="int32", data=[3, 3])
        axis = b.tensor((), dtype="int32", data=2)
        b.op("SPLIT_V", [x, sizes, axis], ys, "SplitVOptions", numSplits=2)
    compile_and_check(b.build([x], ys))
