"""UNIDIRECTIONAL_SEQUENCE_LSTM int8 (int16 cell state) over sequences, against one TFLM
interpreter kept across invocations.

Two sources of models:
- exported from tf_keras LSTM layers (batch 1, return_sequences True and False, then the
  converter's STRIDED_SLICE; one through te.convert's own Keras converter, with a Dense after
  it), quantized in a subprocess (TensorFlow's calibrator can take the
  whole process down on LSTMs) and cached on disk by the export script's hash;
- one hand-built model with what the converter never emits: batch 2 batch-major, time major,
  no cell clip and a cell clip that saturates, cell scales 2^-10 / 2^-11 / 2^-12 (the exports
  have 2^-15), non-zero weight zero points, one LSTM stacked on another.
Every model runs >= 25 invocations (all -128, all 127, alternating extremes, then random) with
the state carried across them, then again after reset() on both sides.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_carries_state_and_resets, check_footprints, int8_inputs,
                       sanitized_run, TFLMSequence, _as_list, _assert_same)
from tflite_builder import ModelBuilder
from tinyengine_tf import toolchain

N_STEPS = 25

EXPORT = r'''
import sys
import numpy as np
import tensorflow as tf
import tf_keras as keras

def export(path, steps, features, units, return_sequences, seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(steps, features), batch_size=1)
    out = keras.layers.LSTM(units, return_sequences=return_sequences)(inp)
    model = keras.Model(inp, out)
    fn = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec([1, steps, features], tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(seed)
    conv.representative_dataset = lambda: (
        [rng.uniform(-1, 1, (1, steps, features)).astype(np.float32)] for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    open(path, "wb").write(conv.convert())

class Accumulate(tf.Module):
    """A tf.Variable carried across calls: y = relu(v + x); v = (v + x) / 2."""
    def __init__(self):
        super().__init__()
        self.v = tf.Variable(tf.fill([1, 8], 0.25), name="acc")

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def __call__(self, x):
        y = self.v + x
        self.v.assign(y * 0.5)
        return tf.nn.relu(y)

def export_variable(path, quantize_variable):
    m = Accumulate()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(2)
    conv.representative_dataset = lambda: (
        [rng.uniform(-1, 1, (1, 8)).astype(np.float32)] for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv.experimental_enable_resource_variables = True
    conv._experimental_variable_quantization = quantize_variable
    open(path, "wb").write(conv.convert())

def export_api(path):
    """Through tinyengine-tf's own Keras converter (what te.convert(keras_model) runs)."""
    sys.path.insert(0, sys.argv[2])
    from converters.keras_to_tflite import keras_to_tflite
    keras.utils.set_random_seed(2)
    inp = keras.Input(shape=(4, 3), batch_size=1)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.LSTM(6)(inp)))
    rng = np.random.default_rng(2)
    open(path, "wb").write(keras_to_tflite(model, rng.uniform(-1, 1, (16, 4, 3)).astype(np.float32)))

