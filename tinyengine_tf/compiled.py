"""CompiledModel: what convert() returns. Runs the generated C on this host, saves C projects."""
from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tinyengine_tf import toolchain
from tinyengine_tf.codegen import Generated, io_params
from tinyengine_tf.errors import InvalidInputError, TinyEngineError
from tinyengine_tf.ir import C_TYPES, Graph

_NP = {"int8": np.int8, "float32": np.float32, "int16": np.int16, "int32": np.int32, "uint8": np.uint8}


class CompiledModel:
    def __init__(self, graph: Graph, generated: Generated, tflite: bytes, source_graph: Graph):
        self.graph = graph
        self.name = graph.name
        self._gen = generated
        self.tflite = tflite                 # the int8 flatbuffer this was compiled from
        self.source_graph = source_graph     # before passes, op for op as TFLM runs it
        self._lib = None
        self._report = None
        self.patch_choice = None             # patches="auto": the search's Choice (patch_search.py)
        self.unpatched_graph = graph         # the graph op by op, for the report's side-by-side
        self.input_in_arena = True

    # -- facts -------------------------------------------------------------------------------
    @property
    def sources(self) -> dict:
        return dict(self._gen.sources)

    @property
    def plan(self):
        return self._gen.plan

    @property
    def peak_sram(self) -> int:
        return self._gen.plan.arena_size

    @property
    def flash(self) -> int:
        return self._gen.flash_bytes

    @property
    def state_bytes(self) -> int:
        """Persistent state (LSTM/SVDF states, variables): its own static buffer, not the arena."""
        state = getattr(self._gen, "state", None)
        return state.size if state else 0

    @property
    def stateful(self) -> bool:
        return self.state_bytes > 0

    def reset(self):
        """Set the state back to its reset value, as the generated <name>_reset() does (and the
        TFLite Micro interpreter's reset()). A no-op for a stateless model."""
        if self.stateful and self._lib is not None:
            getattr(self._lib, f"{self.prefix}_reset")()

    @property
    def patched(self):
        """The PatchedPrefix run patch by patch (passes/patches.py), or None."""
        op = self.graph.ops[0] if self.graph.ops else None
        return op.options["patched"] if op is not None and op.kind == "PATCHED_PREFIX" else None

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference as compiled (halo recomputation included)."""
        from tinyengine_tf.profile import graph_macs
        return graph_macs(self.graph)

    @property
    def prefix(self) -> str:
        return self._gen.prefix

    def _io(self, which):
        ids = self.graph.inputs if which == "in" else self.graph.outputs
        return [self.graph.t(i) for i in ids]

    @property
    def input_details(self) -> list:
        return [_details(t) for t in self._io("in")]

    @property
    def output_details(self) -> list:
        return [_details(t) for t in self._io("out")]

    def __repr__(self):
        return (f"<CompiledModel {self.name!r}: {len(self.graph.ops)} ops, peak SRAM "
                f"{self.peak_sram:,} B, Flash {self.flash:,} B>")

    # -- running on the host -------------------------------------------------------------------
    def host_sources(self) -> dict:
        """The model plus a batch harness the ctypes runner calls."""
        p = self.prefix
        _, io = io_params(self.graph)
        args = []
        ni = no = 0
        for t, pname, is_in in io:
            base = f"ins[{ni}]" if is_in else f"outs[{no}]"
            size = self.graph.t(t).nbytes
            args.append(f"({'const ' if is_in else ''}{_ctype(self.graph.t(t))} *)"
                        f"(({ 'const ' if is_in else ''}char *){base} + (size_t)i * {size})")
            if is_in:
                ni += 1
            else:
                no += 1
        harness = f"""#include <stddef.h>
