"""16x8 (int16 activations, int8 weights) CONV_2D and FULLY_CONNECTED against TFLite Micro:
int64 and int32 biases, no bias with either quantized_bias_type, per-channel and per-tensor
filters, zero points (ignored by TFLM's int16 conv, applied by its FC), activations, strides,
dilations, groups; inputs including -32768 and 32767; footprints; sanitizers."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       check_footprints, out_size, sample_shape)
from tflite_builder import ModelBuilder, bias_scale

INT32 = 2  # schema TensorType.INT32


def int16_inputs(shape, n, seed=0):
    """n random int16 samples; the first ones all -32768, all 32767, alternating, then small."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, size=(n, *shape)).astype(np.int16)
    if n >= 4:
        x[0] = -32768
        x[1] = 32767
        x[2].flat[::2] = -32768
        x[2].flat[1::2] = 32767
        x[3] = rng.integers(-300, 300, size=shape)
    return x


def check16(model, n=12, seed=0):
    cm = te.convert(model)
    xs = [int16_inputs(sample_shape(cm.graph.t(i).shape), n, seed + k)
          for k, i in enumerate(cm.graph.inputs)]
    assert_matches_tflm(cm, model, xs if len(xs) > 1 else xs[0])
    check_footprints(cm)
    return cm


def _bias(b, rng, n, kind, xs, fs, bound):
    if kind is None:
        return []
    dtype = "int64" if kind == "int64" else "int32"
    return [b.tensor((n,), dtype=dtype, scale=bias_scale(xs, np.resize(fs, n)), zp=[0] * n,
                     data=rng.integers(-bound, bound, n))]


def fc16(rows, k, n, seed=0, per_channel=True, bias="int64", bias_type=0, xq=(0.0005, 0),
         yq=(0.001, 0), act="NONE", keep=False):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor((rows, k), dtype="int16", scale=xq[0], zp=xq[1])
    fs = list(rng.uniform(0.002, 0.02, n)) if per_channel else [0.01]
    w = b.tensor((n, k), scale=fs, zp=[0] * len(fs), data=rng.integers(-127, 128, (n, k)))
    ins = [x, w] + _bias(b, rng, n, bias, xq[0], fs, 1 << 20)
    y = b.tensor((rows, n), dtype="int16", scale=yq[0], zp=yq[1])
    b.op("FULLY_CONNECTED", ins, [y], "FullyConnectedOptions", fusedActivationFunction=act,
         quantizedBiasType=bias_type)
    return b.build([x], [y])


FC_CASES = [dict(rows=1, k=16, n=8), dict(rows=3, k=33, n=5, per_channel=False),
            dict(rows=2, k=64, n=10, bias="int32"), dict(rows=1, k=20, n=4, bias=None),
            dict(rows=1, k=20, n=4, bias=None, bias_type=INT32),
            dict(rows=4, k=12, n=6, xq=(0.001, 7), yq=(0.002, -5)),
            dict(rows=1, k=300, n=7, act="RELU", yq=(0.01, 0)),
            dict(rows=2, k=8, n=3, act="RELU6", xq=(0.0002, 0), yq=(0.0003, 0)),
            dict(rows=1, k=9, n=4, per_channel=False, bias="int32", yq=(0.00002, 0)),
            dict(rows=1, k=40, n=12, xq=(0.05, 0), yq=(0.004, 0))]


@pytest.mark.parametrize("ci", range(len(FC_CASES)))
def test_fully_connected_16x8(ci):
    check16(fc16(seed=ci, **FC_CASES[ci]), seed=ci)


def conv16(h=6, w=7, ic=3, oc=4, k=(3, 3), s=(1, 1), d=(1, 1), pad="SAME", seed=0, per_channel=True,
           bias="int64", bias_type=0, xq=(0.0005, 0), yq=(0.002, 0), act="NONE", groups=1, batch=1):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor((batch, h, w, ic), dtype="int16", scale=xq[0], zp=xq[1])
    fs = list(rng.uniform(0.002, 0.02, oc)) if per_channel else [0.01]
    icf = ic // groups
    wshape = (oc, k[0], k[1], icf)
    wt = b.tensor(wshape, scale=fs, zp=[0] * len(fs), data=rng.integers(-127, 128, wshape))
    ins = [x, wt] + _bias(b, rng, oc, bias, xq[0], fs, 1 << 22)
    oh = out_size(h, k[0], s[0], d[0], pad)
    ow = out_size(w, k[1], s[1], d[1], pad)
    y = b.tensor((batch, oh, ow, oc), dtype="int16", scale=yq[0], zp=yq[1])
    b.op("CONV_2D", ins, [y], "Conv2DOptions", padding=pad, strideH=s[0], strideW=s[1],
         dilationHFactor=d[0], dilationWFactor=d[1], fusedActivationFunction=act,
         quantizedBiasType=bias_type)
    return b.build([x], [y])


