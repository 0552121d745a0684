"""Patch-based prefix (passes/patches.py, patch_codegen.py): bit-exact with TFLite Micro for
chains of conv, depthwise, pooling and residual ADD of every kernel size 1-7, strides 1-2,
dilation, SAME (asymmetric too) and VALID, on odd image sizes, with grids that give corner, edge
and interior patches; the searched peak equals the compiled one; input from caller memory is
never written; refusals say why and what works."""
import math

import numpy as np
import pytest

import tinyengine_tf as te
from reference import assert_matches_tflm, assert_sanitized_matches_tflm, int8_inputs, tflm_run
from tflite_builder import ModelBuilder, bias_scale
from tinyengine_tf.patch_search import evaluate, search

N = 8


class Chain:
    """A small .tflite built layer by layer on a ModelBuilder; each layer returns its output."""

    def __init__(self, h, w, c, seed=0):
        self.b = ModelBuilder()
        self.rng = np.random.default_rng(seed)
        self.x = self.b.tensor((1, h, w, c), scale=0.05, zp=-3)
        self.cur, self.shape, self.s = self.x, (1, h, w, c), 0.05

    def _out(self, h, w, c, scale, zp=2):
        self.shape, self.s = (1, h, w, c), scale
        return self.b.tensor(self.shape, scale=scale, zp=zp)

    def conv(self, k, s=1, pad="SAME", d=1, oc=None, kind="CONV_2D", act="NONE"):
        _, h, w, ic = self.shape
        dw = kind == "DEPTHWISE_CONV_2D"
        oc = ic if dw else (oc or ic + 2)
        fs = self.rng.uniform(0.002, 0.02, oc)
        wshape = (1, k, k, oc) if dw else (oc, k, k, ic)
        wt = self.b.tensor(wshape, scale=fs, zp=[0] * oc, data=self.rng.integers(-127, 128, wshape),
                           qdim=3 if dw else 0)
        bias = self.b.tensor((oc,), dtype="int32", scale=bias_scale(self.s, fs), zp=[0] * oc,
                             data=self.rng.integers(-3000, 3000, oc))
        taps = k * k * (1 if dw else ic)
        ys = self.s * float(np.mean(fs)) * 5400 * math.sqrt(taps) / 50
        y = self._out(_size(h, k, s, d, pad), _size(w, k, s, d, pad), oc, ys)
        opts = dict(padding=pad, strideH=s, strideW=s, dilationHFactor=d, dilationWFactor=d,
                    fusedActivationFunction=act)
        if dw:
            self.b.op(kind, [self.cur, wt, bias], [y], "DepthwiseConv2DOptions", depthMultiplier=1,
                      **opts)
        else:
            self.b.op(kind, [self.cur, wt, bias], [y], "Conv2DOptions", **opts)
        self.cur = y
        return self

    def dw(self, k, s=1, pad="SAME", d=1, act="RELU6"):
        return self.conv(k, s, pad, d, kind="DEPTHWISE_CONV_2D", act=act)

    def pool(self, kind, k, s=1, pad="SAME"):
        _, h, w, c = self.shape
        y = self._out(_size(h, k, s, 1, pad), _size(w, k, s, 1, pad), c, self.s, zp=self._zp())
        self.b.op(kind, [self.cur], [y], "Pool2DOptions", padding=pad, strideH=s, strideW=s,
                  filterHeight=k, filterWidth=k, fusedActivationFunction="NONE")
        self.cur = y
        return self

    def _zp(self):
        return int(self.b.tensors[self.cur].quantization.zeroPoint[0])

    def residual(self, k=3):
        """x + conv_k(x): x is read by two ops that need different rectangles of it."""
        skip, skip_s = self.cur, self.s
        self.conv(k, 1, "SAME", oc=self.shape[3])
        y = self._out(*self.shape[1:], max(skip_s, self.s) * 1.5, zp=-1)
        self.b.op("ADD", [skip, self.cur], [y], "AddOptions", fusedActivationFunction="NONE")
        self.cur = y
        return self

    def build(self) -> bytes:
        return self.b.build([self.x], [self.cur])


def _size(n, k, s, d, pad):
    eff = (k - 1) * d + 1
    return math.ceil(n / s) if pad == "SAME" else (n - eff) // s + 1


def _last_op(model: bytes) -> int:
    cm = te.convert(model)
    return cm.graph.ops[-1].index


