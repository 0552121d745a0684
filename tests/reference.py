"""The judge: run a model through the TFLite Micro interpreter (pip package tflite-micro)."""
from __future__ import annotations

import numpy as np

from tflite_micro.python.tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema


def tflm_run(model: bytes, inputs):
    """inputs: one array per model input, each (N, *tensor_shape[1:]) or a single array.

    Returns one array per output (a single array if the model has one output), each with the
    same leading batch axis N.
    """
    interp = runtime.Interpreter.from_bytes(bytes(model), arena_size=max(len(model) * 20, 1 << 20))
    xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    n_out = schema.Model.GetRootAsModel(bytes(model), 0).Subgraphs(0).OutputsLength()
    n = xs[0].shape[0]
    outs = [[] for _ in range(n_out)]
    for i in range(n):
        for k, x in enumerate(xs):
            shape = interp.get_input_details(k)["shape"]
            interp.set_input(np.ascontiguousarray(x[i]).reshape(shape), k)
        interp.invoke()
        for j in range(n_out):
            outs[j].append(np.array(interp.get_output(j)))
    res = [np.stack(o).reshape((n, *o[0].shape[1:])) if o[0].ndim > 1 and o[0].shape[0] == 1
           else np.stack(o) for o in outs]
    return res[0] if n_out == 1 else res


def int8_inputs(shape, n, seed=0, extremes=True):
    """n random int8 samples; the first ones are all -128, all 127 and alternating extremes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape), dtype=np.int64).astype(np.int8)
    if extremes and n >= 3:
        x[0] = -128
        x[1] = 127
        x[2].flat[::2] = -128
        x[2].flat[1::2] = 127
    return x


def assert_matches_tflm(cm, model_bytes, xs):
    """cm.run equals TFLM on every sample; on mismatch, say where and by how much."""
    ours = cm.run(xs)
    ref = tflm_run(model_bytes, xs)
    ours_l = ours if isinstance(ours, list) else [ours]
    ref_l = ref if isinstance(ref, list) else [ref]
    for k, (a, b) in enumerate(zip(ours_l, ref_l)):
        a = np.asarray(a).reshape(b.shape)
        if not np.array_equal(a, b):
            bad = np.argwhere(a != b)
            first = tuple(bad[0])
            raise AssertionError(
                f"output {k}: {len(bad)} of {a.size} values differ from TFLite Micro; first at "
                f"{first}: ours {a[first]} vs TFLM {b[first]}; max |diff| "
                f"{np.abs(a.astype(np.int64) - b.astype(np.int64)).max()}")
    return ours
