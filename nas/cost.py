"""Exact, TensorFlow-free cost of an MCUNet architecture: MACs, Flash and peak SRAM.

``estimate(arch)`` rebuilds the tinyengine_tf IR graph that the TFLite converter emits for
``build_model(arch)`` quantized to int8 (full-integer PTQ or QAT, int8 input and output), runs the
compiler's own passes and memory planner on it, and sums the per-layer constant bytes the kernels
would emit. It therefore equals ``tinyengine_tf.convert(model).peak_sram`` and ``.flash`` byte for
byte, without TensorFlow and without weights.

What the converter emits for a build_model network (checked against TF 2.21 in tests/test_nas_cost.py):

    CONV_2D            every Conv2D; the BatchNormalization after it is folded into the weights and
                       an int32 bias (present even though the Keras conv has none); a following ReLU6
                       is fused (fused_activation_function RELU6). Weights int8 per-channel along
                       dim 0, bias int32 per-channel.
    DEPTHWISE_CONV_2D  every DepthwiseConv2D + BN + ReLU6, same folding; weights (1, k, k, C)
                       per-channel along dim 3.
    ADD                every residual Add (no fused activation).
    MEAN               GlobalAveragePooling2D: axis constant int32 [1, 2], keep_dims False -> (1, C).
    FULLY_CONNECTED    the Dense layer, weights (classes, C) int8, int32 bias. Per-channel (dim 0)
                       after post-training quantization, per-tensor after tfmot's default 8-bit
                       QAT scheme: pass qat=True for a model trained with quantize_model(). (The
                       converter drops an all-zero Dense bias, so an untrained model loses it; any
                       trained model has one, which is what is modelled here; the compiled cost
                       is the same either way.)

Tensor numbering follows the converter's: the input is #0, constants come next, activations are
numbered in execution order after them, the output last. Constant tensors carry zero-stride
placeholder arrays (``np.broadcast_to``), so no weight memory is ever allocated.

Per-layer constant bytes and scratch come from the kernel family's shape-only footprint function
(``tinyengine_tf.kernels.base.FOOTPRINTS``) when it has one, otherwise from emitting that one layer
with placeholder constants (exact but slower). Both are cached per layer signature (op kind,
options, shapes, dtypes, quantization granularity), which by the kernel contract is all they may
depend on.

MACs count multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (the "FLOPs" of
the MCUNet paper, which counts MACs); ADD and MEAN are not counted.

For the stage-1 sweep (a hundred thousand networks) ``FitChecker`` answers "does it fit?" with
the same verdict as ``estimate(arch).fits(...)`` but much faster; see its docstring for how.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nas.space import Arch
from tinyengine_tf.ir import DTYPE_BYTES, Graph, Op, Tensor

_CONV_OPTS = (("padding", "SAME"), ("stride_w", 1), ("stride_h", 1), ("fused_activation_function", "NONE"),
              ("dilation_w_factor", 1), ("dilation_h_factor", 1), ("quantized_bias_type", 0))
_DW_OPTS = (("padding", "SAME"), ("stride_w", 1), ("stride_h", 1), ("depth_multiplier", 1),
            ("fused_activation_function", "RELU6"), ("dilation_w_factor", 1), ("dilation_h_factor", 1))
_ADD_OPTS = {"fused_activation_function": "NONE", "pot_scale_int16": True}
_MEAN_OPTS = {"keep_dims": False}
_FC_OPTS = {"fused_activation_function": "NONE", "weights_format": 0, "keep_num_dims": False,
            "asymmetric_quantize_inputs": False, "quantized_bias_type": 0, "quant_spec": None}


@dataclass
class Cost:
    macs: int
    params: int            # weight + bias elements
    flash: int             # bytes of constant data the compiled model needs
    peak_sram: int         # bytes of the compiled model's one arena
    lower_bound: int = 0   # the planner's op-by-op lower bound on the arena
    layers: list = field(default_factory=list, repr=False)   # per op: (kind, flash, scratch, in_place)
    patches: tuple | None = None   # (split, rows, cols) the peak was costed with (estimate(patches=))
    extra_macs: int = 0            # MACs the patches recompute (halos), on top of .macs

    def fits(self, sram: int | None = None, flash: int | None = None) -> bool:
        return (sram is None or self.peak_sram <= sram) and (flash is None or self.flash <= flash)

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params, "flash": self.flash,
                "peak_sram": self.peak_sram, "lower_bound": self.lower_bound}


# -- the layer list: shapes only ---------------------------------------------------------------
class Layer(NamedTuple):
    """One TFLite op of the converted network, in execution order. `src` are positions of the
    layers whose outputs it reads (-1: the model input)."""
    kind: str
    in_shape: tuple
    out_shape: tuple
    src: tuple
    kernel: int = 0
    stride: int = 1
    cin: int = 0
    relu6: bool = False
    residual: bool = False   # a 1x1 conv that absorbed the ADD after it (its last src: the skip)

    @property
    def key(self) -> tuple:
        """What the op's footprint depends on: everything but where its inputs come from."""
        return (self.kind, self.in_shape, self.out_shape, self.kernel, self.stride, self.relu6,
                self.residual)