def _patch_kinds(cm) -> set:
    """Which patch positions the grid produced: corner, edge and interior (no border padding)."""
    kinds = set()
    for p in cm.patched.patches:
        pads = np.array([o.options["pad_extra"] for o in p.graph.ops if "pad_extra" in o.options])
        t, b, l, r = (pads[:, i].any() for i in range(4))
        sides = int(t or b) + int(l or r)
        kinds.add({0: "interior", 1: "edge", 2: "corner"}[int(sides)])
    return kinds


# Each chain names what it covers; together: conv and depthwise kernels 1-7, strides 1 and 2,
# dilation 2, SAME (odd total padding: asymmetric) and VALID, both pools, residual ADD (a crop).
CHAINS = {
    "k3s2_k3_k1": (15, 13, 3, lambda c: c.conv(3, 2).dw(3).conv(1, oc=6)),
    "k1_k2_asym_k4s2": (12, 11, 2, lambda c: c.conv(1).dw(2).conv(4, 2, oc=5)),
    "k5_valid_k6s2": (17, 16, 3, lambda c: c.conv(5, pad="VALID").dw(6, 2).conv(1)),
    "k7s2_k7_same": (37, 33, 2, lambda c: c.conv(7, 2, oc=4).dw(7).conv(3, pad="VALID")),
    "dilated": (29, 26, 3, lambda c: c.conv(3, d=2).dw(3, 2, d=2).dw(5, pad="VALID")),
    "pools": (27, 25, 3, lambda c: c.conv(3).pool("AVERAGE_POOL_2D", 3, 2).dw(3)
                                    .pool("MAX_POOL_2D", 2, 1).pool("AVERAGE_POOL_2D", 2, 2, "VALID")),
    "residual": (44, 42, 3, lambda c: c.conv(3, 2, oc=4).residual(3).dw(3).residual(5)),
    "mbv2_block": (40, 36, 3, lambda c: c.conv(3, 2, oc=8).dw(3).conv(1, oc=4).conv(1, oc=12)
                                        .dw(3, 2).conv(1, oc=6).residual(1)),
}
# 3 x 3 gives corner, edge and interior patches; one chain also runs one-pixel patches.
GRIDS = {name: [(3, 3)] for name in CHAINS}
GRIDS["k1_k2_asym_k4s2"] = [(3, 3), (6, 6)]


@pytest.mark.parametrize("name", list(CHAINS))
def test_patched_chain_matches_tflm(name):
    h, w, c, layers = CHAINS[name]
    chain = Chain(h, w, c, seed=len(name))
    layers(chain)
    model = chain.build()
    xs = int8_inputs((h, w, c), N, seed=3)
    ref = tflm_run(model, xs)
    split = _last_op(model)
    for rows, cols in GRIDS[name]:
        cm = te.convert(model, patches=(split, rows, cols))
        assert cm.patched is not None and len(cm.patched.patches) == rows * cols
        if (rows, cols) == (3, 3):
            assert _patch_kinds(cm) == {"corner", "edge", "interior"}
        np.testing.assert_array_equal(cm.run(xs), ref, err_msg=f"{name} {rows}x{cols}")
        assert cm.patched.extra_macs > 0
        # The search's exact figure is the compiled one.
        assert evaluate(te.convert(model).graph, split, rows, cols).peak_sram == cm.peak_sram


def test_split_inside_the_chain_and_rest_runs_op_by_op():
    chain = Chain(18, 17, 3, seed=5)
    chain.conv(3, 2, oc=6).dw(3).conv(1, oc=8).dw(3, 2).conv(1, oc=10).pool("AVERAGE_POOL_2D", 3, 1)
    model = chain.build()
    ops = te.convert(model).graph.ops
    xs = int8_inputs((18, 17, 3), N, seed=4)
    for split in (ops[0].index, ops[2].index, ops[3].index):
        cm = te.convert(model, patches=(split, 3, 2))
        assert len(cm.graph.ops) == len(ops) - ops.index(next(o for o in ops if o.index == split))
        assert_matches_tflm(cm, model, xs)


def test_patched_model_clean_under_sanitizers():
    h, w, c, layers = CHAINS["residual"]
    chain = Chain(h, w, c, seed=1)
    layers(chain)
    model = chain.build()
    cm = te.convert(model, patches=(_last_op(model), 3, 2))
    assert_sanitized_matches_tflm(cm, model, int8_inputs((h, w, c), 4, seed=2))


def test_mlperf_vww_auto_input_from_caller_memory(shared_models):
    model = (shared_models / "vww_96_int8.tflite").read_bytes()
    plain = te.convert(model)
    xs = int8_inputs((96, 96, 3), 6, seed=0)
    ref = tflm_run(model, xs)
    cm = te.convert(model, patches="auto", max_mac_overhead=0.2, input_in_arena=False)
    assert cm.patched is not None
    assert cm.peak_sram < plain.peak_sram
    assert 0 < cm.macs - plain.macs <= 0.2 * plain.macs
    assert cm.patch_choice.best.peak_sram == cm.peak_sram
    keep = xs.copy()
    np.testing.assert_array_equal(cm.run(xs), ref)
    np.testing.assert_array_equal(xs, keep)


