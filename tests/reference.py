"""The judge: run a model through the TFLite Micro interpreter (pip package tflite-micro).

Also the checks every test file shares, so each has one implementation: comparing with the judge,
footprints, refusals, random layer specs, the shared-model cache, and the generated C built with
-fsanitize=address,undefined (``sanitized_run``, for a whole model or for one layer).
"""
from __future__ import annotations

import math
import os
import subprocess

import numpy as np
import pytest

from tflite_micro.python.tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

import tinyengine_tf as te
from tinyengine_tf import toolchain
from tflite_builder import bias_scale
from tinyengine_tf.kernels.base import FOOTPRINTS, KERNELS, VIEW_OPS, EmitContext

# The four MLPerf Tiny models in ../shared/models (the `shared_models` fixture).
SHARED_MODEL_NAMES = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]


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


class TFLMSequence:
    """One TFLite Micro interpreter kept across calls, for stateful models (LSTM, SVDF,
    variables): each run() continues from the state the previous call left, a batch of N inputs
    being N consecutive invocations; reset() is the interpreter's (variables back to their reset
    value). The interpreter is reset once at creation, since TFLM leaves variable tensors
    uninitialized until then."""

    def __init__(self, model: bytes):
        self.model = bytes(model)
        self.interp = runtime.Interpreter.from_bytes(self.model,
                                                     arena_size=max(len(model) * 20, 1 << 20))
        self.n_out = schema.Model.GetRootAsModel(self.model, 0).Subgraphs(0).OutputsLength()
        self.reset()

    def reset(self):
        self.interp.reset()

    def run(self, inputs):
        xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        n = xs[0].shape[0]
        outs = [[] for _ in range(self.n_out)]
        for i in range(n):
            for k, x in enumerate(xs):
                shape = self.interp.get_input_details(k)["shape"]
                self.interp.set_input(np.ascontiguousarray(x[i]).reshape(shape), k)
            self.interp.invoke()
            for j in range(self.n_out):
                outs[j].append(np.array(self.interp.get_output(j)))
        res = [np.stack(o).reshape((n, *o[0].shape[1:])) if o[0].ndim > 1 and o[0].shape[0] == 1
               else np.stack(o) for o in outs]
        return res[0] if self.n_out == 1 else res


def assert_sequence_matches_tflm(cm, model_bytes, xs, judge=None):
    """cm.run(xs) step by step against one TFLM interpreter kept across the sequence (pass
    `judge` to continue an earlier sequence). Returns (ours, judge)."""
    judge = judge or TFLMSequence(model_bytes)
    ref = judge.run(xs)
    ours = cm.run(xs)
    _assert_same(_as_list(ours), _as_list(ref))
    return ours, judge


def assert_carries_state_and_resets(cm, model_bytes, xs, more, names=None):
    """The stateful-model check: xs then `more` against one TFLM interpreter kept across both
    (the state carries over between calls), then reset() on both sides and `more` again."""
    judge = TFLMSequence(model_bytes)
    _assert_same(_as_list(cm.run(xs)), _as_list(judge.run(xs)), names)
    _assert_same(_as_list(cm.run(more)), _as_list(judge.run(more)), names)
    cm.reset()
    judge.reset()
    _assert_same(_as_list(cm.run(more)), _as_list(judge.run(more)), names)


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


def sample_shape(shape) -> tuple:
    """The per-sample shape cm.run and tflm_run batch over (a leading 1 is the batch axis)."""
    shape = tuple(int(d) for d in shape)
    return shape[1:] if len(shape) > 1 and shape[0] == 1 else shape


def model_inputs(cm, n: int, seed: int = 0) -> list:
    """int8_inputs for every model input, input k drawn with seed + k."""
    return [int8_inputs(sample_shape(cm.graph.t(i).shape), n, seed=seed + k)
            for k, i in enumerate(cm.graph.inputs)]


def _assert_same(ours: list, refs: list, names=None):
    """Each of ours equals its TFLM reference; on mismatch, say where and by how much."""
    assert len(ours) == len(refs), f"{len(ours)} outputs, TFLM has {len(refs)}"
    for k, (a, b) in enumerate(zip(ours, refs)):
        b = np.asarray(b)
        a = np.asarray(a).reshape(b.shape)
        if not np.array_equal(a, b):
            bad = np.argwhere(a != b)
            first = tuple(bad[0])
            raise AssertionError(
                f"{names[k] if names else f'output {k}'}: {len(bad)} of {a.size} values differ "
                f"from TFLite Micro; first at {first}: ours {a[first]} vs TFLM {b[first]}; "
                f"max |diff| {np.abs(a.astype(np.int64) - b.astype(np.int64)).max()}")


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def assert_matches_tflm(cm, model_bytes, xs):
    """cm.run equals TFLM on every sample; on mismatch, say where and by how much."""
    ours = cm.run(xs)
    _assert_same(_as_list(ours), _as_list(tflm_run(model_bytes, xs)))
    return ours