CONV_CASES = [dict(), dict(pad="VALID", s=(2, 2)), dict(k=(1, 1), ic=8, oc=16, per_channel=False),
              dict(bias="int32"), dict(bias=None), dict(bias=None, bias_type=INT32),
              dict(d=(2, 2), h=9, w=9), dict(groups=2, ic=4, oc=6),
              dict(act="RELU6", yq=(0.0004, 0)), dict(xq=(0.001, 12), yq=(0.002, -9)),
              dict(k=(5, 3), s=(2, 1), h=8, w=5, batch=2), dict(ic=16, oc=3, k=(3, 3), xq=(0.03, 0))]


@pytest.mark.parametrize("ci", range(len(CONV_CASES)))
def test_conv_16x8(ci):
    check16(conv16(seed=ci, **CONV_CASES[ci]), seed=ci)


# Shapes for the Cortex-M DSP branch (two units per step, four inputs per word pair): k % 4 in
# 0..3, odd and even unit counts (1 too), several rows, every accumulator / bias kind, and a
# non-zero input zero point (which keeps the portable loop). (rows, k, n, kwargs)
DSP_FC = [(1, 16, 8, {}), (3, 33, 5, dict(per_channel=False)), (2, 64, 10, dict(bias="int32")),
          (1, 22, 1, dict(bias=None)), (1, 23, 3, dict(bias=None, bias_type=INT32)),
          (2, 300, 7, dict(act="RELU", yq=(0.01, 0))), (4, 12, 6, dict(xq=(0.001, 7), yq=(0.002, -5))),
          (1, 4, 2, dict(bias="int32", per_channel=False, yq=(0.00002, 0))), (1, 3, 2, {})]


def dsp_fc_model() -> bytes:
    """Every DSP_FC layer on its own input, in one model (one firmware build)."""
    rng = np.random.default_rng(21)
    b = ModelBuilder()
    xs, ys = [], []
    for rows, k, n, kw in DSP_FC:
        xq, yq = kw.get("xq", (0.0005, 0)), kw.get("yq", (0.001, 0))
        x = b.tensor((rows, k), dtype="int16", scale=xq[0], zp=xq[1])
        fs = list(rng.uniform(0.002, 0.02, n)) if kw.get("per_channel", True) else [0.01]
        w = b.tensor((n, k), scale=fs, zp=[0] * len(fs), data=rng.integers(-127, 128, (n, k)))
        ins = [x, w] + _bias(b, rng, n, kw.get("bias", "int64"), xq[0], fs, 1 << 20)
        y = b.tensor((rows, n), dtype="int16", scale=yq[0], zp=yq[1])
        b.op("FULLY_CONNECTED", ins, [y], "FullyConnectedOptions",
             fusedActivationFunction=kw.get("act", "NONE"), quantizedBiasType=kw.get("bias_type", 0))
        xs.append(x)
        ys.append(y)
    return b.build(xs, ys)


def test_fully_connected_16x8_dsp_cortex_m4():
    """The #if TE_DSP branch (SMLALD / SMLAD, two units at a time) under QEMU on a Cortex-M4
    equals TFLM on 8 inputs per layer, the int16 extremes first; the host runs the portable
    loops on the same model and equals TFLM too."""
    model = dsp_fc_model()
    cm = te.convert(model)
    src = cm.sources[f"{cm.prefix}.c"]
    assert src.count("te16_dot2_wide(") >= 5 and src.count("te16_dot2(") >= 2
    xs = [int16_inputs(sample_shape((rows, k)), 8, seed=40 + i)
          for i, (rows, k, n, kw) in enumerate(DSP_FC)]
    from reference import _as_list, _assert_same, tflm_run
    ref = _as_list(tflm_run(model, xs))
    _assert_same(_as_list(cm.run(xs)), ref)
    _assert_same(_as_list(cm.run(xs, target="cortex-m4")), ref)


