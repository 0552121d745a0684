"""nas.estimate equals the compiled model, byte for byte, without TensorFlow.

The exactness tests build each architecture with nas.build_model, give it random "trained" weights
(random BatchNorm statistics, a non-zero classifier bias), quantize it to full int8 with
TensorFlow's TFLite converter and compile it with tinyengine_tf.api.compile_tflite; the estimate
must equal the compiled model's peak_sram and flash. The default suite runs 8 small architectures;
set NAS_EXACT_ARCHS=24 to run that many more across every resolution and width (it prints how
many matched), NAS_EXACT_VIA_CONVERT=1 to send those through tinyengine_tf.convert(keras_model)
(TensorFlow's slower SavedModel route) instead of the concrete-function converter.
"""
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nas
from nas import cost
from nas.space import RESOLUTIONS, WIDTHS, MCUNetSpace

# (resolution, width, classes, seed, trained): small, varied; one untrained (the converter drops a
# zero classifier bias: the compiled cost must not change).
SMALL = [(48, 0.2, 10, 0, True), (48, 0.5, 2, 1, True), (64, 0.3, 1000, 2, True),
         (64, 0.2, 2, 3, False), (80, 0.4, 10, 4, True), (96, 0.3, 2, 5, True),
         (112, 0.2, 100, 6, True), (96, 0.5, 2, 7, True)]


def _arch(r, w, classes, seed):
    return MCUNetSpace(num_classes=classes).sample(r, w, rng=seed)


def _tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def _randomize(model, seed):
    """Weights as after training: BN statistics and biases non-zero, variances positive."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        new = []
        for v, var in zip(values, layer.weights):
            positive = "moving_variance" in var.name or "gamma" in var.name
            new.append((rng.uniform(0.5, 1.5, v.shape) if positive else rng.normal(0, 0.2, v.shape))
                       .astype(np.float32))
        layer.set_weights(new)


def _representative(shape, seed):
    shape = (shape, shape, 3) if isinstance(shape, int) else tuple(shape)
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (1, *shape)).astype(np.float32) for _ in range(3)]


def to_tflite(arch, seed, trained=True) -> bytes:
    """build_model -> full-int8 .tflite (int8 input and output), TensorFlow's converter."""
    tf = _tf()
    model = nas.build_model(arch)
    if trained:
        _randomize(model, seed)
    shape = arch.input_shape
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *shape), tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    samples = _representative(shape, seed)
    conv.representative_dataset = lambda: ([x] for x in samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "statistics for quantized inputs were expected"
        return bytes(conv.convert())


@pytest.fixture(scope="module")
def converted():
    """(arch, trained, tflite bytes) for every SMALL case, converted once."""
    return [(_arch(r, w, c, s), t, to_tflite(_arch(r, w, c, s), s, t)) for r, w, c, s, t in SMALL]


def _tensor_sig(g, i, numbering=True):
    if i < 0:
        return None
    t = g.t(i)
    n = 0 if t.scale is None else len(t.scale)
    return (None if t.is_const or not numbering else i, tuple(t.shape), t.dtype, t.is_const, n,
            t.quantized_dim if n > 1 else 0)


def _independent_macs(g):
    """MACs counted from the converter's own graph (not from nas.cost's layer list)."""
    total = 0
    for op in g.ops:
        y, w = g.t(op.outputs[0]), g.t(op.inputs[1]) if len(op.inputs) > 1 else None
        if op.kind == "CONV_2D":
            total += y.numel * int(np.prod(w.shape[1:]))
        elif op.kind == "DEPTHWISE_CONV_2D":
            total += y.numel * w.shape[1] * w.shape[2]
        elif op.kind == "FULLY_CONNECTED":
            total += y.numel * w.shape[1]
    return total


# -- against TensorFlow and the compiler ----------------------------------------------------------
@pytest.mark.parametrize("k", range(len(SMALL)), ids=[f"r{c[0]}-w{c[1]}-c{c[2]}" for c in SMALL])
def test_estimate_equals_compiled_model(converted, k):
    from converters.tflite_reader import read_tflite
    from tinyengine_tf.api import compile_tflite

    arch, trained, data = converted[k]
    cm = compile_tflite(data)
    est = nas.estimate(arch)
    assert (est.peak_sram, est.flash) == (cm.peak_sram, cm.flash), arch.to_json()
    source = read_tflite(data)
    assert est.macs == _independent_macs(source)
    consts = sum(t.numel for t in source.tensors.values() if t.is_const and t.quantized)  # not MEAN's axis
    if trained:  # an untrained model has no classifier bias tensor to count
        assert est.params == consts


@pytest.mark.parametrize("k", [0, 2, 4, 5])
def test_graph_is_the_converters_graph(converted, k):
    """Op for op: kinds, options, shapes, dtypes, quantization granularity, activation numbering."""
    from converters.tflite_reader import read_tflite

    arch, trained, data = converted[k]
    assert trained
    real, ours = read_tflite(data), cost.build_graph(arch)
    assert len(real.ops) == len(ours.ops) and len(real.tensors) == len(ours.tensors)
    assert (real.inputs, real.outputs) == (ours.inputs, ours.outputs)
    for a, b in zip(real.ops, ours.ops):
        assert (a.kind, a.options) == (b.kind, b.options)
        assert [_tensor_sig(real, i) for i in a.inputs + a.outputs] == \
               [_tensor_sig(ours, i) for i in b.inputs + b.outputs], a.label()


def test_estimate_equals_compiled_qat_model():
    """build_model is ready for tfmot QAT, and estimate(qat=True) equals the compiled QAT export
    (tfmot quantizes the Dense kernel per tensor: a different Flash than PTQ)."""
    from converters.tflite_reader import read_tflite
    from tinyengine_tf.api import compile_tflite

    tf = _tf()
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    arch = _arch(48, 0.3, 10, 21)
    model = nas.build_model(arch)
    dense = model.get_layer("classifier")   # a zero bias would be dropped by the converter
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, np.random.default_rng(0).normal(0, 0.1, bias.shape).astype(np.float32)])
    qat_model = tfmot.quantization.keras.quantize_model(model)
    fn = tf.function(lambda x: qat_model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, 48, 48, 3), tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = bytes(conv.convert())
    cm = compile_tflite(data)
    est, ptq = nas.estimate(arch, qat=True), nas.estimate(arch)
    assert (est.peak_sram, est.flash) == (cm.peak_sram, cm.flash)
    assert ptq.flash != est.flash
    # (this converter route numbers tensors differently; only the ops and shapes are compared)
    real, ours = read_tflite(data), cost.build_graph(arch, qat=True)
    assert len(real.ops) == len(ours.ops)
    for a, b in zip(real.ops, ours.ops):
        assert a.kind == b.kind and a.options == b.options
        assert [_tensor_sig(real, i, False) for i in a.inputs + a.outputs] == \
               [_tensor_sig(ours, i, False) for i in b.inputs + b.outputs], a.label()