def test_input_from_caller_memory_takes_no_arena_and_is_never_written():
    chain = Chain(16, 16, 3, seed=2)
    chain.dw(3, 2, act="RELU6").conv(1, oc=4)   # the depthwise runs in place on an arena input
    model = chain.build()
    inside, outside = te.convert(model), te.convert(model, input_in_arena=False)
    assert inside.peak_sram >= 16 * 16 * 3 > outside.peak_sram
    assert inside.graph.inputs[0] in inside.plan.tensor_offset
    assert outside.graph.inputs[0] in outside.plan.external
    xs = int8_inputs((16, 16, 3), N, seed=1)
    keep = xs.copy()
    np.testing.assert_array_equal(outside.run(xs), tflm_run(model, xs))
    np.testing.assert_array_equal(xs, keep)
    assert "memcpy(TE_ARENA" not in outside.sources["model.c"]


# -- refusals --------------------------------------------------------------------------------

def _pooled_model():
    b = ModelBuilder()
    x = b.tensor((1, 8, 8, 3), scale=0.05, zp=0)
    y = b.tensor((1, 8, 8, 3), scale=0.05, zp=0)
    b.op("AVERAGE_POOL_2D", [x], [y], "Pool2DOptions", padding="SAME", strideH=1, strideW=1,
         filterHeight=3, filterWidth=3)
    axes = b.tensor((2,), dtype="int32", data=[1, 2])
    z = b.tensor((1, 3), scale=0.05, zp=0)
    b.op("MEAN", [y, axes], [z], "ReducerOptions", keepDims=False)
    return b.build([x], [z])


def test_split_after_global_pool_is_refused_with_what_works():
    model = _pooled_model()
    with pytest.raises(te.UnsupportedOpError) as e:
        te.convert(model, patches=(1, 2, 2))
    msg = str(e.value)
    assert "MEAN (op #1)" in msg and "Splits that work on this model: op #0 to op #0" in msg


@pytest.mark.parametrize("setting, words", [
    ((0, 9, 2), "more patches than the split tensor"),
    ((0, 2, 9), "use at most 8 x 8"),
    ((0, 1, 1), "1 x 1 grid"),
    ((7, 2, 2), "no op #7"),
    ((0, 0, 2), "positive integers"),
    ("best", "use \"auto\""),
    ((0, 2), "(split_op_index, rows, cols)"),
])
def test_bad_patch_settings_are_refused(setting, words):
    with pytest.raises(te.TinyEngineError) as e:
        te.convert(_pooled_model(), patches=setting)
    assert words in str(e.value)


def test_does_not_fit_names_the_patch_setting_that_fits():
    h, w, c, layers = CHAINS["mbv2_block"]
    chain = Chain(h, w, c, seed=0)
    layers(chain)
    model = chain.build()
    plain = te.convert(model)
    choice = search(plain.graph, 0.5)
    assert choice.best is not None and choice.best.peak_sram < plain.peak_sram
    with pytest.raises(te.DoesNotFitError) as e:
        te.convert(model, sram=choice.best.peak_sram)
    assert "patches=(" in str(e.value)
    setting = eval(str(e.value).split("patches=")[1].split(" gives")[0])
    cm = te.convert(model, patches=setting, sram=choice.best.peak_sram)
    assert cm.peak_sram <= choice.best.peak_sram


# -- MACs and the report ----------------------------------------------------------------------

def test_extra_macs_are_the_recomputed_halo_rows():
    """Two 3x3 stride-1 SAME convs on 10x7, two row bands: each band's first conv computes one
    row beyond its half (the second conv's halo), so 2 rows x 7 columns are computed twice."""
    chain = Chain(10, 7, 3, seed=0)
    chain.conv(3, oc=4).conv(3, oc=5)
    model = chain.build()
    plain = te.convert(model)
    cm = te.convert(model, patches=(plain.graph.ops[-1].index, 2, 1))
    first_conv_per_pixel = 4 * 3 * 3 * 3
    assert cm.macs - plain.macs == 2 * 7 * first_conv_per_pixel
    assert cm.patched.extra_macs == cm.macs - plain.macs