#include <stdint.h>
#include "{p}.h"
int te_host_batch(const void *const *ins, void *const *outs, int n);
int te_host_repeat(const void *const *ins, void *const *outs, int n);
int te_host_failed_step(void);
/* The invocation at which te_host_batch stopped (its nonzero return is {p}_invoke's). */
static int te_host_step;
int te_host_failed_step(void) {{ return te_host_step; }}
int te_host_batch(const void *const *ins, void *const *outs, int n) {{
  for (int i = 0; i < n; ++i) {{
    const int rc = {p}_invoke({', '.join(args)});
    if (rc != 0) {{ te_host_step = i; return rc; }}
  }}
  return 0;
}}
int te_host_repeat(const void *const *ins, void *const *outs, int n) {{
  for (int k = 0; k < n; ++k) {{ const int i = 0; {p}_invoke({', '.join(args)}); }}
  return 0;
}}
"""
        return {**self._gen.sources, "te_host.c": harness}

    def _library(self):
        if self._lib is None:
            path = toolchain.build(self.host_sources())
            if self.stateful:
                # The state is the library's own: a private copy, so two models built from the
                # same sources (one cached .so, one dlopen handle) never share it.
                fd, private = tempfile.mkstemp(prefix="te_state_", suffix=".so")
                os.close(fd)
                shutil.copy2(path, private)
                self._private_lib = private
                path = private
            self._lib = toolchain.load(path)
            if self.stateful:
                os.unlink(self._private_lib)
            for fn in ("te_host_batch", "te_host_repeat"):
                getattr(self._lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
                getattr(self._lib, fn).restype = ctypes.c_int
            self._lib.te_host_failed_step.argtypes = []
            self._lib.te_host_failed_step.restype = ctypes.c_int
        return self._lib

    def _prepare_inputs(self, x):
        ins = self._io("in")
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(ins):
            raise TinyEngineError(f"the model takes {len(ins)} inputs, run() got {len(xs)}")
        batched, n, arrays = None, None, []
        for k, (a, t) in enumerate(zip(xs, ins)):
            a = np.asarray(a)
            want = _NP[t.dtype]
            sample = _sample_shape(t)
            if tuple(a.shape) == sample:
                b, a = False, a[None]
            elif tuple(a.shape[1:]) == sample:
                b = True
            else:
                raise TinyEngineError(f"input {k} has shape {list(a.shape)}; the model expects "
                                      f"{list(sample)} or a batch of it, (N, {', '.join(map(str, sample))})")
            if a.dtype != want:
                if want == np.int8 and np.issubdtype(a.dtype, np.integer) and a.size and \
                        (a.min() < -128 or a.max() > 127):
                    raise TinyEngineError(f"input {k} holds values outside int8 [-128, 127]; quantize it "
                                          f"with scale {t.s:g} and zero point {t.zp} first")
                if want == np.int8 and not np.issubdtype(a.dtype, np.integer):
                    raise TinyEngineError(f"input {k} is {a.dtype}, but the model's input is int8: "
                                          f"quantize it first, q = round(x / {t.s:g}) + {t.zp}")
                a = a.astype(want)
            if batched is not None and (b != batched or a.shape[0] != n):
                raise TinyEngineError("all inputs must have the same batch size")
            batched, n = b, a.shape[0]
            arrays.append(np.ascontiguousarray(a))
        return arrays, n, batched

    def run(self, x, target: str = "host", float_abi: str = "soft"):
        """Run the generated C on x: (N, *input_shape) or input_shape; int8 in, int8 out.

        target "host" runs it compiled for this machine; "cortex-m4", "cortex-m7" or "cortex-m55"
        runs the firmware under QEMU, built with float_abi "soft" (newlib's soft-float routines)
        or "hard" (the part's FPU, -mfloat-abi=hard: -mfpu=fpv4-sp-d16 on a Cortex-M4).

        A stateful model (``state_bytes > 0``) treats a batch of N inputs as N consecutive steps;
        on the host each call continues from the state the previous one left (``reset()`` starts
        over). A firmware run is a fresh boot of another machine: its N steps start from the
        boot state (the state image: zeros, or a variable's initializer, as a new TFLM
        interpreter starts), whatever the host has run, and the host's state is left as it was.
        Compare it with a new TFLM interpreter, not with one that has followed the host.

        An input TFLM's Invoke would fail on (RSQRT below its zero point) raises
        InvalidInputError on the host; the firmware's invoke fails too (a ToolchainError).
        """
        arrays, n, batched = self._prepare_inputs(x)
        outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in self._io("out")]
        if target != "host":
            self._run_firmware(target, arrays, n, outs, float_abi=float_abi)
            if not batched:
                outs = [o[0] for o in outs]
            return outs[0] if len(outs) == 1 else outs
        lib = self._library()
        in_ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        rc = lib.te_host_batch(ctypes.cast(in_ptrs, ctypes.c_void_p),
                               ctypes.cast(out_ptrs, ctypes.c_void_p), n)
        if rc:
            raise self._invoke_error(rc, int(lib.te_host_failed_step()))
        if not batched:
            outs = [o[0] for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def _invoke_error(self, rc: int, step: int) -> InvalidInputError:
        """<name>_invoke's nonzero return, layer rc - 1 (a kernel with LayerCode.fails)."""
        op = self._gen.layers[rc - 1][0]
        return InvalidInputError(
            f"{op.label()}: input {step} of the batch holds a value below the layer's input zero "
            "point (a negative real), where TFLite Micro's Invoke fails too (\"Rsqrt is only "
            "defined for positive values\"); the invocation stopped there (the state of a "
            "stateful model stays as that invocation left it) and no outputs are returned. Feed RSQRT non-negative values (e.g. a RELU before it)")

    def build_firmware(self, target: str = "cortex-m4", sram: int = 320 * 1024,
                       flash: int = 1024 * 1024, **kw):
        """Link the model into Cortex-M firmware with exactly these budgets; sizes from the ELF.

        float_abi="hard" builds for the part's FPU (-mfloat-abi=hard), "soft" (the default)
        without it; opt, dsp and extra_flags as in firmware.build_firmware."""
        from tinyengine_tf.firmware import build_firmware
        return build_firmware(self, target, sram=sram, flash=flash, **kw)

    def _run_firmware(self, target, arrays, n, outs, trace=False, **kw):
        from tinyengine_tf.firmware import run_qemu, run_qemu_streamed
        fw = self.build_firmware(target, **kw)
        sizes = [o[0].nbytes for o in outs]
        if trace == "stream":   # counted as QEMU runs, no log file (firmware.run_qemu_streamed)
            data, counts = run_qemu_streamed(fw, arrays, n, sum(sizes))
        else:
            data, counts = run_qemu(fw, arrays, n, sum(sizes), trace=trace)
        rec = np.frombuffer(data, dtype=np.uint8).reshape(n, sum(sizes))
        pos = 0
        for o, size in zip(outs, sizes):
            o[...] = rec[:, pos:pos + size].copy().view(o.dtype).reshape(o.shape)
            pos += size
        return counts

    def profile(self, target: str = "cortex-m4", x=None, **kw):
        """Instructions executed per inference and per layer under QEMU, and per MAC."""
        from tinyengine_tf.profile import profile
        return profile(self, target, x, **kw)

    def time_host(self, x, iters: int) -> float:
        """Seconds per inference of the compiled C on this host, same input repeated."""
        import time
        arrays, _, _ = self._prepare_inputs(x)
        outs = [np.empty((1, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in self._io("out")]
        lib = self._library()
        in_ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        ip, op = ctypes.cast(in_ptrs, ctypes.c_void_p), ctypes.cast(out_ptrs, ctypes.c_void_p)
        lib.te_host_repeat(ip, op, 1)
        t0 = time.perf_counter()
        lib.te_host_repeat(ip, op, iters)
        return (time.perf_counter() - t0) / iters

    # -- output -----------------------------------------------------------------------------
    def save(self, out_dir) -> Path:
        """Write a self-contained C project (sources, Makefile, README, the model's report)."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise TinyEngineError(f"{out_dir} exists and is not a directory")
        files = dict(self.sources)
        files["Makefile"] = _makefile(self.prefix, [n for n in files if n.endswith(".c")])
        files["main.c"] = self._example_main()
        files["README.md"] = self._project_readme()
        # Write everything next to the target first, then move: no half-written project.
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".te_save_", dir=out_dir.parent))
        try:
            for name, text in files.items():
                (tmp / name).write_text(text)
            self._write_extras(tmp)
            out_dir.mkdir(exist_ok=True)
            for item in tmp.iterdir():
                os.replace(item, out_dir / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out_dir

    def memory_report(self, measure_tflm: bool = True):
        """TinyEngine's plan against TFLite Micro's measured arena, per layer and in total."""
        from tinyengine_tf.report import build_report
        if self._report is None or (measure_tflm and self._report.tflm is None):
            self._report = build_report(self, measure_tflm=measure_tflm)
        return self._report

    def _write_extras(self, directory: Path):
        rep = self.memory_report()
        (directory / "memory_report.md").write_text(rep.to_markdown())
        rep.to_html(directory / "memory_report.html")
        rep.plot(directory / "memory_report.png")

    def _example_main(self) -> str:
        p = self.prefix
        params, io = io_params(self.graph)
        decls, args = [], []
        for t, pname, is_in in io:
            tt = self.graph.t(t)
            decls.append(f"static {_ctype(tt)} {pname}[{tt.numel}];")
            args.append(pname)
        del params
        return f"""/* Example: one inference on zeros, prints the first output value. */
#include <stdio.h>
#include "{p}.h"
{chr(10).join(decls)}
int main(void) {{
  {p}_invoke({', '.join(args)});
  printf("out0[0] = %d\\n", (int)out0[0]);
  return 0;
}}
"""

    def _state_readme_line(self) -> str:
        if not self.stateful:
            return ""
        return (f"- persistent state (LSTM/SVDF states, variables), outside the arena: "
                f"{self.state_bytes:,} bytes; it carries over between `{self.prefix}_invoke()` calls "
                f"and `{self.prefix}_reset()` sets it back\n")

    def _project_readme(self) -> str:
        ins = ", ".join(t.describe() for t in self._io("in"))
        outs = ", ".join(t.describe() for t in self._io("out"))
        return f"""# {self.name}: generated by tinyengine-tf

- inputs: {ins}
- outputs: {outs}
- arena (all activations, inputs, outputs and scratch): {self.peak_sram:,} bytes
- constants (weights, biases, multipliers): {self.flash:,} bytes
{self._state_readme_line()}
`make` builds `{self.prefix}_demo` for this machine; `make CROSS=arm-none-eabi- CPU=cortex-m4`
builds an object file for a Cortex-M part. Call `{self.prefix}_invoke()` from your firmware.
"""


def _ctype(t) -> str:
    return C_TYPES[t.dtype]


def _sample_shape(t) -> tuple:
    shape = tuple(t.shape)
    return shape[1:] if len(shape) > 1 and shape[0] == 1 else shape


def _details(t) -> dict:
    return {"name": t.name, "shape": tuple(t.shape), "dtype": t.dtype,
            "scale": float(t.scale[0]) if t.quantized else None, "zero_point": t.zp}


def _makefile(prefix: str, cfiles: list) -> str:
    objs = " ".join(c[:-2] + ".o" for c in cfiles if c != "main.c")
    return f"""# Generated by tinyengine-tf.
CROSS ?=
CC := $(CROSS)gcc
CPU ?=
CFLAGS ?= -O2
WARN := -std=c99 -Wall -Wextra -Werror
ifneq ($(CPU),)
ARCH := -mcpu=$(CPU) -mthumb
endif

all: $(if $(CROSS),{objs},{prefix}_demo)

%.o: %.c $(wildcard *.h)
\t$(CC) $(WARN) $(CFLAGS) $(ARCH) -c $< -o $@

{prefix}_demo: {objs} main.o
\t$(CC) $(CFLAGS) $^ -o $@

clean:
\trm -f *.o {prefix}_demo

.PHONY: all clean
"""
