"""Side-by-side with Arm's CMSIS-NN: the same model called layer by layer through CMSIS-NN.

For a compiled model, ``program(cm)`` writes a plain C program that calls, for every op of the
source model as TFLite Micro runs it, the CMSIS-NN function TFLM's ``kernels/cmsis_nn`` kernel
calls (arm_convolve_wrapper_s8, arm_depthwise_conv_wrapper_s8, arm_fully_connected_wrapper_s8,
arm_elementwise_add_s8, arm_avgpool_s8, arm_softmax_s8, arm_pad_s8; RESHAPE aliases its input),
with the parameters TFLM's Prepare computes (per-channel multipliers and shifts, padding,
activation ranges, offsets) and scratch buffers sized by CMSIS-NN's own *_get_buffer_size
functions (measured by running them on the target first). No interpreter: one static arena
planned greedily (TFLM's strategy), one scratch buffer shared by the layers.

``compare(cm, cmsis_dir=...)`` builds that program and ours for a Cortex-M4 (arm-none-eabi-gcc
-O2, DSP on, -ffunction-sections -fdata-sections -Wl,--gc-sections), runs both under QEMU and
counts instructions per layer with the calls each layer makes charged to it.

CMSIS-NN itself is not part of this project: it is built from a checkout given by path
(default ../shared/vendor/cmsis-nn next to the repository, or $TINYENGINE_CMSIS_NN), never
copied or included in generated models.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyengine_tf import firmware, quant, toolchain
from tinyengine_tf.errors import TinyEngineError, ToolchainError
from tinyengine_tf.kernels.softmax import softmax_params
from tinyengine_tf.profile import op_macs

OPT_FLAGS = ("-O2", "-ffunction-sections", "-fdata-sections", "-fno-strict-aliasing")
SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D",
             "SOFTMAX", "PAD", "RESHAPE")
ALIGN = 16
PREFIX = "cn"


def default_dir() -> Path:
    env = os.environ.get("TINYENGINE_CMSIS_NN")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "vendor" / "cmsis-nn"


def _check_dir(cmsis_dir) -> Path:
    d = Path(cmsis_dir) if cmsis_dir is not None else default_dir()
    if not (d / "Include" / "arm_nnfunctions.h").is_file() or not (d / "Source").is_dir():
        raise ToolchainError(f"no CMSIS-NN checkout at {d} (want Include/arm_nnfunctions.h and "
                             "Source/): clone github.com/ARM-software/CMSIS-NN and pass its path")
    return d


def library_sources(cmsis_dir: Path) -> list:
    """The integer kernels (float, f16 and Python bindings left out)."""
    files = []
    for p in sorted((cmsis_dir / "Source").rglob("*.c")):
        if "Bindings" in p.parts or p.stem.endswith(("_f16", "_f32", "_flt")):
            continue
        files.append(p)
    return files


def build_library(cmsis_dir, cpu_flags) -> Path:
    """libcmsis-nn.a for these CPU flags, cached by the sources' contents and the flags."""
    d = _check_dir(cmsis_dir)
    cc = firmware._tool("arm-none-eabi-gcc")
    ar = firmware._tool("arm-none-eabi-ar")
    files = library_sources(d)
    flags = [*OPT_FLAGS, *cpu_flags]
    h = hashlib.sha256(" ".join(flags).encode())
    for p in files + sorted((d / "Include").rglob("*.h")):
        h.update(str(p.relative_to(d)).encode() + b"\0" + p.read_bytes())
    out = toolchain.cache_dir() / f"cmsisnn_{h.hexdigest()[:24]}.a"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="te_cmsisnn_") as tmp:
        objs = []
        for i, p in enumerate(files):   # numbered: two sources may share a name
            o = Path(tmp, f"{i:03d}_{p.stem}.o")
            proc = subprocess.run([cc, *flags, "-I", str(d / "Include"), "-c", str(p), "-o", str(o)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise ToolchainError(f"compiling CMSIS-NN's {p.name} failed:\n{proc.stderr[-3000:]}")
            objs.append(str(o))
        lib = Path(tmp, "lib.a")
        subprocess.run([ar, "rcs", str(lib), *objs], check=True, capture_output=True, timeout=300)
        tmp_out = out.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy2(lib, tmp_out)
        os.replace(tmp_out, out)
    return out


# -- the program ------------------------------------------------------------------------------

@dataclass
class Layer:
    step: int
    op: object
    function: str         # the C function that runs it ("" for a view: RESHAPE)
    macs: int
    call: str = ""        # the CMSIS-NN function it calls
    size_expr: str = ""   # C expression of its scratch size (a *_get_buffer_size call), or ""


@dataclass
class Program:
    sources: dict
    layers: list
    arena_bytes: int
    offsets: dict                    # tensor index -> arena offset
    weights_bytes: int               # the model's constant tensors (weights, biases)
    constants_bytes: int             # every constant array: + per-channel multipliers and shifts
    input_tensors: list
    output_tensors: list
    scratch: list = field(default_factory=list)   # per layer, from *_get_buffer_size

    @property
    def scratch_bytes(self) -> int:
        return max(self.scratch, default=0)


def _c_array(ctype: str, name: str, values) -> str:
    vals = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in vals) if len(vals) else "0"
    return f"static const {ctype} {name}[{max(len(vals), 1)}] __attribute__((aligned(4))) = {{{body}}};"


def _dims(n, h, w, c) -> str:
    return f"{{{int(n)}, {int(h)}, {int(w)}, {int(c)}}}"


def _nhwc(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    shape = (1,) * (4 - len(shape)) + shape
    return shape


def _padding(op, g, x, y, kh, kw) -> tuple:
    o = op.options
    if o.get("padding", "VALID") != "SAME":
        return 0, 0
    sh, sw = o.get("stride_h", 1), o.get("stride_w", 1)
    dh, dw = o.get("dilation_h_factor", 1), o.get("dilation_w_factor", 1)
    ph = quant.same_padding(x.shape[1], kh, sh, dh, y.shape[1])
    pw = quant.same_padding(x.shape[2], kw, sw, dw, y.shape[2])
    return ph, pw


def _act(op, y) -> tuple:
    return quant.activation_range(op.options.get("fused_activation_function"), y.s, y.zp)


def _plan(g) -> tuple[dict, int]:
    """Greedy arena plan over the source graph (largest tensor first, lowest offset whose
    lifetime does not clash), as TFLM's GreedyMemoryPlanner; RESHAPE's output is its input."""
    alias = {}
    for op in g.ops:
        if op.kind == "RESHAPE":
            alias[op.outputs[0]] = alias.get(op.inputs[0], op.inputs[0])
    life: dict = {}

    def touch(t, step):
        t = alias.get(t, t)
        lo, hi = life.get(t, (step, step))
        life[t] = (min(lo, step), max(hi, step))

    for t in g.inputs:
        touch(t, -1)
    for step, op in enumerate(g.ops):
        for t in op.inputs + op.outputs:
            if t >= 0 and not g.t(t).is_const:
                touch(t, step)
    for t in g.outputs:
        touch(t, len(g.ops))
    placed, offsets = [], {}
    for t in sorted(life, key=lambda t: (-g.t(t).nbytes, life[t][0])):
        size = -(-g.t(t).nbytes // ALIGN) * ALIGN
        lo, hi = life[t]
        clashes = sorted((o, s) for (o, s, a, b) in placed if not (b < lo or a > hi))
        off = 0
        for o, s in clashes:
            if off + size <= o:
                break
            off = max(off, o + s)
        placed.append((off, size, lo, hi))
        offsets[t] = off
    for t, a in alias.items():
        offsets[t] = offsets[a]
    arena = max((o + s for o, s, _, _ in placed), default=0)
    return offsets, arena


def program(cm) -> Program:
    """The CMSIS-NN layer-by-layer C program of cm's source model (as TFLM runs it)."""
    g = cm.source_graph
    for t in g.inputs + g.outputs:
        if g.t(t).dtype != "int8":
            raise TinyEngineError("the CMSIS-NN side-by-side takes int8 inputs and outputs only")
    bad = sorted({op.kind for op in g.ops if op.kind not in SUPPORTED})
    if bad:
        raise TinyEngineError(f"the CMSIS-NN side-by-side does not call {', '.join(bad)} (it "
                              f"covers {', '.join(SUPPORTED)})")
    offsets, arena = _plan(g)
    consts, funcs, layers, size_cases = [], [], [], []
    weights = 0
    seen_const = set()

    def A(t):
        return f"({PREFIX}_arena + {offsets[t]})"

    def const(t, ctype, name, values=None):
        nonlocal weights
        tt = g.t(t)
        if t not in seen_const:
            seen_const.add(t)
            weights += tt.nbytes
            consts.append(_c_array(ctype, name, tt.data if values is None else values))
        return name

    table_bytes = 0

    def tables(step, q, sh):
        nonlocal table_bytes
        consts.append(_c_array("int32_t", f"{PREFIX}_m{step}", q))
        consts.append(_c_array("int32_t", f"{PREFIX}_s{step}", sh))
        table_bytes += 8 * len(q)

    for step, op in enumerate(g.ops):
        fname = f"{PREFIX}_L{step}_{op.kind.lower()}"
        lay = Layer(step, op, fname, op_macs(op, g))
        body, size = [], ""
        k = op.kind
        if k == "RESHAPE":
            lay.function = ""
            layers.append(lay)
            continue
        x = g.t(op.inputs[0])
        y = g.t(op.outputs[0])
        if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = g.t(op.inputs[1])
            has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
            n, ih, iw, ic = _nhwc(x.shape)
            _, oh, ow, oc = _nhwc(y.shape)
            kh, kw = int(w.shape[1]), int(w.shape[2])
            ph, pw = _padding(op, g, x, y, kh, kw)
            lo, hi = _act(op, y)
            q, sh = quant.channel_multipliers(x.s, w.scale, y.s, oc)
            wname = const(op.inputs[1], "int8_t", f"{PREFIX}_w{op.inputs[1]}")
            bname = const(op.inputs[2], "int32_t", f"{PREFIX}_b{op.inputs[2]}") if has_bias else "NULL"
            tables(step, q, sh)
            o = op.options
            stride = f"{{{o.get('stride_w', 1)}, {o.get('stride_h', 1)}}}"
            dil = f"{{{o.get('dilation_w_factor', 1)}, {o.get('dilation_h_factor', 1)}}}"
            if k == "CONV_2D":
                # TFLM: filter_dims {1, kh, kw, filter input channels}, padding from Prepare.
                params = (f"static const cmsis_nn_conv_params p = {{{-x.zp}, {y.zp}, {stride}, "
                          f"{{{pw}, {ph}}}, {dil}, {{{lo}, {hi}}}}};")
                fdims = _dims(1, kh, kw, w.shape[3])
                call = "arm_convolve_wrapper_s8"
            else:
                ch_mult = oc // ic
                params = (f"static const cmsis_nn_dw_conv_params p = {{{-x.zp}, {y.zp}, {ch_mult}, "
                          f"{stride}, {{{pw}, {ph}}}, {dil}, {{{lo}, {hi}}}}};")
                fdims = _dims(w.shape[0], kh, kw, oc)
                call = "arm_depthwise_conv_wrapper_s8"
            body += [params,
                     f"static const cmsis_nn_per_channel_quant_params q = {{(int32_t *){PREFIX}_m{step}, "
                     f"(int32_t *){PREFIX}_s{step}}};",
                     f"static const cmsis_nn_dims in = {_dims(n, ih, iw, ic)}, f = {fdims}, "
                     f"b = {_dims(1, 1, 1, oc)}, out = {_dims(n, oh, ow, oc)};"]
            args = (f"&p, &q, &in, {A(op.inputs[0])}, &f, {wname}, &b, {bname}, &out, "
                    f"{A(op.outputs[0])}")
            body.append(f"return {call}(&ctx, {args});")
            size = f"{call}_get_buffer_size(&p, &in, &f, &out)"
        elif k == "FULLY_CONNECTED":
            w = g.t(op.inputs[1])
            has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
            depth, out_c = int(w.shape[-1]), int(y.shape[-1])
            batches = y.numel // out_c
            if len(y.shape) > 2 and depth % 4 == 0:
                raise TinyEngineError(f"{op.label()}: TFLM runs this FULLY_CONNECTED as "
                                      "arm_convolve_1x1_s8_fast, which the side-by-side does not call")
            lo, hi = _act(op, y)
            q, sh = quant.channel_multipliers(x.s, w.scale[:out_c], y.s, out_c if w.per_channel else 1)
            wname = const(op.inputs[1], "int8_t", f"{PREFIX}_w{op.inputs[1]}")
            bname = const(op.inputs[2], "int32_t", f"{PREFIX}_b{op.inputs[2]}") if has_bias else "NULL"
            tables(step, q, sh)
            body += [f"static const cmsis_nn_fc_params p = {{{-x.zp}, {-w.zp}, {y.zp}, {{{lo}, {hi}}}}};",
                     f"static const cmsis_nn_quant_params q = {{(int32_t *){PREFIX}_m{step}, "
                     f"(int32_t *){PREFIX}_s{step}, {1 if w.per_channel else 0}}};",
                     f"static const cmsis_nn_dims in = {_dims(batches, 1, 1, depth)}, "
                     f"f = {_dims(depth, 1, 1, out_c)}, b = {_dims(1, 1, 1, out_c)}, "
                     f"out = {_dims(batches, 1, 1, out_c)};",
                     f"return arm_fully_connected_wrapper_s8(&ctx, &p, &q, &in, {A(op.inputs[0])}, &f, "
                     f"{wname}, &b, {bname}, &out, {A(op.outputs[0])});"]
            call = "arm_fully_connected_wrapper_s8"
            # TFLM (DSP build): arm_fully_connected_s8_get_buffer_size; the kernel sums are
            # only precomputed where that size is not 0.
            size = "arm_fully_connected_s8_get_buffer_size(&f)"
        elif k == "ADD":
            x2 = g.t(op.inputs[1])
            if tuple(x.shape) != tuple(x2.shape) or tuple(x.shape) != tuple(y.shape):
                raise TinyEngineError(f"{op.label()}: broadcasting ADD runs TFLM's reference code, "
                                      "not CMSIS-NN")
            lo, hi = _act(op, y)
            twice = 2.0 * max(x.s, x2.s)
            m1, m2, mo = x.s / twice, x2.s / twice, twice / ((1 << 20) * y.s)
            (q1, s1), (q2, s2), (qo, so) = (quant.quantize_multiplier(m) for m in (m1, m2, mo))
            call = "arm_elementwise_add_s8"
            body.append(f"return {call}({A(op.inputs[0])}, {A(op.inputs[1])}, {-x.zp}, {q1}, {s1}, "
                        f"{-x2.zp}, {q2}, {s2}, 20, {A(op.outputs[0])}, {y.zp}, {qo}, {so}, {lo}, "
                        f"{hi}, {y.numel});")
        elif k == "AVERAGE_POOL_2D":
            o = op.options
            n, ih, iw, c = _nhwc(x.shape)
            _, oh, ow, _ = _nhwc(y.shape)
            kh, kw = o["filter_height"], o["filter_width"]
            ph, pw = _padding(op, g, x, y, kh, kw)
            lo, hi = _act(op, y)
            call = "arm_avgpool_s8"
            body += [f"static const cmsis_nn_pool_params p = {{{{{o.get('stride_w', 1)}, "
                     f"{o.get('stride_h', 1)}}}, {{{pw}, {ph}}}, {{{lo}, {hi}}}}};",
                     f"static const cmsis_nn_dims in = {_dims(n, ih, iw, c)}, f = {_dims(1, kh, kw, 1)}, "
                     f"out = {_dims(n, oh, ow, c)};",
                     f"return {call}(&ctx, &p, &in, {A(op.inputs[0])}, &f, &out, {A(op.outputs[0])});"]
            size = f"{call}_get_buffer_size({ow}, {c})"
        elif k == "SOFTMAX":
            beta = op.options.get("beta", 1.0)
            sp = softmax_params(beta, x.s)
            if sp is None or y.zp != -128:
                raise TinyEngineError(f"{op.label()}: outside what TFLM's int8 softmax takes")
            mult, shift, diff_min = sp
            row = int(x.shape[-1])
            call = "arm_softmax_s8"
            body += [f"{call}({A(op.inputs[0])}, {x.numel // row}, {row}, {mult}, {shift}, {diff_min}, "
                     f"{A(op.outputs[0])});", "return ARM_CMSIS_NN_SUCCESS;"]
        elif k == "PAD":
            pads = g.t(op.inputs[1]).data.reshape(-1, 2).astype(int)
            rank = len(pads)
            pre = [0] * (4 - rank) + [int(p) for p in pads[:, 0]]
            post = [0] * (4 - rank) + [int(p) for p in pads[:, 1]]
            value = y.zp
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                value = int(g.t(op.inputs[2]).data.reshape(-1)[0])
            call = "arm_pad_s8"
            body += [f"static const cmsis_nn_dims in = {_dims(*_nhwc(x.shape))}, pre = {_dims(*pre)}, "
                     f"post = {_dims(*post)};",
                     f"return {call}({A(op.inputs[0])}, {A(op.outputs[0])}, {value}, &in, &pre, &post);"]
        lay.call = call
        lay.size_expr = size
        head = [f"static __attribute__((noinline)) arm_cmsis_nn_status {fname}(void) {{",
                f"  const cmsis_nn_context ctx = {{{PREFIX}_scratch, CN_SCRATCH}};",
                "  (void)ctx;"]
        funcs.append("\n".join(head + [f"  {line}" for line in body] + ["}"]))
        if size:
            size_cases.append(f"  if (layer == {step}) {{\n    "
                              + "\n    ".join(b for b in body if b.startswith("static const"))
                              + f"\n    return {size};\n  }}")
        layers.append(lay)
    calls = [f"  if ({l.function}() != ARM_CMSIS_NN_SUCCESS) return {l.step + 1};"
             for l in layers if l.function]
    src = "\n".join([
        "/* Generated by tinyengine-tf: the model called layer by layer through CMSIS-NN, with",
        " * TFLite Micro's parameters (benchmark only; CMSIS-NN is linked from its own build). */",
        "#include <stddef.h>", "#include <stdint.h>", '#include "arm_nnfunctions.h"',
        '#include "cn_model.h"',
        "#ifndef CN_SCRATCH", "#define CN_SCRATCH 0", "#endif",
        f"int8_t {PREFIX}_arena[{max(arena, ALIGN)}] __attribute__((aligned({ALIGN})));",
        "#if CN_SCRATCH > 0",
        f"static int8_t {PREFIX}_scratch_buf[CN_SCRATCH] __attribute__((aligned({ALIGN})));",
        f"#define {PREFIX}_scratch ((void *){PREFIX}_scratch_buf)",
        "#else", f"#define {PREFIX}_scratch NULL", "#endif",
        *consts, *funcs,
        f"int {PREFIX}_invoke(void) {{", *calls, "  return 0;", "}",
        "#ifdef CN_SIZES",
        f"int32_t {PREFIX}_scratch_size(int layer) {{", *size_cases, "  return 0;", "}",
        "#endif", ""])
    header = "\n".join(["#ifndef CN_MODEL_H", "#define CN_MODEL_H", "#include <stdint.h>",
                        f"extern int8_t {PREFIX}_arena[];", f"int {PREFIX}_invoke(void);",
                        f"int32_t {PREFIX}_scratch_size(int layer);", "#endif", ""])
    return Program({"cn_model.c": src, "cn_model.h": header}, layers, arena, offsets, weights,
                   weights + table_bytes, list(g.inputs), list(g.outputs))


def _harness(prog: Program, g) -> str:
    reads = " || ".join(f"te_sh_read(fin, {PREFIX}_arena + {prog.offsets[t]}, {g.t(t).nbytes}) != 0"
                        for t in prog.input_tensors)
    writes = "\n".join(f"    te_sh_write(fout, {PREFIX}_arena + {prog.offsets[t]}, {g.t(t).nbytes});"
                       for t in prog.output_tensors)
    return f"""/* Generated by tinyengine-tf: QEMU harness of the CMSIS-NN program. */
#include <stdint.h>
#include "te_semihost.h"
#include "cn_model.h"
int main(void) {{
  int fin = te_sh_open("te_in.bin", 1);
  int fout = te_sh_open("te_out.bin", 5);
  if (fin < 0 || fout < 0) return 1;
  for (;;) {{
    if ({reads}) break;
    if ({PREFIX}_invoke() != 0) return 2;
{writes}
  }}
  te_sh_close(fin);
  te_sh_close(fout);
  return 0;
}}
"""


def _sizes_harness(prog: Program) -> str:
    return f"""/* Generated by tinyengine-tf: every layer's CMSIS-NN scratch size, on the target. */
#include <stdint.h>
#include "te_semihost.h"
#include "cn_model.h"
int main(void) {{
  int fout = te_sh_open("te_out.bin", 5);
  if (fout < 0) return 1;
  for (int i = 0; i < {len(prog.layers)}; ++i) {{
    int32_t s = {PREFIX}_scratch_size(i);
    te_sh_write(fout, &s, 4);
  }}
  te_sh_close(fout);
  return 0;
}}
"""


@dataclass
class Build:
    program: Program
    firmware: object     # firmware.Firmware
    library: Path


def build_firmware(cm, cmsis_dir=None, target_name: str = "cortex-m4", sram: int = 320 * 1024,
                   flash: int = 1024 * 1024, float_abi: str = "soft") -> Build:
    """Build the CMSIS-NN program of cm for a Cortex-M part (scratch sized on the target)."""
    t = firmware.target(target_name)
    cpu = firmware.cpu_flags(t, float_abi)
    lib = build_library(cmsis_dir, cpu)
    d = _check_dir(cmsis_dir)
    prog = program(cm)
    flags = [*OPT_FLAGS, *cpu, "-std=c99", "-Wall", "-Werror", "-Wno-unused-variable", "-I",
             str(d / "Include")]
    base = {**prog.sources, **firmware.firmware_sources()}
    n_layers = len(prog.layers)
    sizes_fw = firmware.link({**base, "cn_main.c": _sizes_harness(prog)}, t,
                             [*flags, "-DCN_SIZES"], sram, flash, cm.name, libs=(lib,))
    data, _ = firmware.run_qemu(sizes_fw, [np.zeros((1, 1), np.int8)], 1, 4 * n_layers, timeout=120)
    prog.scratch = [int(v) for v in np.frombuffer(data, dtype="<i4")]
    scratch = -(-prog.scratch_bytes // ALIGN) * ALIGN
    fw = firmware.link({**base, "cn_main.c": _harness(prog, cm.source_graph)}, t,
                       [*flags, f"-DCN_SCRATCH={scratch}"], sram, flash, cm.name, libs=(lib,))
    fw.float_abi = float_abi
    return Build(prog, fw, lib)


def run(build: Build, g, x, timeout: float = 600) -> list:
    """The CMSIS-NN firmware's outputs on x (one (N, ...) int8 array per input)."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    n = xs[0].shape[0]
    sizes = [g.t(t).nbytes for t in build.program.output_tensors]
    data, _ = firmware.run_qemu(build.firmware, [np.ascontiguousarray(a, np.int8) for a in xs],
                                n, sum(sizes), timeout=timeout)
    rec = np.frombuffer(data, dtype=np.int8).reshape(n, sum(sizes))
    outs, pos = [], 0
    for t, size in zip(build.program.output_tensors, sizes):
        shape = tuple(g.t(t).shape)
        shape = shape[1:] if len(shape) > 1 and shape[0] == 1 else shape
        outs.append(rec[:, pos:pos + size].reshape((n, *shape)).copy())
        pos += size
    return outs


@dataclass
class LayerCount:
    step: int
    kind: str
    call: str
    instructions: int
    library: int          # of which outside the layer function (CMSIS-NN, memcpy, helpers)
    macs: int

    @property
    def per_mac(self):
        return self.instructions / self.macs if self.macs else None


def profile(build: Build, g, x1, timeout: float = 900) -> tuple[list, int, int]:
    """Per-layer instructions of one inference (everything a layer calls charged to it), the
    invoke body's own, and the whole inference."""
    xs = list(x1) if isinstance(x1, (list, tuple)) else [x1]
    sizes = [g.t(t).nbytes for t in build.program.output_tensors]
    _, trace = firmware.run_qemu(build.firmware, [np.ascontiguousarray(a[:1], np.int8) for a in xs],
                                 1, sum(sizes), timeout=timeout, trace=True)
    owners = {l.function: l.step for l in build.program.layers if l.function}
    charged = firmware.attribute(trace.blocks, owners, f"{PREFIX}_invoke")
    rows = []
    for l in build.program.layers:
        instr = charged.get(l.step, 0)
        own = trace.get(l.function, 0) if l.function else 0
        rows.append(LayerCount(l.step, l.op.kind, l.call, instr, instr - own, l.macs))
    glue = charged.get(f"{PREFIX}_invoke", 0)
    return rows, glue, sum(r.instructions for r in rows) + glue


# -- the comparison ---------------------------------------------------------------------------

@dataclass
class Side:
    name: str
    instructions: int
    macs: int
    code_beyond_weights: int   # Flash - this side's constant arrays (weights, biases, multipliers)
    flash: int
    weights: int               # the model's weight and bias bytes (the same on both sides)
    arena: int
    scratch: int
    layers: list          # [(step, source op index, kind, instructions, library, macs)]
    bit_exact: bool | None = None

    @property
    def per_mac(self) -> float:
        return self.instructions / self.macs if self.macs else float("nan")


@dataclass
class Comparison:
    model: str
    ours: Side
    cmsis: Side
    calls: dict = field(default_factory=dict)     # CMSIS-NN side: step -> function called

    @property
    def ratio(self) -> float:
        return self.ours.instructions / self.cmsis.instructions


def compare(cm, cmsis_dir=None, x=None, target: str = "cortex-m4", reference=None,
            x_check=None) -> Comparison:
    """Ours (cm.build_firmware) against CMSIS-NN layer by layer on the same Cortex-M4 under
    QEMU: instructions per inference and per layer (library calls charged to the calling layer on
    both sides), instructions per MAC, code beyond the weights, arena + scratch.

    x: the sample profiled (default: seeded random int8), one (1, ...) array per input.
    reference: optional callable taking x_check (default x) and returning the expected outputs
    (e.g. the TFLite Micro interpreter's); both firmware images run on x_check first and each
    side's bit_exact records whether it equals them (None without a reference)."""
    from tinyengine_tf.compiled import _sample_shape
    g = cm.source_graph
    if x is None:
        rng = np.random.default_rng(0)
        x = [rng.integers(-128, 128, size=(1, *_sample_shape(g.t(t))), dtype=np.int64).astype(np.int8)
             for t in g.inputs]
    x = list(x) if isinstance(x, (list, tuple)) else [x]
    build = build_firmware(cm, cmsis_dir, target)
    weights = build.program.weights_bytes
    fw = cm.build_firmware(target)
    prof = cm.profile(target, x=x)
    rows, _, total = profile(build, g, x)
    # Code beyond weights as the firmware benchmark and CMSIS-NN's NOTICE count it: Flash minus
    # the side's constant arrays (ours: those of cm.flash the image links; CMSIS-NN: weights,
    # biases, multipliers, shifts).
    ours = Side("tinyengine-tf", prof.invoke_instructions, prof.macs,
                firmware.code_beyond_weights(fw, cm),
                fw.flash_bytes, weights, cm.peak_sram, 0,
                [(l.step, l.op_index, l.kind, l.instructions, l.library, l.macs) for l in prof.layers])
    theirs = Side("CMSIS-NN", total, sum(r.macs for r in rows),
                  build.firmware.flash_bytes - build.program.constants_bytes,
                  build.firmware.flash_bytes, weights, build.program.arena_bytes,
                  build.program.scratch_bytes,
                  [(r.step, g.ops[r.step].index, r.kind, r.instructions, r.library, r.macs)
                   for r in rows])
    if reference is not None:
        xc = x if x_check is None else x_check
        xc = list(xc) if isinstance(xc, (list, tuple)) else [xc]
        want = reference(xc if len(xc) > 1 else xc[0])
        want = list(want) if isinstance(want, (list, tuple)) else [want]
        mine = cm.run(xc if len(xc) > 1 else xc[0], target=target)
        mine = list(mine) if isinstance(mine, (list, tuple)) else [mine]
        n = xc[0].shape[0]
        same = [np.array_equal(np.asarray(a).reshape(n, -1), np.asarray(w).reshape(n, -1))
                for a, w in zip(mine, want)]
        ours.bit_exact = all(same) and len(mine) == len(want)
        theirs_out = run(build, g, xc)
        same = [np.array_equal(a.reshape(n, -1), np.asarray(w).reshape(n, -1))
                for a, w in zip(theirs_out, want)]
        theirs.bit_exact = all(same) and len(theirs_out) == len(want)
    return Comparison(cm.name, ours, theirs, {l.step: l.call for l in build.program.layers})