@pytest.mark.skipif(not os.environ.get("NAS_EXACT_ARCHS"), reason="opt-in: NAS_EXACT_ARCHS=N")
def test_estimate_equals_compiled_model_across_the_grid(capsys):
    """NAS_EXACT_ARCHS architectures spread over every resolution and width."""
    from tinyengine_tf.api import compile_tflite

    n = int(os.environ["NAS_EXACT_ARCHS"])
    rng = random.Random(2024)
    space = MCUNetSpace(num_classes=100)
    configs = [(RESOLUTIONS[i % len(RESOLUTIONS)], WIDTHS[(i * 5) % len(WIDTHS)]) for i in range(n)]
    via_convert = bool(os.environ.get("NAS_EXACT_VIA_CONVERT"))
    results = []
    for i, (r, w) in enumerate(configs):
        arch = space.sample(r, w, rng)
        if via_convert:
            import tinyengine_tf as te
            _tf()
            model = nas.build_model(arch)
            _randomize(model, i)
            cm = te.convert(model, np.concatenate(_representative(r, i)))
        else:
            cm = compile_tflite(to_tflite(arch, i))
        est = nas.estimate(arch)
        results.append((arch, (est.peak_sram, est.flash), (cm.peak_sram, cm.flash)))
    matched = sum(e == c for _, e, c in results)
    with capsys.disabled():
        print(f"\nnas.estimate matched the compiled model on {matched} of {len(results)} architectures")
        for arch, e, c in results:
            print(f"  {'ok ' if e == c else 'BAD'} {arch.short()}: estimate {e}, compiled {c}")
    assert matched == len(results)