out = sys.argv[1]
export_api(out + "/api.tflite")
export(out + "/seq.tflite", 3, 4, 5, True, 0)
export(out + "/last.tflite", 2, 6, 8, False, 1)
export_variable(out + "/var_float.tflite", False)
export_variable(out + "/var_int8.tflite", True)
'''
# name -> per-invocation input shape (T, F); "api" goes through converters/keras_to_tflite.py
KERAS_MODELS = {"seq": (3, 4), "last": (2, 6), "api": (4, 3)}
TF_VARIABLE_MODELS = ("var_float", "var_int8")       # input (8,)


def tf_state_models() -> dict:
    """Every model EXPORT writes, exported once per script version (cached on disk)."""
    root = Path(__file__).resolve().parents[1]
    key = hashlib.sha256(EXPORT.encode() + (root / "converters" / "keras_to_tflite.py").read_bytes()
                         ).hexdigest()[:16]
    where = toolchain.cache_dir() / f"keras_lstm_{key}"
    names = list(KERAS_MODELS) + list(TF_VARIABLE_MODELS)
    if not all((where / f"{n}.tflite").exists() for n in names):
        where.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-c", EXPORT, str(where), str(root)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {n: (where / f"{n}.tflite").read_bytes() for n in names}


@pytest.fixture(scope="module")
def keras_lstms() -> dict:
    return tf_state_models()


def _lstm(b, rng, x, x_scale, batch, steps, n_in, units, time_major, cell_scale, cell_clip,
          h_scale, h_zp, w_zp=0, w_scale=0.006):
    """One hand-built LSTM layer on x ([B, T, I], or [T, B, I] time major)."""
    ins = [x]
    for k in range(8):
        shape = (units, n_in) if k < 4 else (units, units)
        ins.append(b.tensor(shape, scale=w_scale * (1 + 0.1 * k), zp=w_zp,
                            data=rng.integers(-127, 128, shape)))
    ins += [-1, -1, -1]
    for k in range(4):
        ins.append(b.tensor((units,), dtype="int32", scale=x_scale * w_scale, zp=0,
                            data=rng.integers(-3000, 3000, units)))
    ins += [-1, -1]
    h = b.tensor((batch, units), scale=h_scale, zp=h_zp)
    c = b.tensor((batch, units), dtype="int16", scale=cell_scale, zp=0)
    b.tensors[h].isVariable = True
    b.tensors[c].isVariable = True
    ins += [h, c, -1, -1, -1, -1]
    y_shape = (steps, batch, units) if time_major else (batch, steps, units)
    y = b.tensor(y_shape, scale=h_scale, zp=h_zp)
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y], "UnidirectionalSequenceLSTMOptions",
         fusedActivationFunction="TANH", cellClip=cell_clip, timeMajor=time_major)
    return y


HAND_INPUTS = [(2, 4, 3), (3, 2, 5)]


def hand_lstm_model() -> bytes:
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x1 = b.tensor((2, 4, 3), scale=0.02, zp=-7)     # batch 2, 4 steps, batch-major
    x2 = b.tensor((3, 2, 5), scale=0.03, zp=6)      # 3 steps, batch 2, time major
    y1 = _lstm(b, rng, x1, 0.02, batch=2, steps=4, n_in=3, units=4, time_major=False,
               cell_scale=2.0 ** -11, cell_clip=0.0, h_scale=0.007, h_zp=5, w_zp=3)
    y2 = _lstm(b, rng, x2, 0.03, batch=2, steps=3, n_in=5, units=3, time_major=True,
               cell_scale=2.0 ** -12, cell_clip=1.5, h_scale=0.008, h_zp=-4)
    # Stacked on the first: 16 units, cell scale 2^-10 (tanh input scaled by 12).
    y3 = _lstm(b, rng, y1, 0.007, batch=2, steps=4, n_in=4, units=16, time_major=False,
               cell_scale=2.0 ** -10, cell_clip=0.0, h_scale=0.01, h_zp=0, w_scale=0.02)
    return b.build(inputs=[x1, x2], outputs=[y1, y2, y3])


def _sequence_check(cm, data, shapes, seed=0):
    """N_STEPS invocations carried over, 5 more, then reset() and the 5 again, each compared."""
    xs = [int8_inputs(s, N_STEPS, seed=seed + k) for k, s in enumerate(shapes)]
    more = [int8_inputs(s, 5, seed=seed + 10 + k, extremes=False) for k, s in enumerate(shapes)]
    assert_carries_state_and_resets(cm, data, xs if len(xs) > 1 else xs[0],
                                    more if len(more) > 1 else more[0])


@pytest.fixture(scope="module")
def hand_model():
    data = hand_lstm_model()
    return data, te.convert(data, name="lstm_hand")


def test_hand_lstm_sequences_match_tflm(hand_model):
    data, cm = hand_model
    check_footprints(cm)   # the shape-only Flash / scratch equal what each layer emits
    _sequence_check(cm, data, HAND_INPUTS)
    # int8 hidden (2*4, 2*3, 2*16 bytes) and int16 cell (2*4*2, 2*3*2, 2*16*2) states,
    # 16-byte aligned each.
    assert cm.state_bytes == 4 * 16 + 32 + 64
    assert cm.peak_sram > 0


def test_hand_lstm_sanitized(hand_model):
    data, cm = hand_model
    xs = [int8_inputs(s, 20, seed=3 + k) for k, s in enumerate(HAND_INPUTS)]
    _assert_same(sanitized_run(cm, xs), _as_list(TFLMSequence(data).run(xs)))


@pytest.mark.parametrize("name", sorted(KERAS_MODELS))
def test_keras_lstm_sequences_match_tflm(keras_lstms, name):
    data = keras_lstms[name]
    cm = te.convert(data, name=f"lstm_{name}")
    assert cm.graph.op_counts().get("UNIDIRECTIONAL_SEQUENCE_LSTM") == 1
    _sequence_check(cm, data, [KERAS_MODELS[name]], seed=20)
    # State is the int8 hidden and int16 cell vectors, outside the arena.
    units = cm.graph.t(cm.graph.ops[0].inputs[18]).numel
    assert cm.state_bytes == (units + 15) // 16 * 16 + (2 * units + 15) // 16 * 16


def test_lstm_refusals(hand_model):
    data, _ = hand_model
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    import flatbuffers

    def edited(fn):
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        fn(m)
        fb = flatbuffers.Builder(1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    def cifg(m):
        op = m.subgraphs[0].operators[0]
        op.inputs = [-1 if k == 1 else int(i) for k, i in enumerate(op.inputs)]
    with pytest.raises(te.UnsupportedOpError, match=r"UNIDIRECTIONAL_SEQUENCE_LSTM \(op #0\).*CIFG"):
        te.convert(edited(cifg))

    def relu_cell(m):
        m.subgraphs[0].operators[1].builtinOptions.fusedActivationFunction = 1
    with pytest.raises(te.UnsupportedOpError, match=r"\(op #1\).*cell activation RELU"):
        te.convert(edited(relu_cell))


def test_hand_lstm_cortex_m4_sequence(hand_model):
    """The same sequence built for Cortex-M4 and run under QEMU: the state carries over from
    one invocation to the next inside the firmware, as in TFLM."""
    data, cm = hand_model
    xs = [int8_inputs(s, 20, seed=30 + k) for k, s in enumerate(HAND_INPUTS)]
    _assert_same(_as_list(cm.run(xs, target="cortex-m4")), _as_list(TFLMSequence(data).run(xs)))


def test_keras_lstm_sanitized(keras_lstms):
    """The exported LSTM (cell scale 2^-15: tanh's rounding-shift path) under ASan + UBSan."""
    data = keras_lstms["seq"]
    cm = te.convert(data, name="lstm_seq")
    xs = int8_inputs(KERAS_MODELS["seq"], 20, seed=40)
    _assert_same(sanitized_run(cm, xs), _as_list(TFLMSequence(data).run(xs)))
