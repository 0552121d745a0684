"""Keras (Keras 3 or tf_keras) models and SavedModel directories -> full-int8 .tflite bytes.

Everything here runs TensorFlow's own TFLiteConverter with full integer post-training
quantization (int8 weights, activations, inputs and outputs), the only form the C generator
accepts. TensorFlow is imported lazily inside the functions: importing this module, or compiling
a .tflite file, never pays for (or requires) TensorFlow.

TensorFlow is loud: absl's pre-init log lines, the converter's C++ prints, Keras' "Saved artifact"
banner. They are captured while TensorFlow works and shown only when something fails (appended to
the exception message). Set TINYENGINE_TF_VERBOSE=1 to let them through.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings

import numpy as np

from tinyengine_tf.errors import ConversionError, QuantizationError, TinyEngineError


# Lines TensorFlow prints on every import or conversion that never indicate a problem here.
_NOISE = ("oneDNN custom operations", "cuda drivers", "cuInit", "absl::InitializeLog",
          "Saved artifact at", "fully_quantize:", "Statistics for quantized inputs",
          "TF-TRT Warning", "computation placer", "rebuild TensorFlow with the appropriate",
          "AVX", "cpu_feature_guard", "Unable to register", "attempting to register")
_MAX_LOG_LINES = 25


# -- quiet TensorFlow ---------------------------------------------------------------------------
@contextlib.contextmanager
def _captured_output():
    """Route this process's stdout/stderr (Python and C++ writes) to a temp file.

    Yields a one-element list that receives the captured text once the block ends.
    """
    box = [""]
    if os.environ.get("TINYENGINE_TF_VERBOSE"):
        yield box
        return
    for stream in (sys.stdout, sys.stderr):
        _flush(stream)
    saved = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        py_out = io.StringIO()
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no such descriptor (embedded interpreters): capture less
                    pass
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_out):
                yield box
        finally:
            for stream in (sys.stdout, sys.stderr):
                _flush(stream)
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            box[0] = sink.read().decode("utf-8", "replace") + py_out.getvalue()


def _flush(stream):
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _relevant_log(text: str) -> str:
    """The captured lines worth showing a user next to an error (noise removed, tail kept)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not any(n in ln for n in _NOISE)]
    lines = [ln for ln in lines if not ln.startswith(("  ", "*", "Captures:", "Output Type:"))
             or "rror" in ln]
    return "\n".join(lines[-_MAX_LOG_LINES:])


_QUIETED = []


def _tf():
    """Import TensorFlow quietly: its import and first device probe print a dozen log lines
    (oneDNN, CUDA) through absl before anything can configure logging."""
    if _QUIETED:
        return _QUIETED[0]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _captured_output():
        try:
            import tensorflow as tf
        except ImportError as exc:
            tf = None
            failure = exc
        else:
            try:
                tf.config.list_physical_devices()  # the CUDA probe logs here, once
            except Exception:  # a broken GPU setup still converts on the CPU
                pass
    if tf is None:
        raise ConversionError(
            f"converting a Keras model or SavedModel needs TensorFlow, which failed to import "
            f"({failure}); install tensorflow, or pass an int8 .tflite file instead")
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    tf.get_logger().setLevel("ERROR")
    _QUIETED.append(tf)
    return tf


import_tensorflow = _tf


# -- representative data ------------------------------------------------------------------------
class _Inputs:
    """What the representative data must look like: per model input, name, shape and dtype."""

    def __init__(self, names, shapes, dtypes, keys=None):
        self.names = list(names)
        # The converter's signature input names: samples go to it as {key: array}, which does not
        # depend on the order in which it happens to list a signature's inputs.
        self.keys = list(keys) if keys is not None else None
        self.shapes = [tuple(None if d is None or d < 0 else int(d) for d in s) for s in shapes]
        self.dtypes = list(dtypes)

    def __len__(self):
        return len(self.names)

    def sample_shape(self, k):
        return self.shapes[k][1:]

    def describe(self, k: int) -> str:
        dims = ("N",) + tuple("?" if d is None else d for d in self.shapes[k][1:])
        return f"({', '.join(map(str, dims))})"

    def example(self) -> str:
        arrays = [f"a float32 array of shape {self.describe(k)}" for k in range(len(self))]
        if len(arrays) == 1:
            return arrays[0]
        return "a tuple of " + ", ".join(arrays) + " (one per input)"