def compile_and_check(model: bytes, n: int = 20, seed: int = 0):
    """Convert, run >= 20 int8 samples (extremes first) through ours and TFLM, compare; then the
    footprint of every layer."""
    cm = te.convert(model)
    xs = model_inputs(cm, n, seed)
    assert_matches_tflm(cm, model, xs if len(xs) > 1 else xs[0])
    check_footprints(cm)
    return cm


# -- footprints ---------------------------------------------------------------------------------

def check_footprints(cm):
    """Every registered footprint equals the Flash and scratch its kernel really emits."""
    g = cm.graph
    # The ops as emitted: the planner may have given some a smaller scratch (band_plan.py).
    emitted = {id(op): code for op, code in cm._gen.layers}
    for op, _ in cm._gen.layers:
        if op.kind in VIEW_OPS or op.kind not in FOOTPRINTS:
            continue
        ctx = EmitContext(g, "fp")
        ctx.layer = "L0"
        code = KERNELS[op.kind](op, g, ctx)
        fp = FOOTPRINTS[op.kind](op, g)
        assert fp[:2] == (ctx.flash_bytes, code.scratch_bytes), op.label()
        if len(fp) > 2:     # a footprint that says whether the layer runs in place
            assert fp[2] == code.in_place, op.label()
        assert emitted[id(op)].scratch_bytes == code.scratch_bytes


def check_total_footprint(cm):
    """The shape-only footprints add up to the compiled model: Flash in sum, scratch at most."""
    flash = scratch = 0
    for op, _ in cm._gen.layers:
        f, s = FOOTPRINTS[op.kind](op, cm.graph)[:2]
        flash += f
        scratch = max(scratch, s)
    assert flash == cm.flash
    emitted = [code.scratch_bytes for _, code in cm._gen.layers if code is not None]
    assert scratch == max(emitted, default=0)


# -- refusals -------------------------------------------------------------------------------------

def assert_unsupported(model: bytes, kind: str, words: str = "", op_index: int | None = None):
    """convert() raises UnsupportedOpError naming the op kind (and "KIND (op #i)" when op_index
    is given) whose message holds `words`; returns the error."""
    with pytest.raises(te.UnsupportedOpError) as info:
        te.convert(model)
    err, msg = info.value, str(info.value)
    assert err.op_kind == kind and kind in msg, msg
    if op_index is not None:
        assert f"{kind} (op #{op_index})" in msg, msg
    assert words in msg, msg
    return err


# -- windowed layers (conv, depthwise, pooling) ---------------------------------------------------

def out_size(n, k, s, d, pad):
    """Output length of a window k with stride s and dilation d over n, SAME or VALID."""
    eff = (k - 1) * d + 1
    return math.ceil(n / s) if pad == "SAME" else (n - eff) // s + 1


def explicit_pad_input(b, p, c):
    """The model input (batch, h, w, c) of spec p on ModelBuilder b and, when p["pad_extra"] =
    (top, bottom, left, right), an explicit PAD after it. Returns (input, the tensor the layer
    reads, its height, its width)."""
    x = b.tensor((p["batch"], p["h"], p["w"], c), scale=p["xs"], zp=p["xzp"])
    if not p["pad_extra"]:
        return x, x, p["h"], p["w"]
    t, bo, l, r = p["pad_extra"]
    h, w = p["h"] + t + bo, p["w"] + l + r
    pads = b.tensor((4, 2), dtype="int32", data=[[0, 0], [t, bo], [l, r], [0, 0]])
    padded = b.tensor((p["batch"], h, w, c), scale=p["xs"], zp=p["xzp"])
    b.op("PAD", [x, pads], [padded], "PadOptions")
    return x, padded, h, w


def filter_and_bias(b, rng, p, shape, oc, fs, qdim, filter_zp=None, bias_values=None,
                    bias_bounds=(-3000, 3000), bias_dtype="int32") -> list:
    """The filter tensor of a conv-like layer with oc output channels (values from p["wmin"] up,
    the first exactly p["wmin"]; scales fs, quantized along qdim) and, when p["bias"], its bias,
    drawn from rng in that order. Returns them as the op inputs that follow the activation."""
    wdata = rng.integers(p["wmin"], 128, shape)
    wdata.flat[0] = p["wmin"]
    zp = filter_zp if filter_zp is not None else [0] * len(fs)
    inputs = [b.tensor(shape, scale=fs, zp=zp, data=wdata, qdim=qdim)]
    if p["bias"]:
        bvals = bias_values if bias_values is not None else rng.integers(*bias_bounds, oc)
        inputs.append(b.tensor((oc,), dtype=bias_dtype, scale=bias_scale(p["xs"], np.resize(fs, oc)),
                               zp=[0] * oc, data=bvals))
    return inputs