# -- TensorFlow-free ------------------------------------------------------------------------------
def test_estimate_does_not_import_tensorflow():
    code = ("import sys, nas; a = nas.MCUNetSpace().sample(96, 0.5, rng=0); c = nas.estimate(a); "
            "assert c.peak_sram > 0 and c.flash > 0 and c.macs > 0; "
            "bad = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def _sampled(n, seed):
    rng = random.Random(seed)
    space = MCUNetSpace()
    return [space.sample(rng=rng) for _ in range(n)]


@pytest.fixture(scope="module")
def moderate():
    """Architectures of moderate size from across the grid, with their estimates."""
    rng = random.Random(11)
    space = MCUNetSpace()
    archs = [space.sample(r, w, rng) for r in (48, 80, 112, 144) for w in (0.2, 0.4, 0.6)]
    return [(a, nas.estimate(a)) for a in archs]


def test_check_fit_gives_estimates_verdict(moderate):
    for arch, est in moderate:
        for sram in (est.peak_sram - 1, est.peak_sram, 10 ** 9, est.lower_bound // 2):
            for flash in (est.flash - 1, est.flash, 10 ** 9):
                ok, macs, fl, peak = cost.check_fit(arch, sram, flash)
                assert ok == est.fits(sram, flash) and macs == est.macs
                assert fl in (None, est.flash) and peak in (None, est.peak_sram)


def test_fit_checker_gives_estimates_verdict(moderate):
    by_budget = {}
    for arch, est in moderate:
        for sram, flash in ((est.peak_sram, est.flash), (est.peak_sram - 16, 10 ** 9),
                            (10 ** 9, est.flash - 1), (200_000, 600_000)):
            checker = by_budget.setdefault((sram, flash), cost.FitChecker(sram, flash, verify_every=1))
            checker.calibrate([arch])
            assert checker.fast
            ok, macs, fl, peak = checker(arch)
            assert ok == est.fits(sram, flash) and macs == est.macs
            assert fl in (None, est.flash) and peak in (None, est.peak_sram)


def test_lower_bounds_hold(moderate):
    for arch, est in moderate:
        g = cost.compiled_graph(arch)
        _, facts = cost.flash_of(g, need_in_place=True)
        lb = cost.live_lower_bound(g, facts)
        least = [cost.least_scratch(op, g, f) for op, f in zip(g.ops, facts)]
        assert cost.layers_lower_bound(arch, cost.fused_layers(cost.layers_of(arch)), facts, least) == lb
        assert cost.max_activation_bytes(arch) <= lb <= est.peak_sram
        assert est.lower_bound <= est.peak_sram


def test_estimate_is_deterministic_and_monotone_in_classes():
    a = MCUNetSpace(num_classes=10).sample(64, 0.3, rng=4)
    e10 = nas.estimate(a)
    assert nas.estimate(a) == e10
    e1000 = nas.estimate(a, num_classes=1000)
    c = a.last_channels
    assert e1000.macs - e10.macs == 990 * c
    assert e1000.flash > e10.flash and e1000.params - e10.params == 990 * (c + 1)


def test_macs_and_params_grow_with_resolution_and_width():
    space = MCUNetSpace()
    a = space.sample(96, 0.5, rng=3)
    bigger_r = type(a)(128, a.width, a.depths, a.kernels, a.expands)
    bigger_w = type(a)(96, 0.8, a.depths, a.kernels, a.expands)
    ea, er, ew = nas.estimate(a), nas.estimate(bigger_r), nas.estimate(bigger_w)
    assert er.macs > ea.macs and er.params == ea.params and er.peak_sram > ea.peak_sram
    assert ew.macs > ea.macs and ew.params > ea.params and ew.flash > ea.flash


def test_passes_change_mcunet_graphs_only_by_fusing_residual_adds():
    # What FitChecker's layer shortcut relies on: the compiled graph is fused_layers' prediction
    # (if the compiler gains a pass that rewrites these graphs otherwise this fails, and the
    # checker falls back to the full pipeline on its own).
    for arch in _sampled(6, seed=12):
        g0, g = cost.build_graph(arch), cost.compiled_graph(arch)
        adds = [op for op in g0.ops if op.kind == "ADD"]
        fused = [op for op in g.ops if "residual" in op.options]
        assert adds and len(fused) == len(adds) and len(g.ops) == len(g0.ops) - len(adds)
        assert cost.passes_match_layers(arch) and not cost.passes_are_identity(arch)


def test_footprints_agree_with_emitted_layers():
    """The shape-only footprints estimate uses equal what emitting each layer declares."""
    from tinyengine_tf.kernels.base import FOOTPRINTS
    arch = _arch(64, 0.3, 10, 31)
    g = cost.compiled_graph(arch)
    seen = set()
    for pos, op in enumerate(g.ops):
        if op.kind not in FOOTPRINTS or cost._signature(op, g) in seen:
            continue
        seen.add(cost._signature(op, g))
        flash, scratch, in_place = cost._unpack_footprint(FOOTPRINTS[op.kind](op, g))
        emitted = cost._emit_one(op, pos, g)
        assert (flash, scratch) == emitted[:2], op.label()
        assert in_place in (None, emitted[2]), op.label()
    assert len(seen) > 5


def test_estimate_without_footprints_emits_layers(monkeypatch):
    """A kernel family with no footprint function is costed by emitting its layers: same result."""
    from tinyengine_tf.kernels import base
    arch = _arch(80, 0.4, 2, 32)
    want = nas.estimate(arch)
    monkeypatch.setattr(cost, "_FOOTPRINT_CACHE", {})
    monkeypatch.setattr(base, "FOOTPRINTS", {})
    got = nas.estimate(arch)
    assert (got.peak_sram, got.flash, got.macs) == (want.peak_sram, want.flash, want.macs)
    assert got.layers == want.layers


@pytest.mark.parametrize("shape, width, seed", [((49, 10, 1), 0.3, 0), ((40, 56, 3), 0.4, 1),
                                                 ((32, 24, 1), 0.2, 2)])
def test_estimate_equals_compiled_model_for_other_input_shapes(shape, width, seed):
    """Non-square and single-channel inputs (49x10x1 MFCCs among them) cost exactly."""
    from tinyengine_tf.api import compile_tflite
    space = MCUNetSpace(widths=[width], num_classes=12, input_shape=shape)
    arch = space.sample(rng=seed)
    assert arch.input_shape == shape
    cm = compile_tflite(to_tflite(arch, seed))
    est = nas.estimate(arch)
    assert (est.peak_sram, est.flash) == (cm.peak_sram, cm.flash)
    assert cm.input_details[0]["shape"] == (1, *shape)
