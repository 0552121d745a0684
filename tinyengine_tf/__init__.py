"""tinyengine-tf: compile int8 TFLite / Keras models to specialized, bit-exact C for microcontrollers.

    import tinyengine_tf as te
    cm = te.convert("model.tflite")
    y = cm.run(x)            # equals TFLite Micro, bit for bit
    cm.save("out/")          # a C project with a Makefile

Importing this package does not import TensorFlow; only Keras inputs do.
"""
from tinyengine_tf.api import convert
from tinyengine_tf.errors import (ConversionError, DoesNotFitError, InvalidInputError,
                                  InvalidModelError, QuantizationError, TinyEngineError,
                                  ToolchainError, UnsupportedOpError)

__version__ = "0.1.0"
__all__ = ["convert", "TinyEngineError", "InvalidModelError", "InvalidInputError", "UnsupportedOpError",
           "QuantizationError", "DoesNotFitError", "ToolchainError", "ConversionError", "supported_ops"]


def supported_ops() -> list:
    from tinyengine_tf.kernels.base import supported_ops as _ops
    return _ops()
