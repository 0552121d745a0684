"""Datasets for TinyNAS: Speech Commands and Visual Wake Words, real or made offline.

    from nas.datasets import load_speech_commands, features, synthesize_speech_commands
    synthesize_speech_commands("data/sc", per_word=100)         # offline stand-in, v2 layout
    train, val, test = load_speech_commands("data/sc", batch_size=100)
    x_int8 = features(waveforms, quantize=cm)                  # what the deployed model is fed

    from nas.datasets import load_vww, make_synthetic_vww, preprocess
    train, val, test = load_vww("data/vww", resolution=96, batch_size=64)

Importing this package does not import TensorFlow; loading data does.
"""
from nas.datasets.quantize import input_quantization, quantize
from nas.datasets.speech_commands import LABELS, WORDS, load_speech_commands, scan
from nas.datasets.speech_features import FEATURE_SHAPE, feature_shape, features
from nas.datasets.speech_synth import synthesize_speech_commands
from nas.datasets.splits import Splits
from nas.datasets.synthetic_vww import make_synthetic_vww
from nas.datasets.vww import load_vww, preprocess

__all__ = ["LABELS", "WORDS", "FEATURE_SHAPE", "feature_shape", "features", "load_speech_commands", "scan",
           "synthesize_speech_commands", "input_quantization", "quantize", "Splits",
           "load_vww", "preprocess", "make_synthetic_vww"]