def layers_of(arch: Arch, num_classes: int | None = None) -> list:
    """The converter's op sequence for build_model(arch) (see the module docstring)."""
    nc = arch.num_classes if num_classes is None else int(num_classes)
    r, rw, ch = arch.input_shape
    h, w = -(-r // 2), -(-rw // 2)
    c = arch.stem_channels
    out = [Layer("CONV_2D", (1, r, rw, ch), (1, h, w, c), (-1,), 3, 2, ch, True)]
    x = 0
    for b in arch.blocks():
        src, shape = x, (1, h, w, b.cin)
        if b.expand != 1:
            mid = (1, h, w, b.mid)
            out.append(Layer("CONV_2D", shape, mid, (src,), 1, 1, b.cin, True))
            src, shape = len(out) - 1, mid
        h, w = -(-h // b.stride), -(-w // b.stride)
        dw = (1, h, w, b.mid)
        out.append(Layer("DEPTHWISE_CONV_2D", shape, dw, (src,), b.kernel, b.stride, b.mid, True))
        y = (1, h, w, b.cout)
        out.append(Layer("CONV_2D", dw, y, (len(out) - 1,), 1, 1, b.mid, False))
        if b.residual:
            out.append(Layer("ADD", y, y, (x, len(out) - 1)))
        x = len(out) - 1
    c = arch.last_channels
    out.append(Layer("MEAN", (1, h, w, c), (1, c), (x,), cin=c))
    out.append(Layer("FULLY_CONNECTED", (1, c), (1, nc), (len(out) - 1,), cin=c))
    return out


def fused_layers(layers: list) -> list:
    """The layer list as tinyengine_tf's passes leave it (passes/fuse_residual.py): a residual ADD
    that reads the 1x1 stride-1 projection right before it (and nothing else reads that
    projection) is absorbed by the projection, which then also reads the skip. FitChecker
    checks this prediction against the real passes on its probe networks."""
    readers: dict = {}
    for ly in layers:
        for s in ly.src:
            readers[s] = readers.get(s, 0) + 1
    out, index = [], {-1: -1}
    j = 0
    while j < len(layers):
        ly = layers[j]
        nxt = layers[j + 1] if j + 1 < len(layers) else None
        if (nxt is not None and nxt.kind == "ADD" and ly.kind == "CONV_2D" and ly.kernel == 1
                and ly.stride == 1 and readers.get(j, 0) == 1 and j in nxt.src
                and len(set(nxt.src)) == 2 and nxt.out_shape == ly.out_shape):
            skip = next(s for s in nxt.src if s != j)
            if skip < j and (skip < 0 or layers[skip].out_shape == ly.out_shape):
                out.append(ly._replace(src=tuple(index[s] for s in ly.src) + (index[skip],),
                                       residual=True))
                index[j] = index[j + 1] = len(out) - 1
                j += 2
                continue
        out.append(ly._replace(src=tuple(index[s] for s in ly.src)))
        index[j] = len(out) - 1
        j += 1
    return out


def passes_match_layers(arch: Arch, num_classes: int | None = None, qat: bool = False) -> bool:
    """Whether the compiled graph is, op by op, what fused_layers predicts for this network."""
    layers = fused_layers(layers_of(arch, num_classes))
    g = compiled_graph(arch, num_classes, qat=qat)
    if len(g.ops) != len(layers):
        return False
    producer = {g.inputs[0]: -1}
    for k, op in enumerate(g.ops):
        producer[op.outputs[0]] = k
    for ly, op in zip(layers, g.ops):
        srcs = tuple(producer.get(i) for i in op.inputs if i >= 0 and g.t(i).data is None)
        if (op.kind != ly.kind or tuple(g.t(op.outputs[0]).shape) != ly.out_shape
                or ("residual" in op.options) != ly.residual or srcs != ly.src):
            return False
    return True


def macs_of(layers: list) -> int:
    total = 0
    for ly in layers:
        n = ly.out_shape[1] * ly.out_shape[2] if len(ly.out_shape) == 4 else 1
        if ly.kind == "CONV_2D":
            total += n * ly.out_shape[-1] * ly.kernel * ly.kernel * ly.cin
        elif ly.kind == "DEPTHWISE_CONV_2D":
            total += n * ly.out_shape[-1] * ly.kernel * ly.kernel
        elif ly.kind == "FULLY_CONNECTED":
            total += ly.out_shape[-1] * ly.cin
    return total


def params_of(layers: list) -> int:
    total = 0
    for ly in layers:
        oc = ly.out_shape[-1]
        if ly.kind == "CONV_2D":
            total += oc * ly.kernel * ly.kernel * ly.cin + oc
        elif ly.kind == "DEPTHWISE_CONV_2D":
            total += oc * ly.kernel * ly.kernel + oc
        elif ly.kind == "FULLY_CONNECTED":
            total += oc * ly.cin + oc
    return total


def max_activation_bytes(arch: Arch, num_classes: int | None = None) -> int:
    """The largest single int8 activation (input included): every arena must hold it, so it is a
    lower bound on peak SRAM that assumes nothing about the planner."""
    biggest = _numel(arch.input_shape)
    for ly in layers_of(arch, num_classes):
        biggest = max(biggest, int(np.prod(ly.out_shape)))
    return biggest


# -- the IR graph -------------------------------------------------------------------------------
_SCALES: dict = {}


def _q(n: int, value: float, zp: int = 0):
    """Shared (scale, zero_point) arrays: tensors only read them, so one copy per length serves all."""
    key = (n, value, zp)
    if key not in _SCALES:
        pair = (np.full(n, value, np.float32), np.full(n, zp, np.int64))
        for a in pair:
            a.flags.writeable = False   # shared: an in-place edit must fail, not leak
        _SCALES[key] = pair
    return _SCALES[key]


_ZEROS = {"int8": np.zeros((), np.int8), "int32": np.zeros((), np.int32)}


_PLACEHOLDERS: dict = {}


def _placeholder(shape, dtype):
    """A zero-stride read-only array of the right shape: is_const holds, no memory is allocated,
    and one array per shape serves every graph (nothing writes constant data)."""
    key = (shape, dtype)
    arr = _PLACEHOLDERS.get(key)
    if arr is None:
        arr = _PLACEHOLDERS[key] = np.broadcast_to(_ZEROS[dtype], shape)
    return arr


def build_graph(arch: Arch, num_classes: int | None = None, layers: list | None = None,
                qat: bool = False):
    """The tinyengine_tf IR graph the TFLite converter produces for build_model(arch) in int8
    (qat=True: for the tfmot quantize_model() version of it)."""
    layers = layers if layers is not None else layers_of(arch, num_classes)
    tensors: dict = {}
    s_in, z_in = _q(1, 1 / 128, -1)
    tensors[0] = Tensor(0, "input", (1, *arch.input_shape), "int8", s_in, z_in, 0, None)
    n_const = sum(2 if ly.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else
                  1 if ly.kind == "MEAN" else 0 for ly in layers)
    next_const = [1]

    def const(name, shape, dtype, per_channel_n=0, qdim=0, data=None, scale=0.001):
        i = next_const[0]
        next_const[0] += 1
        sc, zp = _q(per_channel_n, scale) if per_channel_n else (None, None)
        tensors[i] = Tensor(i, name, shape, dtype, sc, zp, qdim,
                            _placeholder(shape, dtype) if data is None else data)
        return i

    ops = []
    act = [0] * len(layers)   # tensor index of each layer's output
    first_act = 1 + n_const
    for pos, ly in enumerate(layers):
        oi = first_act + pos
        act[pos] = oi
        srcs = [0 if s < 0 else act[s] for s in ly.src]
        oc = ly.out_shape[-1]
        if ly.relu6:
            sc, zp = _q(1, 6 / 255, -128)
        else:
            sc, zp = _q(1, 0.05, 3)
        tensors[oi] = Tensor(oi, f"a{pos}", ly.out_shape, "int8", sc, zp, 0, None)
        if ly.kind == "CONV_2D":
            w = const(f"w{pos}", (oc, ly.kernel, ly.kernel, ly.cin), "int8", oc, 0)
            b = const(f"b{pos}", (oc,), "int32", oc, 0, scale=1e-5)
            opts = dict(_CONV_OPTS)
            opts["stride_w"] = opts["stride_h"] = ly.stride
            opts["fused_activation_function"] = "RELU6" if ly.relu6 else "NONE"
            ops.append(Op(pos, "CONV_2D", [srcs[0], w, b], [oi], opts))
        elif ly.kind == "DEPTHWISE_CONV_2D":
            w = const(f"w{pos}", (1, ly.kernel, ly.kernel, oc), "int8", oc, 3)
            b = const(f"b{pos}", (oc,), "int32", oc, 0, scale=1e-5)
            opts = dict(_DW_OPTS)
            opts["stride_w"] = opts["stride_h"] = ly.stride
            ops.append(Op(pos, "DEPTHWISE_CONV_2D", [srcs[0], w, b], [oi], opts))
        elif ly.kind == "ADD":
            ops.append(Op(pos, "ADD", srcs, [oi], dict(_ADD_OPTS)))
        elif ly.kind == "MEAN":
            axis = const(f"axis{pos}", (2,), "int32", data=np.array([1, 2], np.int32))
            ops.append(Op(pos, "MEAN", [srcs[0], axis], [oi], dict(_MEAN_OPTS)))
        elif ly.kind == "FULLY_CONNECTED":
            n = 1 if qat else oc   # tfmot quantizes Dense kernels per tensor
            w = const(f"w{pos}", (oc, ly.cin), "int8", n, 0)
            b = const(f"b{pos}", (oc,), "int32", n, 0, scale=1e-5)
            ops.append(Op(pos, "FULLY_CONNECTED", [srcs[0], w, b], [oi], dict(_FC_OPTS)))
        else:  # pragma: no cover - layers_of emits only the kinds above
            raise ValueError(ly.kind)
    # the converter's file order: input, constants, activations
    tensors = dict(sorted(tensors.items()))
    return Graph(tensors=tensors, ops=ops, inputs=[0], outputs=[act[-1]], name=f"nas_{arch.short()}")


# -- per-layer footprints -------------------------------------------------------------------------
_FOOTPRINT_CACHE: dict = {}


def _signature(op, g) -> tuple:
    """Everything a layer's constants and scratch may depend on (the kernel contract)."""
    ts = g.tensors

    def tsig(i):
        if i < 0:
            return None
        t = ts[i]
        sc = t.scale
        return (t.shape, t.dtype, t.data is not None, 0 if sc is None else len(sc), t.quantized_dim)
    try:
        opts = tuple(op.options.items())
        hash(opts)
    except TypeError:  # list-valued options: fall back to their text
        opts = tuple((k, repr(v)) for k, v in op.options.items())
    return (op.kind, opts, tuple(map(tsig, op.inputs)), tuple(map(tsig, op.outputs)))


_CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4,
                "float": 4, "int64_t": 8, "double": 8}


def _emit_one(op, pos: int, g) -> tuple:
    """Emit one layer with placeholder constants: (flash bytes used by its body, scratch, in_place)."""
    from tinyengine_tf.kernels.base import KERNELS, EmitContext

    _ensure_kernels()
    ctx = EmitContext(g, "m")
    ctx.layer = f"L{pos}"
    fn = KERNELS.get(op.kind)
    if fn is None:
        from tinyengine_tf.errors import UnsupportedOpError
        raise UnsupportedOpError(f"{op.label()} has no kernel in tinyengine-tf yet, so its cost "
                                 "cannot be estimated", op.kind, op.index)
    code = fn(op, g, ctx)
    # counted as codegen.generate counts them: the constants the layer's code refers to
    text = code.body + "".join(code.functions)
    flash = sum(int(np.asarray(v).size) * _CTYPE_BYTES[c] for s, c, v in ctx.constants
                if re.search(rf"\b{re.escape(s)}\b", text))
    return flash, int(code.scratch_bytes), bool(code.in_place)


def _unpack_footprint(r):
    """A footprint is (flash, scratch) or (flash, scratch, in_place), or an object with those names."""
    if hasattr(r, "flash_bytes"):
        return int(r.flash_bytes), int(r.scratch_bytes), getattr(r, "in_place", None)
    r = tuple(r)
    return int(r[0]), int(r[1]), (bool(r[2]) if len(r) > 2 else None)


def layer_facts(op, pos: int, g, need_in_place: bool = True) -> tuple:
    """(flash, scratch, in_place) of one op, cached by signature. A footprint that does not say
    whether the op runs in place is completed by emitting the layer once (when the plan needs it)."""
    from tinyengine_tf.kernels.base import FOOTPRINTS

    key = _signature(op, g)
    facts = _FOOTPRINT_CACHE.get(key)
    if facts is not None and (facts[2] is not None or not need_in_place):
        return facts
    fp = FOOTPRINTS.get(op.kind)
    if facts is None and fp is not None:
        facts = _unpack_footprint(fp(op, g))
    if facts is None or (facts[2] is None and need_in_place):
        facts = _emit_one(op, pos, g)
    _FOOTPRINT_CACHE[key] = facts
    return facts


def _ensure_kernels():
    from tinyengine_tf import kernels  # noqa: F401  (importing registers every kernel family)


# -- the estimate ---------------------------------------------------------------------------------
def compiled_graph(arch: Arch, num_classes: int | None = None, layers: list | None = None,
                   qat: bool = False):
    """The graph after tinyengine_tf's passes, as the code generator sees it."""
    from tinyengine_tf.passes import run_passes
    return run_passes(build_graph(arch, num_classes, layers, qat))


def flash_of(g, need_in_place: bool = False) -> tuple:
    """(total Flash, per-op facts) of a compiled graph."""
    from tinyengine_tf.kernels.base import VIEW_OPS
    _ensure_kernels()
    total, facts = 0, []
    for pos, op in enumerate(g.ops):
        if op.kind in VIEW_OPS:
            facts.append((op.kind, 0, 0, False))
            continue
        f, s, ip = layer_facts(op, pos, g, need_in_place)
        total += f
        facts.append((op.kind, f, s, ip))
    return total, facts


def plan_of(g, facts: list):
    """The memory plan the code generator would make, via the compiler's own planner (with the
    in-place depthwise bands it picks, tinyengine_tf/band_plan.py)."""
    from tinyengine_tf import band_plan
    scratch = {pos: s for pos, (kind, f, s, ip) in enumerate(facts) if s}
    in_place = {pos: bool(ip) for pos, (kind, f, s, ip) in enumerate(facts)}
    return band_plan.plan(g, scratch, in_place)[0]


def estimate(arch: Arch, num_classes: int | None = None, qat: bool = False, patches=None,
             max_mac_overhead: float = 0.2, input_in_arena: bool = True) -> Cost:
    """MACs, parameters, Flash and peak SRAM of build_model(arch, num_classes) compiled by
    tinyengine_tf, without TensorFlow. num_classes defaults to arch.num_classes. qat=True costs
    the model as tfmot's quantize_model() exports it (its Dense layer is quantized per tensor);
    the default is post-training quantization (te.convert(model, representative_dataset)).

    patches and max_mac_overhead, input_in_arena: as te.convert's; the peak is then the one
    te.convert(model, patches=..., ...) compiles to, and .patches says which setting it is
    ("auto" keeps op-by-op execution when no setting beats it: .patches is None)."""
    layers = layers_of(arch, num_classes)
    g = compiled_graph(arch, num_classes, layers, qat)
    flash, facts = flash_of(g, need_in_place=True)
    if patches is not None or not input_in_arena:
        from tinyengine_tf.patch_search import patched_cost
        best, lower = patched_cost(g, patches, max_mac_overhead, input_in_arena)
        return Cost(macs=macs_of(layers), params=params_of(layers), flash=flash,
                    peak_sram=best.peak_sram, lower_bound=lower, layers=facts,
                    patches=best.setting, extra_macs=best.extra_macs)
    plan = plan_of(g, facts)
    return Cost(macs=macs_of(layers), params=params_of(layers), flash=flash,
                peak_sram=plan.arena_size, lower_bound=plan.lower_bound, layers=facts)


def _live_bound(steps: int, buffers: list, ops: list) -> int:
    """max over steps of the bytes that must be live together.

    buffers: (nbytes, first, last) per buffer; ops: per step (output buffer, input buffers,
    scratch bytes, in_place) with buffers as indices into `buffers` (None for constants)."""
    live = [0] * (steps + 1)
    for nbytes, lo, hi in buffers:
        live[lo] += nbytes
        live[hi + 1] -= nbytes
    for k in range(1, steps + 1):
        live[k] += live[k - 1]
    for k, (o, ins, scratch, in_place) in enumerate(ops):
        live[k] += scratch
        if in_place is False or o is None:
            continue
        credit = 0
        for i in ins:
            if i is not None and i != o and buffers[i][2] == k:
                credit = max(credit, min(buffers[i][0], buffers[o][0]))
        live[k] -= credit
    return max(live[:steps])


def least_scratch(op, g, fact) -> int:
    """A layer's scratch as the bounds count it: the smallest the planner may shrink it to (an
    in-place depthwise band, a fused residual conv's chunk: tinyengine_tf/band_plan.py), since
    it shrinks them only after planning. Only layers that may run in place shrink."""
    from tinyengine_tf import band_plan
    if not fact[2] or fact[3] is False:
        return fact[2]
    return min([fact[2]] + [s for _, s in band_plan.choices(op, g)])


def live_lower_bound(g, facts: list) -> int:
    """Bytes that must sit in the arena together at some step, whatever the planner does.

    A tensor occupies its bytes from the step that writes it to the last step that reads it (model
    inputs from step 0, outputs to the end); an op's scratch is live during its step. Only an op a
    kernel declares in place may write its output over an input that dies there (credited with
    the smaller of the two); an unknown in-place flag is credited too, which keeps the bound
    valid. Views share their source's bytes. Every correct plan is at least this large.
    """
    from tinyengine_tf.kernels.base import VIEW_OPS
    ops, ts = g.ops, g.tensors
    steps = max(len(ops), 1)
    root: dict = {}
    for op in ops:
        if op.kind in VIEW_OPS:
            root[op.outputs[0]] = root.get(op.inputs[0], op.inputs[0])
    io = set(g.inputs) | set(g.outputs)
    span: dict = {}

    def buf(t):
        t = root.get(t, t)
        tt = ts[t]
        return None if tt.data is not None or (tt.dtype == "float32" and t in io) else t

    def touch(t, step):
        t = buf(t)
        if t is not None:
            lo_hi = span.get(t)
            span[t] = (step, step) if lo_hi is None else (min(lo_hi[0], step), max(lo_hi[1], step))

    for t in g.inputs:
        touch(t, 0)
    for step, op in enumerate(ops):
        for t in op.inputs + op.outputs:
            if t >= 0:
                touch(t, step)
    for t in g.outputs:
        touch(t, steps - 1)
    index = {t: k for k, t in enumerate(span)}
    buffers = [(_numel(ts[t].shape) * DTYPE_BYTES[ts[t].dtype], lo, hi) for t, (lo, hi) in span.items()]
    rows = []
    for k, op in enumerate(ops):
        o = index.get(buf(op.outputs[0]))
        ins = [index.get(buf(t)) if t >= 0 else None for t in op.inputs]
        _, _, scratch, in_place = facts[k]
        rows.append((o, ins, least_scratch(op, g, facts[k]), False if op.kind in VIEW_OPS else in_place))
    return _live_bound(steps, buffers, rows)


def layers_lower_bound(arch: Arch, layers: list, facts: list, least: list) -> int:
    """live_lower_bound computed from the layer list as the passes leave it (fused_layers);
    least: each layer's least_scratch."""
    n = len(layers)
    buffers = [(_numel(arch.input_shape), 0, 0)] + [(_numel(ly.out_shape), k, k) for k, ly in enumerate(layers)]
    for k, ly in enumerate(layers):
        for s in ly.src:
            nb, lo, hi = buffers[s + 1]
            buffers[s + 1] = (nb, lo, max(hi, k))
    nb, lo, _ = buffers[n]
    buffers[n] = (nb, lo, n - 1)   # the model output lives to the end
    rows = [(k + 1, [s + 1 for s in ly.src], least[k], facts[k][3]) for k, ly in enumerate(layers)]
    return _live_bound(n, buffers, rows)


def graph_fingerprint(g) -> tuple:
    """Everything about a graph that the footprints and the planner can see (no values)."""
    ts = g.tensors

    def tsig(i):
        if i < 0:
            return None
        t = ts[i]
        return (i, t.shape, t.dtype, t.data is not None, 0 if t.scale is None else len(t.scale),
                t.quantized_dim)
    return (tuple((op.kind, repr(sorted(op.options.items())), tuple(map(tsig, op.inputs)),
                   tuple(map(tsig, op.outputs))) for op in g.ops),
            tuple(g.inputs), tuple(g.outputs))


def passes_are_identity(arch: Arch, num_classes: int | None = None, qat: bool = False) -> bool:
    """Whether tinyengine_tf's passes leave this network's graph exactly as the converter made it."""
    from tinyengine_tf.passes import run_passes
    g = build_graph(arch, num_classes, qat=qat)
    before = graph_fingerprint(g)
    return graph_fingerprint(run_passes(g)) == before


def check_fit(arch: Arch, sram: int | None, flash: int | None, num_classes: int | None = None,
              qat: bool = False):
    """(fits, macs, flash or None, peak_sram or None) by the full pipeline, the same verdict as
    estimate(arch).fits(); work is skipped only where a bound on the compiled graph decides:
    Flash over budget, or a live-tensor lower bound (live_lower_bound) over the SRAM budget."""
    layers = layers_of(arch, num_classes)
    macs = macs_of(layers)
    g = compiled_graph(arch, num_classes, layers, qat)
    fl, facts = flash_of(g, need_in_place=False)
    if flash is not None and fl > flash:
        return False, macs, fl, None
    if sram is None:
        return True, macs, fl, None
    if live_lower_bound(g, facts) > sram:
        return False, macs, fl, None
    # the plan needs the in-place flags, which a two-value footprint leaves open
    _, facts = flash_of(g, need_in_place=True)
    peak = plan_of(g, facts).arena_size
    return peak <= sram, macs, fl, peak


class PassesChangedGraph(RuntimeError):
    """FitChecker found a network whose graph the passes rewrite: its shortcut does not apply."""


class FitChecker:
    """check_fit for many networks of one configuration, fast, with the same verdicts.

    Call ``calibrate(probes)`` first. If tinyengine_tf's passes turn the probe graphs into what
    ``fused_layers`` predicts (they fold PADs and constant shape arithmetic, which an MCUNet graph
    does not have, and fuse each residual ADD into the projection before it), the checker works
    from the fused layer list:

    - per-layer Flash, scratch and in-place facts are cached by layer shape (the kernel contract
      makes them functions of shapes), so Flash needs no graph at all;
    - the largest activation and the live-tensor lower bound are computed from the layer list;
      a network over either budget is out without building anything;
    - a network that may fit gets its graph built and planned by the compiler's planner.

    The probes (a configuration's largest and smallest networks) hold every block variant, so a
    pass that rewrote any MCUNet pattern would show there. As a second guard every
    ``verify_every``-th planned network is re-checked through the full pipeline (passes included);
    a disagreement raises PassesChangedGraph and the caller falls back to check_fit. Without
    calibration, or when the passes change the probes, every call is check_fit.
    """

    def __init__(self, sram: int | None, flash: int | None, num_classes: int | None = None,
                 verify_every: int = 50, qat: bool = False):
        self.sram, self.flash, self.num_classes, self.qat = sram, flash, num_classes, qat
        self.verify_every = verify_every
        self.fast = False
        self.planned = 0
        self._facts: dict = {}   # Layer.key -> (kind, flash, scratch, in_place or None)
        self._least: dict = {}   # Layer.key -> least_scratch

    def calibrate(self, probes) -> bool:
        self.fast = all(passes_match_layers(a, self.num_classes, self.qat) for a in probes)
        return self.fast

    def __call__(self, arch: Arch):
        if not self.fast:
            out = check_fit(arch, self.sram, self.flash, self.num_classes, self.qat)
            self.planned += out[3] is not None
            return out
        layers = layers_of(arch, self.num_classes)
        macs = macs_of(layers)
        if self.sram is not None and max([_numel(arch.input_shape)] +
                                         [_numel(ly.out_shape) for ly in layers]) > self.sram:
            return False, macs, None, None
        plain, layers = layers, fused_layers(layers)
        facts = [self._facts.get(ly.key) for ly in layers]
        g = None
        if None in facts:
            g = self._graph(arch, plain)
            facts = self._learn(layers, g, need_in_place=False)
        fl = sum(f[1] for f in facts)
        if self.flash is not None and fl > self.flash:
            return False, macs, fl, None
        if self.sram is None:
            return True, macs, fl, None
        least = [self._least[ly.key] for ly in layers]
        if layers_lower_bound(arch, layers, facts, least) > self.sram:
            return False, macs, fl, None
        g = g if g is not None else self._graph(arch, plain)
        if any(f[3] is None for f in facts):
            facts = self._learn(layers, g, need_in_place=True)
        peak = plan_of(g, facts).arena_size
        self.planned += 1
        if self.verify_every and self.planned % self.verify_every == 1:
            exact = check_fit(arch, self.sram, self.flash, self.num_classes, self.qat)
            # the full pipeline may stop at its lower bound without a peak; all else must agree
            if exact[:3] != (peak <= self.sram, macs, fl) or exact[3] not in (None, peak):
                raise PassesChangedGraph(f"{arch.short()}: full pipeline gives {exact}, the layer "
                                         f"shortcut {(peak <= self.sram, macs, fl, peak)}")
        return peak <= self.sram, macs, fl, peak

    def _graph(self, arch: Arch, layers: list):
        """The compiled graph. Calibration showed the other passes leave these graphs alone, so
        only the residual fusion runs (one graph copy instead of one per pass); every
        verify_every-th network is re-checked through all of them."""
        from tinyengine_tf.passes.fuse_residual import fuse_residual
        return fuse_residual(build_graph(arch, self.num_classes, layers, self.qat), copy=False)

    def _learn(self, layers: list, g, need_in_place: bool) -> list:
        """Facts of every layer from the compiled graph (op k is fused layer k, as calibrated)."""
        _ensure_kernels()
        out = []
        for pos, (ly, op) in enumerate(zip(layers, g.ops)):
            f = self._facts.get(ly.key)
            if f is None or (need_in_place and f[3] is None):
                fl, scratch, ip = layer_facts(op, pos, g, need_in_place)
                f = self._facts[ly.key] = (op.kind, fl, scratch, ip)
                self._least[ly.key] = least_scratch(op, g, f)
            out.append(f)
        return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
