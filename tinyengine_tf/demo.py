"""The end-to-end demo: a small MobileNet-style Keras model -> int8 -> specialized C, checked
bit for bit against TFLite Micro, timed, and saved as a C project.

    from tinyengine_tf.demo import run_demo
    result = run_demo("demo_out")

Everything is built in place (no downloads): the model has random (seeded) weights and the
calibration images are synthetic, so what the demo shows is the compiler, not accuracy.
TensorFlow/Keras are imported inside run_demo only (importing tinyengine_tf stays TF-free).
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

INPUT_SHAPE = (64, 64, 3)
CLASSES = 10
SEED = 0
CALIBRATION_IMAGES = 64
TEST_IMAGES = 32
# (depthwise stride, pointwise filters, residual) per inverted block after the stem
BLOCKS = ((1, 16, False), (2, 24, False), (1, 24, True), (2, 32, False), (1, 32, True))
STEPS = 6


def _step(k: int, text: str, out=None):
    out = out or sys.stdout
    print(f"[{k}/{STEPS}] {text}", file=out, flush=True)


def build_model(keras=None):
    """A MobileNetV2-flavoured classifier for 64x64x3 images (about 7k parameters)."""
    if keras is None:
        import keras
    keras.utils.set_random_seed(SEED)
    L = keras.layers
    inp = keras.Input(INPUT_SHAPE, name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    for stride, filters, residual in BLOCKS:
        y = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        y = L.Conv2D(filters, 1, use_bias=False)(y)
        y = L.BatchNormalization()(y)
        x = L.Add()([x, y]) if residual else y
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(CLASSES)(x)
    out = L.Softmax()(x)
    model = keras.Model(inp, out, name="demo_mobilenet")
    _spread_batchnorm(model)
    return model


def _spread_batchnorm(model):
    """Untrained BatchNorm layers are identities; give them statistics so folding matters."""
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0, 0.1, beta.shape).astype(np.float32),
                               rng.normal(0, 0.1, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 2.0, var.shape).astype(np.float32)])


def synthetic_images(n: int, seed: int) -> np.ndarray:
    """Smooth random images in [-1, 1]: a few oriented waves plus a little noise per channel."""
    rng = np.random.default_rng(seed)
    h, w, c = INPUT_SHAPE
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    images = np.zeros((n, h, w, c), dtype=np.float32)
    for i in range(n):
        for ch in range(c):
            fx, fy = rng.uniform(0.5, 6, 2)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
            images[i, :, :, ch] = 0.8 * wave + rng.normal(0, 0.1, (h, w))
    return np.clip(images, -1.0, 1.0)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    q = np.round(x / detail["scale"]) + detail["zero_point"]
    return np.clip(q, -128, 127).astype(np.int8)


def _tflm_outputs(tflite: bytes, xs: np.ndarray):
    """TFLite Micro's outputs for every sample, and its seconds per inference."""
    from tflite_micro.python.tflite_micro import runtime
    interp = runtime.Interpreter.from_bytes(bytes(tflite), arena_size=max(len(tflite) * 20, 1 << 20))
    shape = interp.get_input_details(0)["shape"]
    outs = []
    start = time.perf_counter()
    for x in xs:
        interp.set_input(x.reshape(shape), 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(outs), (time.perf_counter() - start) / len(xs)


def _tflm_arena(cm):
    """TFLM's arena for the same model, if this installation can measure it (else None)."""
    try:
        from tinyengine_tf.report import measure_tflm_arena
        return int(measure_tflm_arena(cm.tflite)[0])
    except Exception:  # optional figure: the demo stands without it
        return None


def run_demo(out_dir="demo_out", verbose: bool = True) -> dict:
    """Build, quantize, compile, verify, time and save the demo model; return the figures."""
    import tinyengine_tf as te
    log = sys.stdout if verbose else io.StringIO()
    t_start = time.perf_counter()
    try:
        _step(1, "building a MobileNet-style Keras model (64x64x3 -> 10 classes)", log)
        from converters.keras_to_tflite import import_tensorflow
        import_tensorflow()  # quietly, before Keras imports it loudly
        model = build_model()

        _step(2, f"quantizing to int8 with {CALIBRATION_IMAGES} synthetic calibration images", log)
        t0 = time.perf_counter()
        cm = te.convert(model, synthetic_images(CALIBRATION_IMAGES, seed=1), name="demo")
        convert_s = time.perf_counter() - t0

        _step(3, f"compiling the generated C and running it on {TEST_IMAGES} images", log)
        xs = _quantize(synthetic_images(TEST_IMAGES, seed=2), cm.input_details[0])
        ours = np.asarray(cm.run(xs)).reshape(len(xs), -1)

        _step(4, "running the same images through the TFLite Micro interpreter", log)
        ref, tflm_s = _tflm_outputs(cm.tflite, xs)
        equal = int(sum(np.array_equal(a, b) for a, b in zip(ours, ref)))
        c_s = cm.time_host(xs[0], iters=200)

        _step(5, "measuring memory", log)
        tflm_arena = _tflm_arena(cm)

        _step(6, f"saving the C project to {out_dir}", log)
        saved = Path(cm.save(out_dir)).resolve()
        result = {
            "ops": dict(cm.graph.op_counts()),
            "num_ops": len(cm.graph.ops),
            "peak_sram": int(cm.peak_sram),
            "flash": int(cm.flash),
            "tflm_arena": tflm_arena,
            "equal": equal,
            "total": len(xs),
            "c_ms": c_s * 1e3,
            "tflm_ms": tflm_s * 1e3,
            "speedup": tflm_s / c_s if c_s > 0 else float("inf"),
            "convert_s": convert_s,
            "total_s": time.perf_counter() - t_start,
            "out_dir": str(saved),
            "files": sorted(p.name for p in saved.iterdir()),
        }
        if verbose:
            print(summary(result), flush=True)
        return result
    finally:
        log.flush()


def summary(r: dict) -> str:
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(r["ops"].items()))
    mem = f"arena {r['peak_sram']:,} B"
    if r.get("tflm_arena"):
        mem += f" (TFLite Micro: {r['tflm_arena']:,} B, {r['tflm_arena'] / r['peak_sram']:.1f}x more)"
    verdict = "bit-exact" if r["equal"] == r["total"] else "MISMATCH"
    return "\n".join([
        "",
        f"tinyengine-tf demo: {r['num_ops']} ops ({ops})",
        f"  memory:  {mem}, constants {r['flash']:,} B",
        f"  outputs: {r['equal']}/{r['total']} images equal to TFLite Micro ({verdict})",
        f"  speed:   {r['c_ms']:.3f} ms per image in C vs {r['tflm_ms']:.3f} ms in TFLite Micro's "
        f"Python runtime ({r['speedup']:.1f}x) on this host",
        f"  project: {r['out_dir']} ({len(r['files'])} files; `make` builds it)",
        f"  took {r['total_s']:.1f} s (int8 conversion {r['convert_s']:.1f} s)",
    ])
