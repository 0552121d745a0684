"""One exception family for everything a user can get wrong.

Every message names what failed (op kind and index where there is one) and what to do about it.
The command line prints ``str(error)`` and exits non-zero, without a traceback.
"""


class TinyEngineError(Exception):
    """Base of every error tinyengine-tf raises on purpose."""


class InvalidModelError(TinyEngineError):
    """The model bytes are not a well-formed TFLite flatbuffer this engine can trust."""


class UnsupportedOpError(TinyEngineError):
    """The model uses an op, or an op configuration, the code generator cannot emit exactly."""

    def __init__(self, message, op_kind=None, op_index=None):
        super().__init__(message)
        self.op_kind = op_kind
        self.op_index = op_index


class QuantizationError(TinyEngineError):
    """A float model, or quantization parameters that the int8 kernels cannot reproduce."""


class DoesNotFitError(TinyEngineError):
    """The compiled model exceeds an SRAM or Flash budget."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class ConversionError(TinyEngineError):
    """TensorFlow's TFLite converter rejected the Keras model; the message carries its reason."""


class ToolchainError(TinyEngineError):
    """A compiler, linker or emulator needed for the requested step failed or is missing."""


class DatasetError(TinyEngineError):
    """A dataset on disk is missing, laid out wrongly or holds a corrupt file (the message names it)."""


class InvalidInputError(TinyEngineError):
    """An input the compiled model rejects at run time where TFLite Micro's Invoke fails too
    (RSQRT of a negative value); the message names the op and the invocation."""