def _keras_inputs(model) -> _Inputs:
    ins = list(getattr(model, "inputs", None) or [])
    if not ins:
        raise ConversionError(f"the Keras model {getattr(model, 'name', '')!r} has no defined inputs; "
                              "build it (call it once, or give it an Input layer) before converting")
    names = [getattr(t, "name", f"input_{k}") for k, t in enumerate(ins)]
    dtypes = [str(getattr(getattr(t, "dtype", None), "name", getattr(t, "dtype", "float32")))
              for t in ins]
    return _Inputs(names, [tuple(t.shape) for t in ins], dtypes)


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype")
                                         and hasattr(x, "__array__"))


def _as_batch(x, spec: _Inputs, k: int, where: str) -> np.ndarray:
    """One input's batch as a float array of shape (B, *sample); a lone sample gets B = 1."""
    dtype = spec.dtypes[k] if spec.dtypes[k].startswith("float") else "float32"
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise QuantizationError(f"representative_dataset {where} is not numeric ({exc}); pass "
                                f"{spec.example()}") from None
    want = spec.sample_shape(k)
    if a.ndim == len(want):
        a = a[None]
    if a.ndim != len(want) + 1 or any(w is not None and w != d for w, d in zip(want, a.shape[1:])):
        raise QuantizationError(
            f"representative_dataset {where} has shape {tuple(a.shape)}, but model input {k} "
            f"({spec.names[k]}) takes {spec.describe(k)}; pass {spec.example()}")
    return a


def _split_element(el, spec: _Inputs, where: str) -> list:
    """One element of the dataset -> one batch per model input."""
    if isinstance(el, dict):
        missing = [n for n in spec.names if n not in el]
        if missing and len(el) != len(spec):
            raise QuantizationError(f"representative_dataset {where} is a dict without the model's "
                                    f"input names {missing}; use keys {spec.names}")
        values = [el[n] for n in spec.names] if not missing else list(el.values())
        return [_as_batch(v, spec, k, where) for k, v in enumerate(values)]
    if isinstance(el, (list, tuple)) and not _is_array(el):
        # [x] as in TensorFlow's own generators, (x, y) pairs from a labelled tf.data pipeline,
        # or one entry per input of a multi-input model.
        if len(el) < len(spec):
            raise QuantizationError(f"representative_dataset {where} holds {len(el)} arrays, but "
                                    f"the model has {len(spec)} inputs; pass {spec.example()}")
        return [_as_batch(el[k], spec, k, where) for k in range(len(spec))]
    if len(spec) != 1:
        raise QuantizationError(f"representative_dataset {where} is a single array, but the model "
                                f"has {len(spec)} inputs; pass {spec.example()}")
    return [_as_batch(el, spec, 0, where)]


def _elements(dataset, spec: _Inputs):
    """The dataset as an iterable of elements (each a batch, or one batch per input)."""
    if callable(dataset) and not hasattr(dataset, "__iter__"):
        dataset = dataset()  # TensorFlow's convention: a function returning a generator
    if _is_array(dataset):
        return [dataset]     # one big batch (N, ...)
    if isinstance(dataset, (list, tuple)) and len(spec) > 1 and len(dataset) == len(spec) and \
            all(_is_array(a) and np.ndim(a) == len(spec.shapes[k]) for k, a in enumerate(dataset)):
        return [tuple(dataset)]  # (batch for input 0, batch for input 1, ...)
    if isinstance(dataset, (str, bytes)) or not hasattr(dataset, "__iter__"):
        raise QuantizationError(f"representative_dataset must be {spec.example()} or an iterable of "
                                f"such batches; got a {type(dataset).__name__}")
    return dataset


