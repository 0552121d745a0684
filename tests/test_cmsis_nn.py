"""The CMSIS-NN side-by-side program (tinyengine_tf/cmsis_nn.py, issue 12): a small model that
reaches every CMSIS-NN call it makes (PAD, per-channel CONV_2D with 3 input channels, depthwise,
1x1 conv, ADD, AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX), built against Arm's CMSIS-NN
from ../shared/vendor/cmsis-nn for a Cortex-M4 and run under QEMU, equals the TFLite Micro
interpreter bit for bit; compare() charges every instruction to a layer on both sides."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import int8_inputs, tflm_run
from tflite_builder import ModelBuilder, bias_scale
from tinyengine_tf import cmsis_nn

CMSIS_DIR = cmsis_nn.default_dir()
pytestmark = pytest.mark.skipif(
    not (CMSIS_DIR / "Include" / "arm_nnfunctions.h").is_file(),
    reason=f"no CMSIS-NN checkout at {CMSIS_DIR} (set TINYENGINE_CMSIS_NN to one to run these)")


def _conv_params(b, rng, shape, oc, xs, qdim=0):
    fs = rng.uniform(0.004, 0.03, oc)
    w = b.tensor(shape, scale=fs, zp=0, qdim=qdim, data=rng.integers(-127, 128, shape))
    bias = b.tensor((oc,), dtype="int32", scale=bias_scale(xs, fs), zp=0,
                    data=rng.integers(-3000, 3000, oc))
    return w, bias


def small_model() -> bytes:
    rng = np.random.default_rng(12)
    b = ModelBuilder()
    xs = 0.02
    x = b.tensor((1, 13, 13, 3), scale=xs, zp=-3)
    pads = b.tensor((4, 2), dtype="int32", data=[[0, 0], [0, 1], [0, 1], [0, 0]])
    xp = b.tensor((1, 14, 14, 3), scale=xs, zp=-3)
    b.op("PAD", [x, pads], [xp])
    w0, b0 = _conv_params(b, rng, (8, 3, 3, 3), 8, xs)
    y0 = b.tensor((1, 6, 6, 8), scale=0.04, zp=-128)
    b.op("CONV_2D", [xp, w0, b0], [y0], "Conv2DOptions", padding="VALID", strideH=2, strideW=2,
         fusedActivationFunction="RELU6")
    w1, b1 = _conv_params(b, rng, (1, 3, 3, 8), 8, 0.04, qdim=3)
    y1 = b.tensor((1, 6, 6, 8), scale=0.05, zp=-20)
    b.op("DEPTHWISE_CONV_2D", [y0, w1, b1], [y1], "DepthwiseConv2DOptions", padding="SAME",
         strideH=1, strideW=1, depthMultiplier=1, fusedActivationFunction="NONE")
    w2, b2 = _conv_params(b, rng, (8, 1, 1, 8), 8, 0.05)
    y2 = b.tensor((1, 6, 6, 8), scale=0.06, zp=5)
    b.op("CONV_2D", [y1, w2, b2], [y2], "Conv2DOptions", padding="SAME", strideH=1, strideW=1,
         fusedActivationFunction="NONE")
    y3 = b.tensor((1, 6, 6, 8), scale=0.07, zp=-10)
    b.op("ADD", [y2, y1], [y3], "AddOptions", fusedActivationFunction="RELU")
    y4 = b.tensor((1, 1, 1, 8), scale=0.07, zp=-10)
    b.op("AVERAGE_POOL_2D", [y3], [y4], "Pool2DOptions", padding="VALID", strideH=1, strideW=1,
         filterHeight=6, filterWidth=6, fusedActivationFunction="NONE")
    shape = b.tensor((2,), dtype="int32", data=[1, 8])
    y5 = b.tensor((1, 8), scale=0.07, zp=-10)
    b.op("RESHAPE", [y4, shape], [y5])
    w6 = b.tensor((10, 8), scale=0.01, zp=0, data=rng.integers(-127, 128, (10, 8)))
    b6 = b.tensor((10,), dtype="int32", scale=bias_scale(0.07, 0.01), zp=0,
                  data=rng.integers(-500, 500, 10))
    y6 = b.tensor((1, 10), scale=0.05, zp=2)
    b.op("FULLY_CONNECTED", [y5, w6, b6], [y6], "FullyConnectedOptions",
         fusedActivationFunction="NONE")
    y7 = b.tensor((1, 10), scale=1 / 256, zp=-128)
    b.op("SOFTMAX", [y6], [y7], "SoftmaxOptions", beta=1.0)
    return b.build([x], [y7])


@pytest.fixture(scope="module")
def built():
    model = small_model()
    cm = te.convert(model, name="cn_small")
    return model, cm, cmsis_nn.build_firmware(cm, CMSIS_DIR, "cortex-m4")


def test_cmsis_nn_program_matches_tflm_under_qemu(built):
    model, cm, build = built
    x = int8_inputs((13, 13, 3), 8, seed=4)          # all -128, all 127, alternating, random
    want = tflm_run(model, x)
    got = cmsis_nn.run(build, cm.source_graph, x)[0]
    assert np.array_equal(got.reshape(want.shape), want), np.argwhere(got.reshape(want.shape) != want)[:4]
    assert len(set(want[3:].reshape(-1).tolist())) > 5     # the outputs are not all saturated
    calls = {l.op.kind: l.call for l in build.program.layers}
    assert calls == {"PAD": "arm_pad_s8", "CONV_2D": "arm_convolve_wrapper_s8",
                     "DEPTHWISE_CONV_2D": "arm_depthwise_conv_wrapper_s8",
                     "ADD": "arm_elementwise_add_s8", "AVERAGE_POOL_2D": "arm_avgpool_s8",
                     "RESHAPE": "", "FULLY_CONNECTED": "arm_fully_connected_wrapper_s8",
                     "SOFTMAX": "arm_softmax_s8"}
    # Scratch from CMSIS-NN's own *_get_buffer_size on the target: the 3-channel 3x3 conv takes
    # an im2col buffer (2 columns of 27 int16), the 1x1 conv none.
    steps = {l.op.kind + str(i): s for i, (l, s) in enumerate(zip(build.program.layers,
                                                                   build.program.scratch))}
    assert steps["CONV_2D1"] >= 2 * 27 * 2 and steps["CONV_2D3"] == 0
    assert build.program.arena_bytes >= 2 * 6 * 6 * 8
    # The model's own firmware, for the record, agrees too.
    assert np.array_equal(np.asarray(cm.run(x, target="cortex-m4")).reshape(want.shape), want)


def test_compare_charges_every_instruction_to_a_layer(built):
    model, cm, build = built
    x = int8_inputs((13, 13, 3), 4, seed=8)
    comp = cmsis_nn.compare(cm, CMSIS_DIR, reference=lambda xs: tflm_run(model, xs), x_check=x)
    assert comp.ours.bit_exact is True and comp.cmsis.bit_exact is True
    for side in (comp.ours, comp.cmsis):
        assert side.instructions > 0 and side.macs == cm.macs
        assert side.code_beyond_weights > 0 and side.flash > side.code_beyond_weights
    total_cmsis = sum(layer[3] for layer in comp.cmsis.layers)
    assert 0 < total_cmsis <= comp.cmsis.instructions
    # CMSIS-NN's work happens in the library: charged to the layer functions that call it.
    conv = [layer for layer in comp.cmsis.layers if layer[2] == "CONV_2D"]
    assert all(layer[4] > 0.9 * layer[3] for layer in conv)
    assert comp.ratio == comp.ours.instructions / comp.cmsis.instructions
    # A reference the outputs do not equal is reported as such.
    off = cmsis_nn.compare(cm, CMSIS_DIR, reference=lambda xs: tflm_run(model, xs) ^ 1, x_check=x)
    assert off.ours.bit_exact is False and off.cmsis.bit_exact is False


def test_missing_checkout_is_a_clear_error(tmp_path):
    with pytest.raises(te.ToolchainError, match="no CMSIS-NN checkout"):
        cmsis_nn.build_library(tmp_path, ("-mcpu=cortex-m4",))
