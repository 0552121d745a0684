"""TRANSPOSE_CONV on int8 against TFLite Micro: strides, kernels, SAME/VALID, output sizes TFLM
accepts, per-channel and per-tensor filters, biases, activations, batches; footprint; sanitizers."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_sanitized_matches_tflm, assert_unsupported, compile_and_check,
                       int8_inputs)
from tflite_builder import ModelBuilder, bias_scale


def tconv_model(p):
    rng = np.random.default_rng(p["seed"])
    b = ModelBuilder()
    n, h, w, ic = p["in"]
    oc, kh, kw = p["oc"], p["k"][0], p["k"][1]
    oh, ow = p["out"]
    x = b.tensor((n, h, w, ic), scale=p["xs"], zp=p["xzp"])
    shape = b.tensor((4,), dtype="int32", data=[n, oh, ow, oc])
    fs = list(rng.uniform(0.002, 0.03, oc)) if p["per_channel"] else [0.01]
    wdata = rng.integers(-127, 128, (oc, kh, kw, ic))
    wdata.flat[0] = -127
    wt = b.tensor((oc, kh, kw, ic), scale=fs, zp=[0] * len(fs), data=wdata, qdim=0)
    ins = [shape, wt, x]
    if p["bias"]:
        ins.append(b.tensor((oc,), dtype="int32", scale=bias_scale(p["xs"], np.resize(fs, oc)),
                            zp=[0] * oc, data=rng.integers(-2000, 2000, oc)))
    y = b.tensor((n, oh, ow, oc), scale=p["ys"], zp=p["yzp"])
    b.op("TRANSPOSE_CONV", ins, [y], "TransposeConvOptions", padding=p["pad"], strideH=p["s"][0],
         strideW=p["s"][1], fusedActivationFunction=p.get("act", "NONE"))
    return b.build([x], [y])


def spec(**kw):
    p = dict(seed=0, **{"in": (1, 4, 5, 3)}, oc=4, k=(3, 3), s=(2, 2), pad="SAME", out=(8, 10),
             per_channel=True, bias=True, xs=0.05, xzp=-3, ys=0.1, yzp=5)
    p.update(kw)
    return p


def _out(n, k, s, pad):
    """Output sizes TFLite's converter gives: SAME n*s, VALID (n-1)*s + k."""
    return n * s if pad == "SAME" else (n - 1) * s + k


def random_specs(count):
    rng = np.random.default_rng(1234)
    out = []
    for i in range(count):
        h, w, ic = (int(v) for v in rng.integers(1, 6, 3))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        pad = ["SAME", "VALID"][i % 2]
        oh, ow = _out(h, kh, sh, pad), _out(w, kw, sw, pad)
        if i % 5 == 4:  # an output size TFLM accepts but the converter would not produce
            oh += 1
        out.append(spec(seed=i, **{"in": (1 + (i % 7 == 3), h, w, ic)}, oc=int(rng.integers(1, 7)),
                        k=(kh, kw), s=(sh, sw), pad=pad, out=(oh, ow), per_channel=bool(i % 3),
                        bias=bool(i % 4 != 1), xs=float(10 ** rng.uniform(-2.5, -0.5)),
                        xzp=int(rng.integers(-128, 128)), ys=float(10 ** rng.uniform(-2, 0)),
                        yzp=int(rng.integers(-128, 128)), act=["NONE", "RELU", "RELU6"][i % 3]))
    return out


@pytest.mark.parametrize("p", random_specs(30), ids=lambda p: f"s{p['seed']}")
def test_matches_tflm(p):
    model = tconv_model(p)
    n = p["in"]
    xs = int8_inputs(n[1:], 20, seed=p["seed"]) if n[0] == 1 else int8_inputs(n, 20, seed=p["seed"])
    cm = te.convert(model)
    from reference import assert_matches_tflm, check_footprints
    assert_matches_tflm(cm, model, xs)
    check_footprints(cm)


