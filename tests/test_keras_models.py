"""End to end on >= 50 seeded random Keras models (Keras 3 and tf_keras): Keras -> int8 .tflite
-> tinyengine_tf C, bit-exact with TFLite Micro on random and extreme inputs.

The zoo is converted once per session in this process (tests/keras_zoo.py caches the .tflite
bytes on disk under a key covering the zoo, the converter and the TF/Keras versions), so only the
first run imports TensorFlow.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

import keras_zoo
import tinyengine_tf as te
from reference import int8_inputs, tflm_run

SAMPLES = 24
ZOO = keras_zoo.zoo()


@pytest.fixture(scope="module")
def zoo_tflite():
    return keras_zoo.zoo_tflite(ZOO)


def _inputs(cm, seed):
    """int8_inputs per model input (the first samples are all -128, all 127, alternating)."""
    xs = [int8_inputs(_sample_shape(d["shape"]), SAMPLES, seed=seed + k)
          for k, d in enumerate(cm.input_details)]
    return xs[0] if len(xs) == 1 else xs


def _sample_shape(shape):
    return tuple(shape[1:]) if len(shape) > 1 and shape[0] == 1 else tuple(shape)


def _compile(data, name):
    try:
        return te.convert(data, name=name)
    except te.UnsupportedOpError as exc:
        if exc.op_kind is None or exc.op_kind in te.supported_ops():
            raise  # the kernel exists but rejects this configuration: a real gap
        missing = exc
    pytest.fail(f"no kernel for {missing.op_kind} yet: {missing}", pytrace=False)


@pytest.mark.parametrize("model", ZOO, ids=[m.name for m in ZOO])
def test_keras_model_matches_tflm(model, zoo_tflite):
    data = zoo_tflite[model.name]
    if isinstance(data, Exception):
        raise data
    cm = _compile(data, model.name.split("_")[0])
    xs = _inputs(cm, seed=model.seed)
    ours = cm.run(xs)
    ref = tflm_run(data, xs)
    ours_l = ours if isinstance(ours, list) else [ours]
    ref_l = ref if isinstance(ref, list) else [ref]
    assert len(ours_l) == len(ref_l)
    for k, (a, b) in enumerate(zip(ours_l, ref_l)):
        a = np.asarray(a).reshape(b.shape)
        bad = np.argwhere(a != b)
        assert bad.size == 0, (
            f"output {k}: {len(bad)} of {a.size} values differ from TFLite Micro; first at sample "
            f"{bad[0][0]} index {tuple(bad[0][1:])}: ours {a[tuple(bad[0])]} vs TFLM {b[tuple(bad[0])]}; "
            f"ops {[op.kind for op in cm.source_graph.ops]}")


def _op_kinds(zoo_tflite):
    from converters.tflite_reader import read_tflite
    kinds = {}
    for m in ZOO:
        data = zoo_tflite[m.name]
        if not isinstance(data, Exception):
            kinds[m.name] = [op.kind for op in read_tflite(data).ops]
    return kinds


def test_zoo_covers_the_layers_it_promises(zoo_tflite):
    """The seeded plans still produce every TFLite op the suite is meant to exercise."""
    assert len(ZOO) >= 50
    assert len({m.name for m in ZOO}) == len(ZOO)
    backends = collections.Counter(m.backend for m in ZOO)
    assert backends["keras"] >= 25 and backends["tf_keras"] >= 10, backends
    features = {t for m in ZOO for t in m.features}
    for kernel in range(1, 8):
        assert any(t.startswith(f"conv{kernel}x{kernel}") for t in features), kernel
    for needed in ("same", "valid", "s2", "d2", "m1", "m2"):
        assert any(needed in t for t in features if t.startswith(("conv", "dw"))), needed
    assert any(t.startswith("dw") and "s2same" in t for t in features)
    for needed in ("bn", "relulayer", "relu6layer", "hard_swish", "sigmoid", "add", "mul",
                   "mul_broadcast", "avgpool", "maxpool", "zeropad", "concat", "flatten", "gap",
                   "softmax", "reshape", "two_inputs"):
        assert any(needed in t for t in features), needed
    for head in ("flatten", "gap"):  # Dense after each
        assert any(m.features[m.features.index(head) + 1:][:1] == ["dense"] for m in ZOO
                   if head in m.features), head
    kinds = _op_kinds(zoo_tflite)
    seen = collections.Counter(k for ks in kinds.values() for k in set(ks))
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D",
               "MEAN", "PAD", "CONCATENATION", "FULLY_CONNECTED", "SOFTMAX", "LOGISTIC",
               "HARD_SWISH", "RESHAPE"):
        assert seen[op] >= 1, f"no zoo model converts to {op}: {dict(seen)}"


def test_batchnorm_and_dilation_fold_into_convolutions(zoo_tflite):
    """BatchNormalization folds into the conv before it and dilated convs stay one op: a model
    whose only arithmetic layers are convs/depthwise/BN/activations converts to no ADD or MUL."""
    kinds = _op_kinds(zoo_tflite)
    checked = 0
    for m in ZOO:
        tags = set(m.features)
        if m.name not in kinds or not any(t == "bn" or "d2" in t for t in tags):
            continue
        if tags & {"add", "mul", "mul_broadcast"}:
            continue
        checked += 1
        leftover = [k for k in kinds[m.name] if k in ("ADD", "MUL", "SPACE_TO_BATCH_ND",
                                                      "BATCH_TO_SPACE_ND")]
        assert not leftover, f"{m.name}: {leftover} left in {kinds[m.name]}"
    assert checked >= 5
