"""The keyword-spotting front end: MLPerf Tiny's 49x10 MFCC with tf.signal, or TFLM's micro
frontend (the micro_speech example's 49x40 filterbank) as an option.

``features`` is the only feature function: training, evaluation and the int8 input of the
deployed model all go through it, so the model is fed on the device exactly what it learned from.

    f = features(waveforms)                    # (..., 16000) -> (..., 49, 10, 1) float32
    x = features(waveforms, quantize=cm)       # the same, as the int8 the compiled model takes
    m = features(waveforms, frontend="micro")  # (..., 49, 40, 1): TFLM's audio_microfrontend
"""
from __future__ import annotations

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000          # one second
FRAME_LENGTH = 480            # 30 ms
FRAME_STEP = 320              # 20 ms
FFT_LENGTH = 512
MEL_BINS = 40
MEL_LOW_HZ, MEL_HIGH_HZ = 20.0, 4000.0
LOG_OFFSET = 1e-6
MFCC_COUNT = 10
FRAMES = 1 + (CLIP_SAMPLES - FRAME_LENGTH) // FRAME_STEP        # 49
FEATURE_SHAPE = (FRAMES, MFCC_COUNT, 1)
MICRO_CHANNELS = 40
MICRO_SCALE = 10.0 / 256.0    # Google's speech_commands "micro" mode: values in about 0..26
FRONTENDS = {"mfcc": FEATURE_SHAPE, "micro": (FRAMES, MICRO_CHANNELS, 1)}


def feature_shape(frontend: str = "mfcc") -> tuple:
    return FRONTENDS[_check_frontend(frontend)]


def _check_frontend(frontend: str) -> str:
    if frontend not in FRONTENDS:
        from tinyengine_tf.errors import DatasetError
        raise DatasetError(f"unknown front end {frontend!r}: use one of {', '.join(FRONTENDS)}")
    return frontend


def features(audio, quantize=None, frontend: str = "mfcc"):
    """Features of one or more clips; int8 for a deployed model when ``quantize`` is given.

    audio: samples on the last axis, padded with zeros or cut to one second. For "mfcc", int16
    or float at any scale (each clip is peak-normalised as MLPerf Tiny's reference does); for
    "micro", int16, or float in [-1, 1] (scaled to int16, as the microphone delivers it).
    A tf.Tensor gives a tf.Tensor (usable inside tf.data); anything else a numpy array.
    quantize: a compiled model, a .tflite path or a (scale, zero_point) pair, see
    nas.datasets.quantize.input_quantization (eager only: it returns numpy).
    """
    import tensorflow as tf

    _check_frontend(frontend)
    as_tensor = tf.is_tensor(audio)
    x = tf.convert_to_tensor(audio)
    integer = x.dtype.is_integer
    x = tf.cast(x, tf.float32)
    n = tf.shape(x)[-1]
    x = x[..., :CLIP_SAMPLES]
    pad = tf.maximum(CLIP_SAMPLES - n, 0)
    x = tf.pad(x, tf.concat([tf.zeros([tf.rank(x) - 1, 2], tf.int32), [[0, pad]]], 0))
    out = _mfcc(x) if frontend == "mfcc" else _micro(x, integer)
    if quantize is not None:
        from nas.datasets.quantize import quantize as to_int8
        return to_int8(out.numpy(), quantize)
    return out if as_tensor else out.numpy()


def _mfcc(x):
    import tensorflow as tf
    # MLPerf divides by the maximum (not the absolute maximum); the floor keeps a silent
    # clip finite instead of 0/0.
    x = x / tf.maximum(tf.reduce_max(x, axis=-1, keepdims=True), 1e-9)
    spec = tf.abs(tf.signal.stft(x, FRAME_LENGTH, FRAME_STEP, FFT_LENGTH,
                                 window_fn=tf.signal.hann_window))
    mel = tf.signal.linear_to_mel_weight_matrix(MEL_BINS, FFT_LENGTH // 2 + 1, SAMPLE_RATE,
                                                MEL_LOW_HZ, MEL_HIGH_HZ)
    log_mel = tf.math.log(tf.tensordot(spec, mel, 1) + LOG_OFFSET)
    mfcc = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :MFCC_COUNT, tf.newaxis]
    if mfcc.shape.rank is not None:     # static shapes for tf.data and Keras
        mfcc = tf.ensure_shape(mfcc, mfcc.shape[:-3].as_list() + list(FEATURE_SHAPE))
    return mfcc


def _micro(x, integer: bool):
    import tensorflow as tf
    from tensorflow.lite.experimental.microfrontend.python.ops import \
        audio_microfrontend_op as frontend_op

    pcm = tf.cast(x if integer else tf.round(tf.clip_by_value(x, -1.0, 1.0) * 32767.0), tf.int16)

    def one(clip):
        return frontend_op.audio_microfrontend(
            clip, sample_rate=SAMPLE_RATE, window_size=FRAME_LENGTH * 1000 // SAMPLE_RATE,
            window_step=FRAME_STEP * 1000 // SAMPLE_RATE, num_channels=MICRO_CHANNELS,
            out_scale=1, out_type=tf.float32) * MICRO_SCALE

    shape = tf.shape(pcm)
    flat = tf.reshape(pcm, [-1, CLIP_SAMPLES])
    out = tf.map_fn(one, flat, fn_output_signature=tf.TensorSpec([None, MICRO_CHANNELS], tf.float32))
    out = tf.reshape(out, tf.concat([shape[:-1], [FRAMES, MICRO_CHANNELS, 1]], 0))
    if pcm.shape.rank is not None:
        out = tf.ensure_shape(out, pcm.shape[:-1].as_list() + list(FRONTENDS["micro"]))
    return out
