"""converters/keras_to_tflite.py through te.convert(): Keras 3, tf_keras, QAT and SavedModel inputs,
the representative-dataset forms it accepts, and the errors it raises."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinyengine_tf as te
from conftest import ROOT
from converters.keras_to_tflite import ConversionError, import_tensorflow, keras_to_tflite
from reference import int8_inputs, tflm_run

tf = import_tensorflow()  # quietly, before Keras imports it
import keras  # noqa: E402
import tf_keras  # noqa: E402

SHAPE = (12, 12, 3)
BACKENDS = {"keras3": keras, "tf_keras": tf_keras}


def _small_model(kl, seed=0):
    """conv + BN + depthwise + GAP + dense + softmax: one of each family the converter folds."""
    kl.utils.set_random_seed(seed)
    L = kl.layers
    inp = kl.Input(SHAPE)
    x = L.Conv2D(6, 3, strides=2, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(5)(x)
    return kl.Model(inp, L.Softmax()(x))


def _data(n=16, seed=1, shape=SHAPE):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


def _assert_matches_tflm(cm, n=20):
    shapes = [tuple(d["shape"][1:]) for d in cm.input_details]
    xs = [int8_inputs(s, n, seed=k) for k, s in enumerate(shapes)]
    xs = xs[0] if len(xs) == 1 else xs
    ours, ref = cm.run(xs), tflm_run(cm.tflite, xs)
    for a, b in zip(ours if isinstance(ours, list) else [ours], ref if isinstance(ref, list) else [ref]):
        assert np.array_equal(np.asarray(a).reshape(b.shape), b)


def _int8_io(cm):
    return all(d["dtype"] == "int8" for d in cm.input_details + cm.output_details)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_keras_model_converts_to_int8_and_matches_tflm(backend):
    cm = te.convert(_small_model(BACKENDS[backend]), _data(), name="small")
    assert _int8_io(cm)
    assert tuple(cm.input_details[0]["shape"]) == (1, *SHAPE)
    kinds = [op.kind for op in cm.source_graph.ops]
    assert "CONV_2D" in kinds and "DEPTHWISE_CONV_2D" in kinds
    assert not {"ADD", "MUL"} & set(kinds), f"BatchNormalization was not folded: {kinds}"
    _assert_matches_tflm(cm)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_float_model_without_dataset_says_what_to_pass(backend):
    with pytest.raises(te.QuantizationError) as info:
        te.convert(_small_model(BACKENDS[backend]))
    msg = str(info.value)
    assert "representative_dataset" in msg
    assert "(N, 12, 12, 3)" in msg
    assert "quantize_model" in msg  # the QAT alternative


def test_dataset_forms_give_the_same_model():
    """An array, a list of batches, TF-style generator functions, a generator of (x, y) pairs and a
    tf.data pipeline holding the same samples calibrate identically."""
    model, x = _small_model(keras), _data(12)
    base = keras_to_tflite(model, x)

    def tf_style():
        for i in range(len(x)):
            yield [x[i:i + 1]]

    forms = {
        "list_of_batches": [x[:5], x[5:]],
        "tf_style_function": tf_style,
        "pairs_generator": ((x[i:i + 3], np.zeros(3)) for i in range(0, len(x), 3)),
        "single_samples": [x[i] for i in range(len(x))],
        "tf_data": tf.data.Dataset.from_tensor_slices(x).batch(4),
    }
    for name, form in forms.items():
        assert keras_to_tflite(model, form) == base, name


@pytest.mark.parametrize("bad, expected", [
    (_data(4, shape=(12, 11, 3)), "(4, 12, 11, 3)"),
    ([], "no samples"),
    (np.zeros((0, *SHAPE), np.float32), "no samples"),
    ([["not", "numbers"]], "not numeric"),
    (42, "got a int"),
])
def test_bad_dataset_raises_quantization_error(bad, expected):
    with pytest.raises(te.QuantizationError) as info:
        keras_to_tflite(_small_model(keras), bad)
    assert expected in str(info.value)


def test_two_input_model_keeps_keras_input_order():
    L = keras.layers
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 1))
    x = L.Concatenate()([L.Conv2D(4, 3, padding="same")(a), L.Conv2D(2, 1)(b)])
    model = keras.Model([a, b], L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    data = (_data(8, shape=(8, 8, 3)), _data(8, seed=2, shape=(8, 8, 1)))
    cm = te.convert(model, data)
    assert [tuple(d["shape"]) for d in cm.input_details] == [(1, 8, 8, 3), (1, 8, 8, 1)]
    _assert_matches_tflm(cm)


def test_dilated_conv_and_its_batchnorm_stay_one_conv():
    """A dynamic batch axis would leave SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND and an unfolded BN."""
    for kl in (keras, tf_keras):
        L = kl.layers
        inp = kl.Input((15, 15, 3))
        x = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", dilation_rate=2)(inp))
        x = L.DepthwiseConv2D(3, dilation_rate=2)(x)
        cm = te.convert(kl.Model(inp, x), _data(8, shape=(15, 15, 3)))
        assert [op.kind for op in cm.source_graph.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
        _assert_matches_tflm(cm)


def test_qat_model_needs_no_dataset(tmp_path):
    import tensorflow_model_optimization as tfmot
    tf_keras.utils.set_random_seed(3)
    L = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input(SHAPE), L.Conv2D(6, 3, activation="relu"),
                                 L.DepthwiseConv2D(3), L.ReLU(6.0), L.GlobalAveragePooling2D(),
                                 L.Dense(4)])
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.compile("adam", "mse")
    # one short fit so the fake-quant ranges are real ranges, not their initial values
    qat.fit(_data(32), np.random.default_rng(0).normal(size=(32, 4)), epochs=1, verbose=0)
    cm = te.convert(qat)
    assert _int8_io(cm)
    _assert_matches_tflm(cm)
    tf.saved_model.save(qat, str(tmp_path / "qat"))
    cm2 = te.convert(tmp_path / "qat")
    assert cm2.tflite == cm.tflite or _int8_io(cm2)
    _assert_matches_tflm(cm2)


def test_saved_model_directories(tmp_path):
    k3 = _small_model(keras, seed=4)
    k3.export(str(tmp_path / "k3"), verbose=False)
    cm = te.convert(str(tmp_path / "k3"), _data())
    assert _int8_io(cm)
    _assert_matches_tflm(cm)

    tfk = _small_model(tf_keras, seed=5)
    tf.saved_model.save(tfk, str(tmp_path / "tfk"))
    cm = te.convert(tmp_path / "tfk", list(_data()))
    _assert_matches_tflm(cm)

    with pytest.raises(te.QuantizationError, match="representative_dataset"):
        te.convert(tmp_path / "tfk")


def test_directory_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(te.TinyEngineError, match="not a SavedModel"):
        te.convert(tmp_path)


def test_converter_failure_is_a_tinyengine_error():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: tf.math.real(tf.signal.fft2d(tf.cast(t, tf.complex64))))(inp)
    with pytest.raises(ConversionError) as info:
        te.convert(keras.Model(inp, x), _data(4, shape=(8, 8, 3)))
    assert isinstance(info.value, te.TinyEngineError)
    assert "FFT2D" in str(info.value)


def test_conversion_is_quiet(capfd):
    capfd.readouterr()
    keras_to_tflite(_small_model(keras), _data(4))
    out, err = capfd.readouterr()
    for noise in ("Saved artifact", "fully_quantize", "Statistics for quantized inputs", "I0000"):
        assert noise not in out + err


def test_tflite_input_does_not_import_tensorflow(shared_models):
    path = shared_models / "kws_ref_model.tflite"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import converters.keras_to_tflite  # lazy: importing the converter is free too
        import tinyengine_tf as te
        cm = te.convert({str(path)!r})
        assert len(cm.sources) > 0
        heavy = sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules)
        print("imported:", heavy)
        sys.exit(1 if heavy else 0)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_demo_is_bit_exact_and_saves_a_project(tmp_path, capsys):
    from tinyengine_tf.demo import run_demo
    result = run_demo(tmp_path / "demo", verbose=True)
    printed = capsys.readouterr().out
    assert result["total"] >= 20 and result["equal"] == result["total"], result
    assert {"DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= set(result["ops"])
    assert result["peak_sram"] > 0 and result["c_ms"] > 0 and result["tflm_ms"] > 0
    files = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"Makefile", "demo.c", "demo.h"} <= files
    assert f"{result['equal']}/{result['total']}" in printed and str(tmp_path / "demo") in printed


def _int16x8_model(kl, seed=0):
    """conv (fused ReLU) + conv + flatten + two dense + add: the 16x8 ops compiled so far."""
    kl.utils.set_random_seed(seed)
    L = kl.layers
    inp = kl.Input((8, 8, 2))
    x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    x = L.Conv2D(6, 3, padding="valid")(x)
    a = L.Flatten()(x)
    return kl.Model(inp, L.Add()([L.Dense(5)(a), L.Dense(5, activation="relu")(a)]))


def test_keras_int16x8_matches_tflm():
    """quantization="int16x8": TFLite's 16x8 mode (int16 I/O and activations, int8 weights,
    int64 biases), compiled and equal to TFLM on int16 inputs including the extremes."""
    data = _data(32, shape=(8, 8, 2))
    cm = te.convert(_int16x8_model(keras), data, quantization="int16x8", name="m16")
    assert [d["dtype"] for d in cm.input_details + cm.output_details] == ["int16", "int16"]
    kinds = {op.kind for op in cm.graph.ops}
    assert {"CONV_2D", "FULLY_CONNECTED", "ADD"} <= kinds
    biases = [cm.graph.t(op.inputs[2]).dtype for op in cm.graph.ops
              if op.kind == "CONV_2D" and len(op.inputs) > 2]
    assert biases and set(biases) == {"int64"}
    rng = np.random.default_rng(3)
    x = rng.integers(-32768, 32768, (20, 8, 8, 2)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    x[2:10] = (data[:8] / cm.graph.t(cm.graph.inputs[0]).s).round().clip(-32768, 32767)
    assert np.array_equal(np.asarray(cm.run(x)).reshape(20, -1), tflm_run(cm.tflite, x).reshape(20, -1))


def test_unknown_quantization_is_refused():
    with pytest.raises(te.QuantizationError, match="int16x8"):
        te.convert(_int16x8_model(keras), _data(4, shape=(8, 8, 2)), quantization="int4")


def test_keras_int16x8_ds_cnn_matches_tflm():
    """A DS-CNN-like keyword model in 16x8: conv, depthwise, 1x1 conv, average pool, dense and
    the int16 softmax, equal to TFLM on int16 inputs (extremes first)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((10, 8, 1))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(8, 1, activation="relu")(x)
    x = L.Flatten()(L.AveragePooling2D((5, 4))(x))
    model = keras.Model(inp, L.Softmax()(L.Dense(4)(x)))
    cm = te.convert(model, _data(32, shape=(10, 8, 1)), quantization="int16x8")
    assert [op.kind for op in cm.graph.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D",
                                                "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"]
    rng = np.random.default_rng(4)
    x = rng.integers(-32768, 32768, (20, 10, 8, 1)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    assert np.array_equal(np.asarray(cm.run(x)).reshape(20, -1), tflm_run(cm.tflite, x).reshape(20, -1))
    # The planner counts 2-byte elements: the first conv's input and output live together.
    assert cm.peak_sram >= 2 * (10 * 8 * 1 + 5 * 4 * 8)


def test_keras_int16x8_sigmoid_tanh_matches_tflm():
    """16x8 dense layers with tanh and sigmoid activations: the converter's int16 TANH and
    LOGISTIC (zero points 0, output scale 2^-15), compiled and equal to TFLM."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((12,))
    x = L.Dense(16, activation="tanh")(inp)
    model = keras.Model(inp, L.Dense(6, activation="sigmoid")(x))
    data = _data(32, shape=(12,))
    cm = te.convert(model, data, quantization="int16x8")
    acts = [op for op in cm.graph.ops if op.kind in ("TANH", "LOGISTIC")]
    assert [op.kind for op in acts] == ["TANH", "LOGISTIC"]
    assert all(cm.graph.t(op.inputs[0]).dtype == "int16" for op in acts)
    rng = np.random.default_rng(5)
    x = rng.integers(-32768, 32768, (20, 12)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    x[2:10] = (data[:8] / cm.graph.t(cm.graph.inputs[0]).s).round().clip(-32768, 32767)
    assert np.array_equal(np.asarray(cm.run(x)).reshape(20, -1), tflm_run(cm.tflite, x).reshape(20, -1))