def valid_random_specs(make, count, window=("kh", "kw")):
    """The first `count` of make(0), make(1), ... whose (dilated) window fits the input where the
    padding is VALID; `window` names the spec's window height and width keys."""
    out, i = [], 0
    while len(out) < count:
        p = make(i)
        i += 1
        fits = all(out_size(p[n], p[k], 1, p.get(d, 1), "VALID") >= 1
                   for n, k, d in zip(("h", "w"), window, ("dh", "dw")))
        if p["pad"] != "VALID" or fits:
            out.append(p)
    return out


# -- the MLPerf Tiny models -----------------------------------------------------------------------

_SHARED_COMPILED: dict = {}


def compiled_shared_model(shared_models, name):
    """(CompiledModel, .tflite bytes) of ../shared/models/<name>.tflite, converted once a session."""
    if name not in _SHARED_COMPILED:
        data = (shared_models / f"{name}.tflite").read_bytes()
        _SHARED_COMPILED[name] = (te.convert(data, name=name), data)
    return _SHARED_COMPILED[name]


# -- sanitizers -----------------------------------------------------------------------------------
# Any ASan or UBSan report aborts the run; leaks count too.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
_NP = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "float32": np.float32}


def _stdio_main(prelude, in_bytes, out_bytes, runs, buffers) -> str:
    """main(): per sample, reads every input from stdin into its own exact-size heap buffer, then
    per statement in `runs` executes it and writes every output to stdout. `buffers` maps extra
    heap buffers (void *name) to their sizes."""
    ni, no = len(in_bytes), len(out_bytes)
    extra = "".join(f"  void *{b} = malloc({max(size, 1)});\n  if (!{b}) return 3;\n"
                    for b, size in buffers.items())
    body = "".join(f"    {stmt}\n    for (k = 0; k < {no}; ++k) fwrite(out[k], 1, out_bytes[k], stdout);\n"
                   for stmt in runs)
    return f"""#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
{prelude}
static const size_t in_bytes[{ni}] = {{{', '.join(map(str, in_bytes))}}};
static const size_t out_bytes[{no}] = {{{', '.join(map(str, out_bytes))}}};
int main(void) {{
  void *in[{ni}], *out[{no}];
  int k;
  for (k = 0; k < {ni}; ++k) if (!(in[k] = malloc(in_bytes[k]))) return 3;
  for (k = 0; k < {no}; ++k) if (!(out[k] = malloc(out_bytes[k]))) return 3;
{extra}  for (;;) {{
    k = 0;
    while (k < {ni} && fread(in[k], 1, in_bytes[k], stdin) == in_bytes[k]) ++k;
    if (k < {ni}) break;
{body}  }}
  for (k = 0; k < {ni}; ++k) free(in[k]);
  for (k = 0; k < {no}; ++k) free(out[k]);
{''.join(f'  free({b});{chr(10)}' for b in buffers)}  return 0;
}}
"""


def _model_harness(cm):
    """The whole model, one sample per te_host_batch call."""
    g = cm.graph
    ins, outs = [g.t(i) for i in g.inputs], [g.t(i) for i in g.outputs]
    main = _stdio_main("int te_host_batch(const void *const *ins, void *const *outs, int n);",
                       [t.nbytes for t in ins], [t.nbytes for t in outs],
                       ["te_host_batch((const void *const *)in, out, 1);"], {})
    return {**cm.host_sources(), "te_san_main.c": main}, ins, outs, 1


