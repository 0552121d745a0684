"""CONV_2D 1x1 with a fused residual ADD (passes/fuse_residual.py, kernels/conv_residual.py):
inverted-residual blocks built with the schema, judged by TFLM on the host, under
ASan/UBSan and on the emulated Cortex-M4 (DSP path)."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import assert_matches_tflm, assert_sanitized_matches_tflm, model_inputs, tflm_run
from tflite_builder import ModelBuilder, bias_scale


def block(c=8, e=24, h=6, w=5, per_channel=True, order=0, add_act="NONE", proj_act="NONE",
          seed=0, tail=True, stride_dw=1):
    """x -> 1x1 expand (RELU6) -> 3x3 depthwise (RELU6) -> 1x1 project -> ADD with x [-> 1x1].

    With tail, a last 1x1 conv reads the sum, so the skip tensor dies at the ADD as in a
    network's middle; without, the ADD's output is the model output."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    sx = 0.05
    x = b.tensor((1, h, w, c), scale=sx, zp=int(rng.integers(-20, 20)))

    def conv(inp, s_in, cin, cout, s_out, zp_out, act, k=1, depthwise=False, stride=1):
        oh, ow = -(-h // stride), -(-w // stride)
        shape = (1, k, k, cout) if depthwise else (cout, k, k, cin)
        fs = (rng.uniform(0.002, 0.02, cout) if per_channel else np.array([0.01]))
        wts = rng.integers(-127, 128, shape)
        wt = b.tensor(shape, scale=fs, zp=[0] * len(fs), data=wts, qdim=3 if depthwise else 0)
        bs = bias_scale(s_in, fs)
        bias = b.tensor((cout,), dtype="int32", scale=bs, zp=[0] * len(bs),
                        data=rng.integers(-2000, 2000, cout))
        y = b.tensor((1, oh, ow, cout), scale=s_out, zp=zp_out)
        if depthwise:
            b.op("DEPTHWISE_CONV_2D", [inp, wt, bias], [y], "DepthwiseConv2DOptions",
                 padding="SAME", strideH=stride, strideW=stride, depthMultiplier=1,
                 fusedActivationFunction=act)
        else:
            b.op("CONV_2D", [inp, wt, bias], [y], "Conv2DOptions", padding="SAME", strideH=1,
                 strideW=1, fusedActivationFunction=act)
        return y

    t1 = conv(x, sx, c, e, 0.04, -128, "RELU6")
    t2 = conv(t1, 0.04, e, e, 0.03, -128, "RELU6", k=3, depthwise=True, stride=stride_dw)
    t3 = conv(t2, 0.03, e, c, 0.06, int(rng.integers(-10, 10)), proj_act)
    y = b.tensor((1, h, w, c), scale=0.08, zp=int(rng.integers(-10, 10)))
    b.op("ADD", [t3, x] if order == 0 else [x, t3], [y], "AddOptions",
         fusedActivationFunction=add_act)
    out = y
    if tail:
        out = conv(y, 0.08, c, 4, 0.1, 3, "NONE")
    return b.build(inputs=[x], outputs=[out])


def _fused(cm) -> list:
    return [op for op in cm.graph.ops if "residual" in op.options]


CASES = [
    dict(),                                              # DSP pairs, per-channel
    dict(c=6, e=20, order=1, add_act="RELU", seed=1),    # input channels % 4 != 0: portable
    dict(c=5, e=16, per_channel=False, seed=2),          # odd output channels, per-tensor
    dict(c=8, e=32, h=7, w=7, proj_act="RELU6", add_act="RELU6", order=1, seed=3),
    dict(c=4, e=12, h=3, w=9, tail=False, seed=4),       # the sum is the model output
]


@pytest.mark.parametrize("spec", CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_fused_block_matches_tflm(spec):
    model = block(**spec)
    cm = te.convert(model)
    assert len(_fused(cm)) == 1 and "ADD" not in cm.graph.op_counts()
    xs = model_inputs(cm, 24, seed=7)
    assert_matches_tflm(cm, model, xs)


def test_fused_block_lowers_the_peak_to_the_fused_bound():
    # Op by op the projection's step holds x, the depthwise output and the projection's output;
    # fused, the sum overwrites x.
    c, e, h, w = 16, 48, 8, 8
    cm = te.convert(block(c=c, e=e, h=h, w=w))
    x, t = h * w * c, h * w * e
    step = next(k for k, op in enumerate(cm.graph.ops) if "residual" in op.options)
    # x, t and a chunk of at most 512 conv values (the scratch the fused ADD reads).
    assert x + t < cm.plan.live_bytes()[step] <= x + t + 512
    # Op by op that step must hold x + t + x: every plan of the unfused graph is above it.
    assert cm.peak_sram < x + t + x


def test_of_two_convs_feeding_an_add_the_later_one_absorbs_it():
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 8), scale=0.05, zp=0)
    outs = []
    for k in range(2):
        fs = rng.uniform(0.005, 0.02, 8)
        wt = b.tensor((8, 1, 1, 8), scale=fs, zp=[0] * 8, data=rng.integers(-127, 128, (8, 1, 1, 8)))
        bias = b.tensor((8,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * 8,
                        data=rng.integers(-500, 500, 8))
        y = b.tensor((1, 4, 4, 8), scale=0.07, zp=k)
        b.op("CONV_2D", [x, wt, bias], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1)
        outs.append(y)
    s = b.tensor((1, 4, 4, 8), scale=0.1, zp=0)
    b.op("ADD", outs, [s], "AddOptions")
    model = b.build(inputs=[x], outputs=[s])
    cm = te.convert(model)
    # The second projection (the one right before the ADD) absorbs it, reading the first's
    # output as its skip; the first one, whose output the ADD needs later, is not fused.
    fused = _fused(cm)
    assert len(fused) == 1 and fused[0].inputs[3] == outs[0]
    assert_matches_tflm(cm, model, model_inputs(cm, 16, seed=3))


def test_fused_block_is_clean_under_sanitizers():
    model = block(c=8, e=24, seed=5)
    cm = te.convert(model)
    assert_sanitized_matches_tflm(cm, model, model_inputs(cm, 6, seed=1))


def test_fused_blocks_on_cortex_m4_dsp_path():
    for spec in (CASES[0], CASES[2], CASES[3], dict(c=8, e=16, h=1, w=1, seed=6)):
        model = block(**spec)
        cm = te.convert(model)
        assert "__smlad" in cm.sources["model.c"] or spec.get("h") == 1
        xs = model_inputs(cm, 6, seed=2)
        np.testing.assert_array_equal(cm.run(xs, target="cortex-m4"), tflm_run(model, xs))


def test_widened_projection_matches_tflm():
    """With Flash to spare the projection's filter (96 inputs) is stored as int16 and its chunk
    function takes the widened form: the DSP firmware, the host (portable) and a sanitized
    build all equal TFLM; the footprints count the widened bytes."""
    from reference import check_footprints
    for spec in (dict(c=8, e=96, h=6, w=6, seed=7),
                 dict(c=16, e=64, h=6, w=8, order=1, add_act="RELU6", per_channel=False, seed=8)):
        model = block(**spec)
        narrow, cm = te.convert(model), te.convert(model, flash=1 << 26)
        proj = next(op for op in cm.graph.ops if "residual" in op.options)
        assert f"_L{cm.graph.ops.index(proj)}_w16[" in cm.sources["model.c"], spec
        assert cm.flash > narrow.flash
        check_footprints(cm)
        xs = model_inputs(cm, 8, seed=4)
        want = tflm_run(model, xs)
        np.testing.assert_array_equal(cm.run(xs, target="cortex-m4"), want)
        np.testing.assert_array_equal(cm.run(xs), want)
        assert_sanitized_matches_tflm(cm, model, xs)


def test_x_plus_conv_of_x_gets_its_own_output_buffer():
    # The conv reads pixel p's input for every output channel: the sum must not overwrite it.
    rng = np.random.default_rng(4)
    b = ModelBuilder()
    x = b.tensor((1, 5, 3, 6), scale=0.05, zp=-7)
    fs = rng.uniform(0.005, 0.02, 6)
    wt = b.tensor((6, 1, 1, 6), scale=fs, zp=[0] * 6, data=rng.integers(-127, 128, (6, 1, 1, 6)))
    bias = b.tensor((6,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * 6,
                    data=rng.integers(-500, 500, 6))
    t = b.tensor((1, 5, 3, 6), scale=0.07, zp=2)
    b.op("CONV_2D", [x, wt, bias], [t], "Conv2DOptions", padding="VALID", strideH=1, strideW=1)
    y = b.tensor((1, 5, 3, 6), scale=0.1, zp=0)
    b.op("ADD", [x, t], [y], "AddOptions", fusedActivationFunction="RELU")
    model = b.build(inputs=[x], outputs=[y])
    cm = te.convert(model)
    (op,) = _fused(cm)
    assert "in_place_input" not in op.options
    assert_matches_tflm(cm, model, model_inputs(cm, 16, seed=5))


@pytest.mark.parametrize("pick", [0, -1])
def test_smaller_chunks_match_tflm(pick):
    """CHUNK_OPTION (set by band_plan.py where the chunk is on the peak): a smaller chunk of
    pixels per conv call, same values, smaller scratch."""
    from converters.tflite_reader import read_tflite
    from tinyengine_tf.codegen import generate
    from tinyengine_tf.compiled import CompiledModel
    from tinyengine_tf.kernels import conv_residual
    from tinyengine_tf.passes import run_passes
    model = block(c=8, e=24, h=6, w=5, seed=5)
    source = read_tflite(model, name="model")
    g = run_passes(source)
    op, = [op for op in g.ops if conv_residual.handles(op)]
    default = conv_residual.scratch_bytes(op, g)
    rows, size = conv_residual.chunk_choices(op, g)[pick]
    assert size < default
    op.options[conv_residual.CHUNK_OPTION] = rows
    assert conv_residual.scratch_bytes(op, g) == size
    cm = CompiledModel(g, generate(g, "model"), model, source)
    code, = [code for o, code in cm._gen.layers if conv_residual.handles(o)]
    assert code.scratch_bytes == size
    assert_matches_tflm(cm, model, model_inputs(cm, 12, seed=2))


@pytest.mark.parametrize("chunk", [7, 0.5, -3])
def test_a_chunk_that_does_not_divide_the_pixels_is_refused_by_name(chunk):
    from converters.tflite_reader import read_tflite
    from tinyengine_tf.codegen import generate
    from tinyengine_tf.kernels import conv_residual
    from tinyengine_tf.passes import run_passes
    g = run_passes(read_tflite(block(c=8, e=24, h=6, w=5, seed=5), name="model"))   # 30 pixels
    op, = [op for op in g.ops if conv_residual.handles(op)]
    op.options[conv_residual.CHUNK_OPTION] = chunk
    with pytest.raises(te.UnsupportedOpError, match=r"does not divide its 30 pixels.*\[1, 2, 3, 5, 6, 10, 15, 30\]") as e:
        generate(g, "model")
    assert e.value.op_index == op.index
