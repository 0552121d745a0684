"""MEAN, SUM and REDUCE_MAX on int8 against TFLite Micro, over many axes/shape/scale combinations."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import assert_sanitized_matches_tflm, assert_unsupported, compile_and_check, int8_inputs
from tflite_builder import ModelBuilder
from tinyengine_tf import quant
from tinyengine_tf.kernels.reduce import fold_count

RNG_SEED = 77


def _reduce_model(kind, shape, axes, keep, in_q, out_q, axis_dtype="int32"):
    b = ModelBuilder()
    x = b.tensor(shape, scale=in_q[0], zp=in_q[1])
    ax = b.tensor((len(axes),), dtype=axis_dtype, data=axes)
    resolved = {a % len(shape) for a in axes}
    out = ([1 if d in resolved else n for d, n in enumerate(shape)] if keep
           else [n for d, n in enumerate(shape) if d not in resolved])
    y = b.tensor(out, scale=out_q[0], zp=out_q[1])
    b.op(kind, [x, ax], [y], "ReducerOptions", keepDims=keep)
    return b.build([x], [y])


def _mean_cases():
    """Global average pooling (the special TFLM path), other axes, batch > 1, negative/duplicate axes."""
    rng = np.random.default_rng(RNG_SEED)
    shapes_axes = [
        ((1, 7, 7, 16), [1, 2], True), ((1, 7, 7, 16), [1, 2], False), ((1, 5, 3, 8), [2, 1], True),
        ((1, 13, 13, 3), [-3, -2], True), ((2, 4, 6, 5), [1, 2], True), ((2, 4, 6, 5), [3], True),
        ((2, 4, 6, 5), [1], False), ((1, 4, 6, 5), [1, 2, 3], True), ((3, 7), [1], False),
        ((3, 7), [0], True), ((2, 3, 4, 5), [0, 2], False), ((1, 1, 1, 9), [1, 2], True),
        ((2, 3, 4, 5), [1, 1, -3], False), ((1, 2, 3, 4, 5), [2, 4], False), ((1, 32, 32, 4), [1, 2], False),
        ((1, 3, 3, 1280), [1, 2], True),
    ]
    cases = []
    for k, (shape, axes, keep) in enumerate(shapes_axes):
        s_in = float(rng.uniform(0.005, 0.2))
        z_in = int(rng.integers(-128, 128))
        if k % 4 == 0:
            out_q = (s_in, z_in)                       # equal quantization (TFLM's other branch)
        elif k % 4 == 1:
            out_q = (s_in * float(rng.uniform(1.5, 40)), int(rng.integers(-128, 128)))  # shift > 0 after fold
        else:
            out_q = (float(rng.uniform(0.002, 0.3)), int(rng.integers(-128, 128)))
        cases.append((shape, axes, keep, (s_in, z_in), out_q))
    return cases


@pytest.mark.parametrize("shape, axes, keep, in_q, out_q", _mean_cases())
def test_mean_matches_tflm(shape, axes, keep, in_q, out_q):
    cm = compile_and_check(_reduce_model("MEAN", shape, axes, keep, in_q, out_q))
    assert cm.graph.op_counts() == {"MEAN": 1}


def test_global_average_pool_accumulates_per_channel_in_scratch():
    cm = compile_and_check(_reduce_model("MEAN", (1, 6, 6, 24), [1, 2], True, (0.05, -3), (0.02, 4)))
    code = cm._gen.layers[0][1]
    assert code.scratch_bytes == 4 * 24
    # channel-innermost reduction over a kept block: no per-element division, one requant per output
    assert "te_mbqm" in code.body and "/" not in code.body.replace("/*", "").replace("*/", "")


def test_reduce_over_innermost_axis_needs_no_scratch():
    cm = compile_and_check(_reduce_model("MEAN", (1, 4, 6, 10), [3], False, (0.05, -3), (0.02, 4)))
    assert cm._gen.layers[0][1].scratch_bytes == 0


@pytest.mark.parametrize("shape, axes, keep", [((1, 5, 5, 6), [1, 2], True), ((2, 4, 6), [2], False),
                                               ((1, 3, 4, 5), [1, 3], True)])
def test_sum_matches_tflm(shape, axes, keep):
    compile_and_check(_reduce_model("SUM", shape, axes, keep, (0.01, 3), (0.4, -10)))
    compile_and_check(_reduce_model("SUM", shape, axes, keep, (0.2, -128), (0.05, 0)))


@pytest.mark.parametrize("shape, axes, keep", [((1, 5, 5, 6), [1, 2], True), ((2, 4, 6), [2], False),
                                               ((1, 3, 4, 5), [1, 3], True), ((1, 3, 4, 5), [0], False),
                                               ((4, 3), [0, 1], True)])
def test_reduce_max_matches_tflm(shape, axes, keep):
    compile_and_check(_reduce_model("REDUCE_MAX", shape, axes, keep, (0.03, -7), (0.03, -7)))


def test_fold_count_is_tflm_recipe():
    # the folded multiplier keeps q' within int32 and the shift within MBQM's range
    for m in (0.3, 1.0, 2.5, 1e-3, 17.0):
        q, shift = quant.quantize_multiplier(m)
        for n in (1, 2, 3, 49, 169, 1024, 4095, 1 << 20):
            q2, s2 = fold_count(q, shift, n)
            assert 0 < q2 < 2**31 and s2 >= -31
            assert abs(q2 * 2.0 ** (s2 - 31) - m / n) <= m / n * 1e-6 + 2.0 ** (s2 - 31)


def test_reduce_rejects_what_tflm_rejects():
    assert_unsupported(_reduce_model("REDUCE_MAX", (1, 4, 4, 3), [1, 2], True, (0.03, -7), (0.05, -7)),
                       "REDUCE_MAX", "quantized differently")
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 3), scale=0.05, zp=0)
    axes_in = b.tensor((2,), dtype="int32")
    y = b.tensor((1, 1, 1, 3), scale=0.05, zp=0)
    b.op("MEAN", [x, axes_in], [y], "ReducerOptions", keepDims=True)
    with pytest.raises(te.TinyEngineError):
        te.convert(b.build([x, axes_in], [y]))
    assert_unsupported(_reduce_model("MEAN", (1, 4, 4, 3), [1, 2], True, (0.05, 0), (0.05, 0),
                                     axis_dtype="int64"), "MEAN", "int32")
    assert_unsupported(_reduce_model("MEAN", (1, 2, 2, 2, 2, 3), [1, 2], True, (0.05, 0), (0.05, 0)),
                       "MEAN", "rank 6")


def test_reduce_kernels_are_clean_under_sanitizers():
    for model, shape in [
        (_reduce_model("MEAN", (2, 4, 6, 5), [1, 2], True, (0.05, -128), (0.01, 127)), (2, 4, 6, 5)),
        (_reduce_model("MEAN", (1, 3, 4, 5), [1, 3], False, (0.2, 127), (0.01, -128)), (3, 4, 5)),
        (_reduce_model("SUM", (1, 3, 4, 5), [3], False, (0.2, 127), (0.01, -128)), (3, 4, 5)),
        (_reduce_model("REDUCE_MAX", (2, 3, 4), [0, 2], True, (0.1, 1), (0.1, 1)), (2, 3, 4)),
    ]:
        assert_sanitized_matches_tflm(te.convert(model), model, int8_inputs(shape, 6))


# -- int16 (16x8 models) ----------------------------------------------------------------------

def _reduce_model_16(kind, shape, axes, keep, in_q, out_q):
    b = ModelBuilder()
    x = b.tensor(shape, dtype="int16", scale=in_q[0], zp=in_q[1])
    ax = b.tensor((len(axes),), dtype="int32", data=axes)
    resolved = {a % len(shape) for a in axes}
    out = ([1 if d in resolved else n for d, n in enumerate(shape)] if keep
           else [n for d, n in enumerate(shape) if d not in resolved])
    y = b.tensor(out, dtype="int16", scale=out_q[0], zp=out_q[1])
    b.op(kind, [x, ax], [y], "ReducerOptions", keepDims=keep)
    return b.build([x], [y])


@pytest.mark.parametrize("kind", ["MEAN", "SUM"])
@pytest.mark.parametrize("shape,axes,keep,in_q,out_q", [
    ((1, 7, 7, 16), [1, 2], True, (1e-4, 0), (1e-4, 0)),
    ((1, 5, 3, 8), [2, 1], False, (3e-5, 0), (1e-4, 0)),
    ((2, 4, 6, 5), [3], True, (2e-4, 10), (5e-4, -7)),
    ((3, 7), [1], False, (1e-3, 0), (2e-2, 0)),
    ((2, 3, 4, 5), [0, 2], False, (1e-4, 0), (3e-4, 0))])
def test_mean_sum_int16(kind, shape, axes, keep, in_q, out_q):
    from reference import assert_matches_tflm, check_footprints, sample_shape
    if kind == "SUM":
        out_q = (out_q[0] * 8, out_q[1])
    model = _reduce_model_16(kind, shape, axes, keep, in_q, out_q)
    rng = np.random.default_rng(3)
    x = rng.integers(-32768, 32768, (8, *sample_shape(shape))).astype(np.int16)
    x[0], x[1] = -32768, 32767
    cm = te.convert(model)
    assert_matches_tflm(cm, model, x)
    check_footprints(cm)
    if shape == (1, 7, 7, 16):
        assert_sanitized_matches_tflm(cm, model, x[:3], layer=0)