# CONV_2D shapes for the DSP branch (one group, >= 4 input channels; groups 2 and 3 channels
# keep the portable loop): channel counts % 4 in 0..3, odd output channels, padding, strides,
# dilation, every accumulator / bias kind, an input zero point (TFLM's int16 conv ignores it).
DSP_CONV = [dict(ic=8, oc=5), dict(k=(1, 1), ic=16, oc=6, per_channel=False),
            dict(pad="VALID", s=(2, 2), ic=5, oc=4, bias="int32"), dict(d=(2, 2), h=9, w=9, ic=6, oc=3, bias=None),
            dict(ic=7, oc=2, bias=None, bias_type=INT32), dict(ic=4, oc=4, xq=(0.001, 12), yq=(0.002, -9)),
            dict(k=(5, 3), s=(2, 1), h=8, w=5, batch=2, ic=12, oc=3), dict(groups=2, ic=8, oc=4),
            dict(ic=3, oc=4), dict(ic=16, oc=7, act="RELU6", yq=(0.0004, 0))]


def dsp_conv_model() -> bytes:
    """Every DSP_CONV layer on its own input, in one model (one firmware build)."""
    rng = np.random.default_rng(22)
    b = ModelBuilder()
    xs, ys = [], []
    for kw in DSP_CONV:
        p = dict(h=6, w=7, ic=3, oc=4, k=(3, 3), s=(1, 1), d=(1, 1), pad="SAME", per_channel=True,
                 bias="int64", bias_type=0, xq=(0.0005, 0), yq=(0.002, 0), act="NONE", groups=1,
                 batch=1)
        p.update(kw)
        x = b.tensor((p["batch"], p["h"], p["w"], p["ic"]), dtype="int16", scale=p["xq"][0],
                     zp=p["xq"][1])
        fs = list(rng.uniform(0.002, 0.02, p["oc"])) if p["per_channel"] else [0.01]
        wshape = (p["oc"], *p["k"], p["ic"] // p["groups"])
        wt = b.tensor(wshape, scale=fs, zp=[0] * len(fs), data=rng.integers(-127, 128, wshape))
        ins = [x, wt] + _bias(b, rng, p["oc"], p["bias"], p["xq"][0], fs, 1 << 22)
        oh = out_size(p["h"], p["k"][0], p["s"][0], p["d"][0], p["pad"])
        ow = out_size(p["w"], p["k"][1], p["s"][1], p["d"][1], p["pad"])
        y = b.tensor((p["batch"], oh, ow, p["oc"]), dtype="int16", scale=p["yq"][0], zp=p["yq"][1])
        b.op("CONV_2D", ins, [y], "Conv2DOptions", padding=p["pad"], strideH=p["s"][0],
             strideW=p["s"][1], dilationHFactor=p["d"][0], dilationWFactor=p["d"][1],
             fusedActivationFunction=p["act"], quantizedBiasType=p["bias_type"])
        xs.append(x)
        ys.append(y)
    return b.build(xs, ys)


def test_conv_16x8_dsp_cortex_m4():
    """CONV_2D's #if TE_DSP branch under QEMU on a Cortex-M4 equals TFLM on 6 inputs per
    layer, the int16 extremes first (and the host's portable loops too)."""
    model = dsp_conv_model()
    cm = te.convert(model)
    assert cm.sources[f"{cm.prefix}.c"].count("#if TE_DSP") == 8
    from reference import _as_list, _assert_same, tflm_run
    xs = [int16_inputs(sample_shape(cm.graph.t(i).shape), 6, seed=60 + k)
          for k, i in enumerate(cm.graph.inputs)]
    ref = _as_list(tflm_run(model, xs))
    _assert_same(_as_list(cm.run(xs)), ref)
    _assert_same(_as_list(cm.run(xs, target="cortex-m4")), ref)


def test_16x8_clean_under_sanitizers():
    for model, shape in ((conv16(bias="int64"), (6, 7, 3)), (fc16(2, 24, 5, bias="int32"), (2, 24))):
        assert_sanitized_matches_tflm(te.convert(model), model, int16_inputs(shape, 6), layer=0)


def test_16x8_refusals():
    b = ModelBuilder()
    x = b.tensor((1, 8), dtype="int16", scale=0.001, zp=0)
    w = b.tensor((4, 8), dtype="int16", scale=0.01, zp=0, data=np.ones((4, 8)))
    y = b.tensor((1, 4), dtype="int16", scale=0.01, zp=0)
    b.op("FULLY_CONNECTED", [x, w], [y], "FullyConnectedOptions")
    assert_unsupported(b.build([x], [y]), "FULLY_CONNECTED", "int8 weights")
    assert_unsupported(fc16(1, 8, 4, xq=(1.0, 0), yq=(1e-9, 0)), "FULLY_CONNECTED", "shift")


def dw16(h=6, w=7, ic=3, mult=1, k=(3, 3), s=(1, 1), d=(1, 1), pad="SAME", seed=0, per_channel=True,
         bias=True, xq=(0.0005, 0), yq=(0.002, 0), act="NONE", batch=1):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    oc = ic * mult
    x = b.tensor((batch, h, w, ic), dtype="int16", scale=xq[0], zp=xq[1])
    fs = list(rng.uniform(0.002, 0.02, oc)) if per_channel else [0.01]
    wshape = (1, k[0], k[1], oc)
    wt = b.tensor(wshape, scale=fs, zp=[0] * len(fs), data=rng.integers(-127, 128, wshape), qdim=3)
    ins = [x, wt] + (_bias(b, rng, oc, "int64", xq[0], fs, 1 << 22) if bias else [])
    oh = out_size(h, k[0], s[0], d[0], pad)
    ow = out_size(w, k[1], s[1], d[1], pad)
    y = b.tensor((batch, oh, ow, oc), dtype="int16", scale=yq[0], zp=yq[1])
    b.op("DEPTHWISE_CONV_2D", ins, [y], "DepthwiseConv2DOptions", padding=pad, strideH=s[0],
         strideW=s[1], dilationHFactor=d[0], dilationWFactor=d[1], depthMultiplier=mult,
         fusedActivationFunction=act)
    return b.build([x], [y])


DW_CASES = [dict(), dict(pad="VALID", s=(2, 2)), dict(mult=2, per_channel=False), dict(bias=False),
            dict(d=(2, 2), h=9, w=9), dict(act="RELU", yq=(0.0004, 0)),
            dict(xq=(0.001, 12), yq=(0.002, -9)), dict(k=(5, 3), s=(2, 1), h=8, w=5, batch=2, ic=5),
            dict(ic=8, mult=3, xq=(0.03, 0))]


@pytest.mark.parametrize("ci", range(len(DW_CASES)))
def test_depthwise_16x8(ci):
    check16(dw16(seed=ci, **DW_CASES[ci]), seed=ci)


def test_depthwise_16x8_sanitized_and_int32_bias_refused():
    model = dw16(mult=2)
    assert_sanitized_matches_tflm(te.convert(model), model, int16_inputs((6, 7, 3), 6), layer=0)
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 2), dtype="int16", scale=0.001, zp=0)
    wt = b.tensor((1, 3, 3, 2), scale=[0.01, 0.02], zp=[0, 0], data=rng.integers(-127, 128, (1, 3, 3, 2)), qdim=3)
    bias = b.tensor((2,), dtype="int32", scale=[1e-5, 2e-5], zp=[0, 0], data=[5, 7])
    y = b.tensor((1, 4, 4, 2), dtype="int16", scale=0.002, zp=0)
    b.op("DEPTHWISE_CONV_2D", [x, wt, bias], [y], "DepthwiseConv2DOptions", padding="SAME",
         strideH=1, strideW=1, depthMultiplier=1)
    assert_unsupported(b.build([x], [y]), "DEPTHWISE_CONV_2D", "int64")


def test_planner_counts_two_byte_elements():
    """One 16x8 conv: its input and output are both live, at 2 bytes per element."""
    cm = te.convert(conv16())
    live = 2 * (6 * 7 * 3 + 6 * 7 * 4)
    assert live <= cm.peak_sram <= live + 32
    assert cm.memory_report().lower_bound == cm.peak_sram