def representative_samples(dataset, spec: _Inputs):
    """Yield single samples, [array with batch 1 per input], as TFLiteConverter wants them."""
    count = 0
    for i, el in enumerate(_elements(dataset, spec)):
        batches = _split_element(el, spec, f"element {i}")
        n = batches[0].shape[0]
        if any(b.shape[0] != n for b in batches):
            raise QuantizationError(f"representative_dataset element {i}: the inputs' batch sizes "
                                    f"differ ({[b.shape[0] for b in batches]})")
        for j in range(n):
            count += 1
            sample = [np.ascontiguousarray(b[j:j + 1]) for b in batches]
            yield dict(zip(spec.keys, sample)) if spec.keys else sample
    if count == 0:
        raise QuantizationError("representative_dataset yielded no samples; pass "
                                f"{spec.example()} with N >= 1 (100 or more typical inputs is best)")


class _Calibration:
    """A re-iterable generator function for the converter that remembers the first data error.

    The converter calls the generator inside C++ and may reword what it raises; keeping our own
    exception lets the user see exactly what was wrong with the data.
    """

    def __init__(self, dataset, spec: _Inputs):
        self.dataset, self.spec, self.error = dataset, spec, None

    def __call__(self):
        try:
            yield from representative_samples(self.dataset, self.spec)
        except QuantizationError as exc:
            self.error = exc
            raise
        except Exception as exc:  # the user's own pipeline failed: say so, keep the cause
            self.error = QuantizationError(f"iterating representative_dataset raised "
                                           f"{type(exc).__name__}: {exc}")
            self.error.__cause__ = exc
            raise


# -- converting ---------------------------------------------------------------------------------
def _is_qat(model) -> bool:
    """A tfmot quantize_model() output: its layers are tfmot's quantize wrappers."""
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        module = type(layer).__module__ or ""
        if module.startswith("tensorflow_model_optimization") or \
                type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer"):
            return True
        stack.extend(getattr(layer, "layers", []) or [])
    return False


QUANTIZATIONS = ("int8", "int16x8")


def check_quantization(quantization: str):
    if quantization not in QUANTIZATIONS:
        raise QuantizationError(f"quantization={quantization!r} is not one of {QUANTIZATIONS}: "
                                "'int8' (8-bit activations and weights) or 'int16x8' (16-bit "
                                "activations, 8-bit weights)")


def _configure(tf, converter, calibration, quantization="int8"):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int16x8":
        # TFLite's 16x8 mode: int16 activations and model I/O, int8 weights, int64 biases.
        converter.inference_input_type = tf.int16
        converter.inference_output_type = tf.int16
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        return
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if calibration is not None:
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Without calibration data (a QAT model) the ranges come from the model's FakeQuant ops.
    # TFLITE_BUILTINS_INT8 is left unset then: TF 2.21 does not see the FakeQuant ops of a
    # Keras model through that check and demands a dataset; _require_int8 verifies the result.


def _run(converter, what: str, calibration=None) -> bytes:
    """converter.convert(), quietly; every failure becomes a TinyEngineError with TF's reason."""
    with _captured_output() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = converter.convert()
            error = None
        except Exception as exc:  # TF raises many unrelated types (ConverterError, ValueError...)
            result, error = None, exc
    if calibration is not None and calibration.error is not None:
        raise calibration.error
    if error is not None:
        raise _explain(error, what, _relevant_log(log[0])) from None
    return bytes(result)


def _explain(exc, what: str, log: str) -> TinyEngineError:
    message = str(exc).strip() or type(exc).__name__
    lowered = message.lower()
    extra = f"\nconverter log:\n{log}" if log and log not in message else ""
    if re.search(r"representative_dataset`? must be specified", message):
        return QuantizationError(f"{what}: full-int8 quantization needs a representative dataset "
                                 f"(TensorFlow: {message}); pass representative_dataset=typical "
                                 f"float32 inputs, e.g. a numpy array of shape (N, *input_shape)")
    if isinstance(exc, TinyEngineError):
        return exc
    hint = ""
    missing = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)))
    if missing:
        hint = (f"TFLite has no builtin op for TensorFlow's {', '.join(missing)}; replace the layer "
                "that uses it (tinyengine_tf.supported_ops() lists what compiles). ")
    elif "quantiz" in lowered or "int8" in lowered or "not supported" in lowered:
        hint = ("some layer has no int8 TFLite kernel; replace it with supported layers "
                "(tinyengine_tf.supported_ops() lists what compiles). ")
    return ConversionError(f"TensorFlow's TFLite converter failed on {what}: {hint}"
                           f"{type(exc).__name__}: {message}{extra}")