@pytest.mark.parametrize("k,s,pad,out", [((2, 2), (2, 2), "SAME", (8, 10)), ((3, 3), (1, 1), "SAME", (4, 5)),
                                         ((4, 4), (2, 2), "VALID", (10, 12)), ((1, 1), (3, 3), "VALID", (10, 13)),
                                         ((5, 3), (2, 1), "SAME", (8, 5))])
def test_typical_upsampling_layers(k, s, pad, out):
    compile_and_check(tconv_model(spec(k=k, s=s, pad=pad, out=out)))


def test_clean_under_sanitizers():
    p = spec(per_channel=False, xzp=-128, act="RELU")
    model = tconv_model(p)
    assert_sanitized_matches_tflm(te.convert(model), model, int8_inputs((4, 5, 3), 6), layer=0)


def test_refusals():
    b = ModelBuilder()
    x = b.tensor((1, 4, 5, 3), scale=0.05, zp=0)
    shape = b.tensor((4,), dtype="int32", data=[1, 8, 10, 4])
    wt = b.tensor((4, 3, 3, 3), scale=0.01, zp=0)  # not a constant
    y = b.tensor((1, 8, 10, 4), scale=0.1, zp=0)
    b.op("TRANSPOSE_CONV", [shape, wt, x], [y], "TransposeConvOptions", padding="SAME", strideH=2,
         strideW=2)
    assert_unsupported(b.build([x, wt], [y]), "TRANSPOSE_CONV", "constant")
    assert_unsupported(tconv_model(spec(s=(0, 2))), "TRANSPOSE_CONV", "strides")


# -- 16x8 -------------------------------------------------------------------------------------

def tconv16_model(p, bias_dtype="int64"):
    rng = np.random.default_rng(p["seed"])
    b = ModelBuilder()
    n, h, w, ic = p["in"]
    oc, (kh, kw), (oh, ow) = p["oc"], p["k"], p["out"]
    x = b.tensor((n, h, w, ic), dtype="int16", scale=p["xs"], zp=p["xzp"])
    shape = b.tensor((4,), dtype="int32", data=[n, oh, ow, oc])
    fs = list(rng.uniform(0.002, 0.03, oc)) if p["per_channel"] else [0.01]
    wt = b.tensor((oc, kh, kw, ic), scale=fs, zp=[0] * len(fs),
                  data=rng.integers(-127, 128, (oc, kh, kw, ic)), qdim=0)
    ins = [shape, wt, x]
    if p["bias"]:
        bound = 30000 if bias_dtype == "int16" else 1 << 24
        ins.append(b.tensor((oc,), dtype=bias_dtype, scale=bias_scale(p["xs"], np.resize(fs, oc)),
                            zp=[0] * oc, data=rng.integers(-bound, bound, oc)))
    y = b.tensor((n, oh, ow, oc), dtype="int16", scale=p["ys"], zp=p["yzp"])
    b.op("TRANSPOSE_CONV", ins, [y], "TransposeConvOptions", padding=p["pad"], strideH=p["s"][0],
         strideW=p["s"][1], fusedActivationFunction=p.get("act", "NONE"))
    return b.build([x], [y])


@pytest.mark.parametrize("k", range(8))
def test_matches_tflm_16x8(k):
    p = random_specs(8)[k]
    p.update(xs=p["xs"] / 200, ys=p["ys"] / 100, xzp=0 if k % 3 else 9, yzp=0)
    model = tconv16_model(p, bias_dtype=["int64", "int16"][k % 2])
    shape = p["in"][1:] if p["in"][0] == 1 else p["in"]
    rng = np.random.default_rng(k)
    x = rng.integers(-32768, 32768, (10, *shape)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    from reference import assert_matches_tflm, check_footprints
    cm = te.convert(model)
    assert_matches_tflm(cm, model, x)
    check_footprints(cm)
    if k == 2:
        assert_sanitized_matches_tflm(cm, model, x[:3], layer=0)