@pytest.mark.parametrize("name", ["k3s2_k3_k1", "dilated", "pools", "residual", "mbv2_block"])
def test_search_mac_estimate_equals_the_patch_graphs(name):
    from tinyengine_tf.passes.patches import build_patches
    from tinyengine_tf.patch_search import estimate_macs
    h, w, c, layers = CHAINS[name]
    chain = Chain(h, w, c)
    layers(chain)
    g = te.convert(chain.build()).graph
    for op in g.ops[1:]:
        for rows, cols in ((2, 3), (3, 3), (4, 2)):
            try:
                pp = build_patches(g, op.index, rows, cols)
            except te.TinyEngineError:
                continue
            assert estimate_macs(g, op.index, rows, cols) == pp.macs


def test_report_shows_both_plans_and_both_accountings():
    h, w, c, layers = CHAINS["mbv2_block"]
    chain = Chain(h, w, c, seed=0)
    layers(chain)
    model = chain.build()
    plain, caller = te.convert(model), te.convert(model, input_in_arena=False)
    cm = te.convert(model, patches="auto", max_mac_overhead=0.5)
    pm = cm.memory_report(measure_tflm=False).patches
    assert (pm.peak_sram, pm.plain_peak_sram, pm.plain_peak_sram_other) == \
        (cm.peak_sram, plain.peak_sram, caller.peak_sram)
    assert pm.peak_sram_other == te.convert(model, patches=cm.patch_choice.best.setting,
                                            input_in_arena=False).peak_sram
    assert pm.macs == cm.macs and pm.plain_macs == plain.macs
    assert pm.workspace == max(ws for _, ws in pm.patch_buffers)
    assert pm.tradeoff[-1][1] == cm.peak_sram
    assert [p for _, p, _ in pm.tradeoff] == sorted((p for _, p, _ in pm.tradeoff), reverse=True)
    md = cm.memory_report(measure_tflm=False).to_markdown()
    assert f"| {pm.plain_peak_sram:,} | {pm.peak_sram:,} |" in md and "MAC overhead" in md


# -- Cortex-M4 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dsp", [True, False])
def test_patched_firmware_on_cortex_m4_matches_tflm(dsp):
    """The patched prefix under QEMU, DSP inner loops and portable C, both from caller memory."""
    from tinyengine_tf.compiled import _NP, _sample_shape
    h, w, c, layers = CHAINS["mbv2_block"]
    chain = Chain(h, w, c, seed=3)
    layers(chain)
    model = chain.build()
    cm = te.convert(model, patches=(_last_op(model), 3, 3), input_in_arena=False)
    xs = int8_inputs((h, w, c), 4, seed=6)
    arrays, n, _ = cm._prepare_inputs(xs)
    outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    cm._run_firmware("cortex-m4", arrays, n, outs, dsp=dsp)
    np.testing.assert_array_equal(outs[0], tflm_run(model, xs))


def test_search_shape_rules_equal_the_emitted_layers():
    """patch_search's scratch/in-place rules for conv and depthwise are what the kernels emit."""
    from tinyengine_tf.kernels.base import KERNELS, EmitContext
    from tinyengine_tf.passes.patches import build_patches
    from tinyengine_tf.patch_search import _SHAPE_RULES
    seen = 0
    for name in ("k3s2_k3_k1", "k7s2_k7_same", "dilated", "mbv2_block"):
        h, w, c, layers = CHAINS[name]
        chain = Chain(h, w, c)
        layers(chain)
        g = te.convert(chain.build()).graph
        for patch in build_patches(g, g.ops[-1].index, 3, 3).variants.values():
            for op in patch.graph.ops:
                if op.kind in _SHAPE_RULES:
                    code = KERNELS[op.kind](op, patch.graph, EmitContext(patch.graph, "x"))
                    assert _SHAPE_RULES[op.kind](op, patch.graph) == (code.scratch_bytes, code.in_place)
                    seen += 1
    assert seen > 50


def test_rectangles_are_products_of_row_and_column_spans():
    """What lets the search and the pass work per axis: 2-D propagation, bounding boxes of
    several consumers included, equals the product of the 1-D propagations."""
    from tinyengine_tf import regions
    for name in ("residual", "dilated", "pools"):
        h, w, c, layers = CHAINS[name]
        chain = Chain(h, w, c)
        layers(chain)
        g = te.convert(chain.build()).graph
        oh, ow = regions.hw(g.t(g.ops[-1].outputs[0]))
        for y0, y1 in regions.grid(oh, 3):
            for x0, x1 in regions.grid(ow, 4):
                full = regions.propagate(g, g.ops, g.ops[-1].outputs[0], (y0, y1, x0, x1))
                ys = regions.propagate_axis(g, g.ops, g.ops[-1].outputs[0], 0, y0, y1)
                xs = regions.propagate_axis(g, g.ops, g.ops[-1].outputs[0], 1, x0, x1)
                assert full == {t: ys[t] + xs[t] for t in ys}