def _missing_dataset(model, spec: _Inputs) -> QuantizationError:
    name = getattr(model, "name", "")
    return QuantizationError(
        f"the Keras model {name!r} is a float model, and int8 post-training quantization needs "
        f"calibration data: pass representative_dataset= {spec.example()} of typical inputs "
        f"(100 or more samples, preprocessed exactly as for inference), or an iterable of such "
        f"batches. Alternatively quantize it with quantization-aware training "
        f"(tensorflow_model_optimization.quantization.keras.quantize_model) and pass that model")


def keras_to_tflite(model, representative_dataset=None, quantization: str = "int8") -> bytes:
    """A Keras 3 or tf_keras model -> full-int8 (or 16x8) .tflite bytes.

    A float model is post-training quantized with representative_dataset (a numpy array
    (N, *input_shape), a tuple of such arrays for a multi-input model, or an iterable / generator
    function of batches); a tfmot QAT model is converted with the ranges it learned.
    quantization="int16x8" selects TFLite's 16x8 mode (int16 activations and I/O, int8 weights),
    which always needs representative_dataset.
    """
    check_quantization(quantization)
    spec = _keras_inputs(model)
    if representative_dataset is None and (quantization != "int8" or not _is_qat(model)):
        raise _missing_dataset(model, spec)
    tf = _tf()
    what = f"Keras model {getattr(model, 'name', '')!r}"
    first_error = None
    with tempfile.TemporaryDirectory(prefix="te_keras_") as tmp:
        # The fast path first; the SavedModel routes cover models it cannot trace or freeze.
        for route in (_frozen_function, _batch1_saved_model, _tf_keras_route):
            try:
                with _captured_output(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    converter, route_spec = route(tf, model, spec, tmp)
            except Exception as exc:
                first_error = first_error or _explain(exc, what, "")
                continue
            calibration = _Calibration(representative_dataset, route_spec) \
                if representative_dataset is not None else None
            _configure(tf, converter, calibration, quantization)
            try:
                data = _run(converter, what, calibration)
            except TinyEngineError as exc:
                if calibration is not None and calibration.error is not None:
                    raise  # the data is wrong: another route would fail the same way
                first_error = first_error or exc
                continue
            if calibration is None:
                _require_int8(data, what, spec)
            return data
    raise first_error


def _input_specs(tf, spec: _Inputs, names):
    """Batch-1 TensorSpecs. A dynamic batch axis would keep TensorFlow from fusing a dilated conv
    back from SPACE_TO_BATCH_ND / CONV_2D / BATCH_TO_SPACE_ND (and from folding the BatchNorm
    after it); with static shapes it does."""
    return [tf.TensorSpec((1, *s[1:]), dtype=d if d.startswith("float") else "float32", name=n)
            for s, d, n in zip(spec.shapes, spec.dtypes, names)]


def _inference_fn(tf, model, n_inputs):
    single = n_inputs == 1
    return tf.function(lambda *xs: model(xs[0] if single else list(xs), training=False))


def _frozen_function(tf, model, spec: _Inputs, _tmp):
    """The inference call traced at batch 1 with its variables frozen to constants: no SavedModel
    round trip, several times faster, and the same TFLite graph (inputs in Keras order)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    names = [f"in_{k:02d}" for k in range(len(spec))]
    fn = _inference_fn(tf, model, len(spec)).get_concrete_function(*_input_specs(tf, spec, names))
    if _has_recurrent_layer(model):
        # A frozen recurrent loop is not fused into UNIDIRECTIONAL_SEQUENCE_LSTM, and TF's
        # calibrator segfaults on what is left; traced with its variables it is fused.
        return tf.lite.TFLiteConverter.from_concrete_functions([fn], model), spec
    frozen = convert_variables_to_constants_v2(fn)
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen]), spec


def _has_recurrent_layer(model) -> bool:
    """Whether any sublayer is a Keras RNN (LSTM, GRU, SimpleRNN, Bidirectional...)."""
    layers = getattr(model, "submodules", None) or getattr(model, "layers", [])
    return any(any(c.__name__ in ("RNN", "Bidirectional") for c in type(layer).__mro__)
               for layer in layers)


def _batch1_saved_model(tf, model, spec: _Inputs, directory: str):
    """Save the batch-1 inference call as a SavedModel and convert that; its inputs are named
    in_00, in_01... so the calibration samples are handed over by name."""
    names = [f"in_{k:02d}" for k in range(len(spec))]
    specs = _input_specs(tf, spec, names)
    path = os.path.join(directory, "batch1")
    if _is_keras3(model):
        import keras
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda xs: model(xs, training=False),
                             [specs[0] if len(specs) == 1 else specs])
        archive.write_out(path, verbose=False)
    else:
        fn = _inference_fn(tf, model, len(specs)).get_concrete_function(*specs)
        tf.saved_model.save(model, path, signatures=fn)
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    return converter, _Inputs(spec.names, spec.shapes, spec.dtypes, keys=names)


def _tf_keras_route(tf, model, spec: _Inputs, _tmp):
    """TensorFlow's own Keras path (dynamic batch), for models the routes above cannot trace."""
    return tf.lite.TFLiteConverter.from_keras_model(model), spec


def _is_keras3(model) -> bool:
    keras = sys.modules.get("keras")
    return bool(keras is not None and str(getattr(keras, "__version__", "")).startswith("3")
                and isinstance(model, keras.layers.Layer))


def _saved_model_inputs(tf, path: str) -> _Inputs:
    with _captured_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = tf.saved_model.load(path)
    sigs = getattr(loaded, "signatures", {}) or {}
    if not sigs:
        raise ConversionError(f"the SavedModel at {path} has no serving signature; export it with "
                              "model.export(path) (Keras 3) or tf.saved_model.save with signatures")
    fn = sigs.get("serving_default") or next(iter(sigs.values()))
    _, kwargs = fn.structured_input_signature
    names = sorted(kwargs)  # the converter orders a signature's inputs by name
    return _Inputs(names, [tuple(kwargs[n].shape) for n in names],
                   [kwargs[n].dtype.name for n in names], keys=names)


def saved_model_to_tflite(path: str, representative_dataset=None, quantization: str = "int8") -> bytes:
    """A SavedModel directory -> full-int8 (or 16x8) .tflite bytes (QAT exports need no dataset)."""
    check_quantization(quantization)
    path = str(path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")) and \
            not os.path.isfile(os.path.join(path, "saved_model.pbtxt")):
        raise ConversionError(f"{path} is a directory but not a SavedModel (no saved_model.pb); "
                              "pass a .tflite file, a SavedModel directory or a Keras model")
    tf = _tf()
    what = f"the SavedModel at {path}"
    try:
        spec = _saved_model_inputs(tf, path)
        with _captured_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converter = tf.lite.TFLiteConverter.from_saved_model(path)
    except TinyEngineError:
        raise
    except Exception as exc:
        raise _explain(exc, what, "") from None
    calibration = _Calibration(representative_dataset, spec) if representative_dataset is not None \
        else None
    if calibration is None and quantization != "int8":
        raise _float_without_data(what, spec)
    _configure(tf, converter, calibration, quantization)
    try:
        data = _run(converter, what, calibration)
    except ConversionError as exc:
        if calibration is not None:
            raise
        raise _float_without_data(what, spec, exc) from None
    if calibration is None:
        _require_int8(data, what, spec)
    return data


def _float_without_data(what: str, spec: _Inputs, cause=None) -> QuantizationError:
    because = f" (TensorFlow: {cause})" if cause is not None else ""
    return QuantizationError(
        f"{what} is a float model, and int8 post-training quantization needs calibration data: "
        f"pass representative_dataset= {spec.example()} of typical inputs (100 or more "
        f"samples, preprocessed exactly as for inference), or export a quantization-aware "
        f"trained (tfmot) model{because}")


def _require_int8(data: bytes, what: str, spec: _Inputs):
    """Without calibration data TF may fall back to float or dynamic-range ops: refuse that."""
    from converters.tflite_reader import read_tflite
    graph = read_tflite(data)
    io = [graph.t(i) for i in list(graph.inputs) + list(graph.outputs)]
    floats = [op.kind for op in graph.ops
              if any(graph.t(i).dtype == "float32" for i in op.inputs + op.outputs if i >= 0)]
    if floats or any(t.dtype != "int8" for t in io):
        raise _float_without_data(what, spec)