def _layer_harness(cm, pos):
    """Layer `pos` alone (its static function, the model's C included), so a read outside its
    input or a write outside its output is caught, not hidden in the arena. An in-place layer
    runs a second time with its output over its input in one buffer."""
    g = cm.graph
    op, code = cm._gen.layers[pos]
    fname, consts = cm._gen.layer_fn[pos]        # a shared function takes the layer's arrays
    ins = [g.t(i) for i in op.inputs if i >= 0 and not g.t(i).is_const]
    outs = [g.t(i) for i in op.outputs]
    tail = (["scratch"] if code.scratch_bytes else []) + list(consts)
    in_args, out_args = [f"in[{k}]" for k in range(len(ins))], [f"out[{k}]" for k in range(len(outs))]
    runs = [f"{fname}({', '.join(in_args + out_args + tail)});"]
    buffers = {"scratch": code.scratch_bytes} if code.scratch_bytes else {}
    if code.in_place:
        buffers["both"] = ins[0].nbytes
        args = ["both", *in_args[1:], "both", *out_args[1:], *tail]
        runs.append(f"memcpy(both, in[0], {ins[0].nbytes}); {fname}({', '.join(args)}); "
                    f"memcpy(out[0], both, {outs[0].nbytes});")
    src = cm.sources
    src["model_impl.h"] = src.pop(f"{cm.prefix}.c")
    main = _stdio_main('#include "model_impl.h"', [t.nbytes for t in ins],
                       [t.nbytes for t in outs], runs, buffers)
    return {**src, "te_san_main.c": main}, ins, outs, len(runs)


def sanitized_run(cm, xs, layer: int | None = None, timeout: int = 120) -> list:
    """The generated C built with ASan + UBSan, fed through stdin/stdout; any report fails.

    xs: one (N, ...) array per input (or a single array). With layer=None the whole model runs and
    the result is one array per model output. With layer=pos only that layer's function runs, on
    exact-size heap buffers, xs being its non-constant inputs; the result is its outputs, then for
    an in-place layer its outputs again from the run with output over input. Arrays are
    (N, *sample shape) in the tensor's dtype.
    """
    sources, ins, outs, runs = _model_harness(cm) if layer is None else _layer_harness(cm, layer)
    xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
    assert len(xs) == len(ins), f"{len(ins)} inputs, got {len(xs)}"
    arrays = [np.ascontiguousarray(x, dtype=_NP[t.dtype]) for x, t in zip(xs, ins)]
    n = len(arrays[0])
    assert all(len(a) == n and a[0].nbytes == t.nbytes for a, t in zip(arrays, ins))
    exe = toolchain.build(sources, kind="exe", flags=toolchain.SANITIZE_FLAGS)
    proc = subprocess.run([str(exe)], input=b"".join(a[i].tobytes() for i in range(n) for a in arrays),
                          capture_output=True, timeout=timeout, env={**os.environ, **SANITIZER_ENV})
    assert proc.returncode == 0, f"sanitized run failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}"
    assert b"runtime error" not in proc.stderr, proc.stderr.decode()[-3000:]
    record = sum(t.nbytes for t in outs)
    assert len(proc.stdout) == n * runs * record, "the sanitized run wrote too few or too many bytes"
    raw = np.frombuffer(proc.stdout, dtype=np.uint8).reshape(n, runs * record)
    result, pos = [], 0
    for _ in range(runs):
        for t in outs:
            part = raw[:, pos:pos + t.nbytes].copy().view(_NP[t.dtype])
            result.append(part.reshape((n, *sample_shape(t.shape))))
            pos += t.nbytes
    return result


def run_c_check(main: str, headers=("te_runtime.h",), stdin: bytes = b"",
                flags=toolchain.SANITIZE_FLAGS, timeout: int = 120) -> bytes:
    """A C program of runtime headers from tinyengine_tf/c plus `main`, built (sanitized unless
    flags say else) and run; it must exit 0 without a sanitizer report. Returns its stdout."""
    from importlib import resources
    cdir = resources.files("tinyengine_tf").joinpath("c")
    sources = {h: cdir.joinpath(h).read_text() for h in headers}
    exe = toolchain.build({**sources, "te_check_main.c": main}, kind="exe", flags=list(flags))
    proc = subprocess.run([str(exe)], input=stdin, capture_output=True, timeout=timeout,
                          env={**os.environ, **SANITIZER_ENV})
    assert proc.returncode == 0, (proc.stdout[-1000:] + proc.stderr[-3000:]).decode(errors="replace")
    assert b"runtime error" not in proc.stderr, proc.stderr.decode()[-3000:]
    return proc.stdout


def assert_sanitized_matches_tflm(cm, model_bytes, xs, layer: int | None = None, timeout: int = 120):
    """sanitized_run equals TFLM's outputs; for a layer, every run of it equals the output of
    `model_bytes`, which must then be that layer alone. Returns the sanitized outputs."""
    ours = sanitized_run(cm, xs, layer, timeout)
    refs = _as_list(tflm_run(model_bytes, xs))
    names = None
    if layer is not None:
        names = [f"run {r} (1 = output over input)" for r in range(len(ours))]
        refs = refs * (len(ours) // len(refs))
    _assert_same(ours, refs, names)
    return ours
