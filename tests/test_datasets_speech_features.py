"""The keyword-spotting front end and the int8 quantization that feeds a deployed model.

The MFCC is checked against an independent numpy implementation of MLPerf Tiny's recipe; the
quantization against TFLite Micro's own QUANTIZE kernel.
"""
import numpy as np
import pytest
from scipy.fft import dct

from conftest import SHARED_MODELS
from nas.datasets.quantize import input_quantization, quantize
from nas.datasets.speech_features import features
from reference import tflm_run
from test_kernels_quantize import _float_model, _ties
from tflite_micro.python.tflite_micro import runtime
from tinyengine_tf.errors import DatasetError

KWS = SHARED_MODELS / "kws_ref_model.tflite"


def _mel(hz):
    return 1127.0 * np.log1p(hz / 700.0)


def numpy_mfcc(x):
    """MLPerf Tiny KWS features written from the recipe, without tf.signal."""
    x = np.pad(x.astype(np.float64), (0, max(16000 - len(x), 0)))[:16000]
    x = x / x.max()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(480) / 480)      # periodic Hann
    frames = np.stack([x[i * 320:i * 320 + 480] * window for i in range(49)])
    spec = np.abs(np.fft.rfft(frames, 512))
    hz = np.linspace(0, 8000, 257)[1:]                                  # the DC bin gets no weight
    edges = np.linspace(_mel(20.0), _mel(4000.0), 42)
    m = _mel(hz)[:, None]
    lower = (m - edges[:-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[2:] - m) / (edges[2:] - edges[1:-1])
    weights = np.vstack([np.zeros((1, 40)), np.maximum(0, np.minimum(lower, upper))])
    log_mel = np.log(spec @ weights + 1e-6)
    return (dct(log_mel, type=2, axis=-1) / np.sqrt(2 * 40))[:, :10, None]


def _speechlike(seed, n=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f = 300 + 900 * t + 200 * np.sin(2 * np.pi * 3 * t)
    tone = np.sin(2 * np.pi * np.cumsum(f) / 16000) * np.exp(-((t - 0.5) / 0.15) ** 2)
    return (tone + 0.01 * rng.normal(size=n)).astype(np.float32)


def test_features_equal_the_mlperf_recipe_computed_independently():
    for seed in range(3):
        x = _speechlike(seed)
        got = features(x)
        assert got.shape == (49, 10, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got, numpy_mfcc(x), rtol=1e-3, atol=2e-3)


def test_features_batch_pad_and_peak_normalisation():
    x = _speechlike(7)
    batch = np.stack([x, 0.01 * x, x])
    f = features(batch)
    assert f.shape == (3, 49, 10, 1)
    np.testing.assert_allclose(f[1], f[0], atol=1e-3)                # level does not matter
    i16 = np.round(x / np.abs(x).max() * 20000).astype(np.int16)
    np.testing.assert_allclose(features(i16), f[0], atol=0.05)
    short = x[:12000]
    np.testing.assert_allclose(features(short), features(np.pad(short, (0, 4000))), atol=1e-5)
    long = np.concatenate([x, np.ones(3000, np.float32)])
    np.testing.assert_allclose(features(long), f[0], atol=1e-5)        # cut to one second


def test_features_work_inside_tf_data():
    import tensorflow as tf
    x = np.stack([_speechlike(1), _speechlike(2)])
    ds = tf.data.Dataset.from_tensor_slices(x).map(features).batch(2)
    assert ds.element_spec.shape.as_list() == [None, 49, 10, 1]
    np.testing.assert_allclose(next(iter(ds)).numpy(), features(x), atol=1e-5)


def test_quantize_equals_tflite_micro_quantize_kernel():
    scale, zp = 0.5847029, 83
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-130, 30, 400), _ties(scale, range(-150, 50)),
                        [0.0, -0.0, 1e9, -1e9]]).astype(np.float32)
    model = _float_model(x.shape, scale, zp, dequant=False)
    want = tflm_run(model, x[None])[0]
    np.testing.assert_array_equal(quantize(x, (scale, zp)), want)


def test_input_quantization_read_from_every_source_agrees_with_tflm():
    import tinyengine_tf as te
    details = runtime.Interpreter.from_bytes(KWS.read_bytes()).get_input_details(0)
    want = (float(details["quantization_parameters"]["scales"][0]),
            int(details["quantization_parameters"]["zero_points"][0]))
    cm = te.convert(str(KWS))
    for source in (KWS, str(KWS), KWS.read_bytes(), cm, cm.input_details[0], want):
        scale, zp = input_quantization(source)
        assert (np.float32(scale), zp) == (np.float32(want[0]), want[1]), source
    x = np.stack([_speechlike(4), _speechlike(5)])
    np.testing.assert_array_equal(features(x, quantize=cm), quantize(features(x), want))


def test_input_quantization_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(DatasetError, match="missing.tflite"):
        input_quantization(tmp_path / "missing.tflite")
    with pytest.raises(DatasetError, match="not int8"):
        input_quantization({"name": "x", "dtype": "float32", "scale": None, "zero_point": 0})
    with pytest.raises(DatasetError, match="cannot read an input quantization"):
        input_quantization(3.5)


def test_micro_frontend_is_tflms_op_batched_and_scaled():
    import tensorflow as tf
    from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op as op
    x = np.stack([_speechlike(8), _speechlike(9)])
    pcm = np.round(x / np.abs(x).max() * 32767).astype(np.int16)
    got = features(pcm, frontend="micro")
    assert got.shape == (2, 49, 40, 1)
    for k in range(2):
        want = op.audio_microfrontend(tf.constant(pcm[k]), sample_rate=16000, window_size=30,
                                      window_step=20, num_channels=40, out_scale=1,
                                      out_type=tf.float32).numpy() * 10 / 256
        np.testing.assert_allclose(got[k, ..., 0], want, rtol=1e-6)
    # A float clip in [-1, 1] is what the microphone's int16 would be, scaled.
    np.testing.assert_allclose(features(pcm[0] / 32767.0, frontend="micro"), got[0], atol=1e-5)
    with pytest.raises(DatasetError, match="unknown front end 'fbank'"):
        features(pcm, frontend="fbank")