def test_patched_vww_on_cortex_m4_dsp_matches_tflm(shared_models):
    """Per-channel requantization tables shared between patch variants reach the DSP path of
    every variant (a variant that reused another's tables once fell back to one multiplier)."""
    from tinyengine_tf.compiled import _NP, _sample_shape
    model = (shared_models / "vww_96_int8.tflite").read_bytes()
    cm = te.convert(model, patches=(1, 1, 2))
    xs = int8_inputs((96, 96, 3), 3, seed=2)
    arrays, n, _ = cm._prepare_inputs(xs)
    outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    cm._run_firmware("cortex-m4", arrays, n, outs, dsp=True)
    np.testing.assert_array_equal(outs[0], tflm_run(model, xs))


def test_float_input_prefix_is_refused():
    b = ModelBuilder()
    x = b.tensor((1, 8, 8, 3), dtype="float32")
    q = b.tensor((1, 8, 8, 3), scale=0.05, zp=0)
    b.op("QUANTIZE", [x], [q])
    y = b.tensor((1, 8, 8, 3), scale=0.05, zp=0)
    b.op("AVERAGE_POOL_2D", [q], [y], "Pool2DOptions", padding="SAME", strideH=1, strideW=1,
         filterHeight=3, filterWidth=3)
    model = b.build([x], [y])
    with pytest.raises(te.UnsupportedOpError) as e:
        te.convert(model, patches=(1, 2, 2))
    assert "QUANTIZE (op #0)" in str(e.value) and "int8 tensors only" in str(e.value)
    assert "No split works on this model" in str(e.value)
    assert te.convert(model, patches="auto").patched is None


def random_chain(seed):
    """A random chain of windowed layers (kernel 1-7, stride 1-2, dilation 1-2, SAME/VALID, both
    pools, residuals) on a random odd-or-even image, and a random grid over its output."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(14, 40)), int(rng.integers(14, 40))
    chain = Chain(h, w, int(rng.integers(1, 5)), seed=seed)
    for _ in range(int(rng.integers(2, 5))):
        _, ch, cw, _ = chain.shape
        k, s, d = int(rng.integers(1, 8)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pad = "SAME" if rng.random() < 0.6 else "VALID"
        if pad == "VALID" and (k - 1) * d + 1 > min(ch, cw) - 2:
            pad = "SAME"
        kind = rng.choice(["conv", "dw", "pool", "residual"], p=[0.35, 0.35, 0.15, 0.15])
        if kind == "conv":
            chain.conv(k, s, pad, d, oc=int(rng.integers(1, 7)))
        elif kind == "dw":
            chain.dw(k, s, pad, d)
        elif kind == "pool":
            chain.pool(str(rng.choice(["AVERAGE_POOL_2D", "MAX_POOL_2D"])), min(k, 4), s, pad)
        else:
            chain.residual(int(rng.choice([1, 3, 5])))
    _, oh, ow, _ = chain.shape
    grid = (int(rng.integers(1, min(oh, 5) + 1)), int(rng.integers(1, min(ow, 5) + 1)))
    if grid == (1, 1):
        grid = (min(oh, 2), 1) if oh > 1 else (1, min(ow, 2))
    return chain, (h, w, chain.b.tensors[chain.x].shape[3]), grid


@pytest.mark.parametrize("seed", range(4))
def test_random_patched_chains_match_tflm(seed):
    chain, shape, grid = random_chain(seed)
    model = chain.build()
    cm = te.convert(model, patches=(_last_op(model), *grid))
    assert_matches_tflm(cm, model, int8_inputs(shape, 6, seed=seed))


def test_cli_convert_with_patches(shared_models, tmp_path):
    from test_cli import run_cli
    model = shared_models / "vww_96_int8.tflite"
    cm = te.convert(model, patches=(3, 4, 4), input_in_arena=False)
    code, out, err = run_cli("convert", model, "-o", tmp_path / "p", "--patches", "3,4,4",
                             "--input-outside-arena")
    assert code == 0, err
    assert f"arena {cm.peak_sram:,} bytes" in out
    assert "patched_prefix" in (tmp_path / "p" / "vww_96_int8.c").read_text()
    code, out, err = run_cli("convert", model, "-o", tmp_path / "q", "--patches", "3,4")
    assert code != 0 and "SPLIT_OP,ROWS,COLS" in err
    assert not (tmp_path / "q").exists()
