"""The keyword-spotting front end: MLPerf Tiny's 49x10 MFCC, with tf.signal.

``features`` is the only feature function: training, evaluation and the int8 input of the
deployed model all go through it, so the model is fed on the device exactly what it learned from.

    f = features(waveforms)                    # (..., 16000) -> (..., 49, 10, 1) float32
    x = features(waveforms, quantize=cm)       # the same, as the int8 the compiled model takes
"""
from __future__ import annotations

import numpy as np

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


def features(audio, quantize=None):
    """MFCCs of one or more clips; int8 for a deployed model when ``quantize`` is given.

    audio: samples on the last axis (int16 or float, any scale: each clip is peak-normalised
    as MLPerf Tiny's reference does), padded with zeros or cut to one second. A tf.Tensor gives
    a tf.Tensor (usable inside tf.data); anything else gives a numpy array.
    quantize: a compiled model, a .tflite path or a (scale, zero_point) pair, see
    nas.datasets.quantize.input_quantization (eager only: it returns numpy).
    """
    import tensorflow as tf

    as_tensor = tf.is_tensor(audio)
    x = tf.cast(tf.convert_to_tensor(audio), tf.float32)
    n = tf.shape(x)[-1]
    x = x[..., :CLIP_SAMPLES]
    pad = tf.maximum(CLIP_SAMPLES - n, 0)
    x = tf.pad(x, tf.concat([tf.zeros([tf.rank(x) - 1, 2], tf.int32), [[0, pad]]], 0))
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
    if quantize is not None:
        from nas.datasets.quantize import quantize as to_int8
        return to_int8(mfcc.numpy(), quantize)
    return mfcc if as_tensor else mfcc.numpy()
