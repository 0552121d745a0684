"""convert(..., optimize="size") (kernels/compact.py, c/te_compact.h): the shared, table-driven
kernels equal TFLite Micro on the host, under the sanitizers and on a Cortex-M4 under QEMU with the
DSP path and without it, on every layer shape the specialized DSP tests cover; they keep the
constant arrays and the memory plan of the default mode; the argument is validated; the default
output is unchanged."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (SHARED_MODEL_NAMES, assert_sanitized_matches_tflm, int8_inputs,
                       sample_shape, tflm_run)
from test_dsp import CONV_CASES, DW_CASES, FC_CASES, run_m4
from test_kernels_conv import conv_model
from test_kernels_depthwise import compile_with_band, dw_model, spec as dw_spec
from test_kernels_fully_connected import fc_model
from tinyengine_tf.kernels.depthwise_band import BAND_OPTION

N_SAMPLES = 8           # all -128, all 127, alternating extremes, then random


def check_size_mode(model: bytes, seed: int = 0, firmware: bool = True, band=None):
    """Size mode equals TFLM on the host (and the M4 with and without DSP); it declares the same
    constants and plans the same memory as speed mode. Returns (size, speed) models.
    band: force every depthwise layer's band (0: the whole plane), as compile_with_band does."""
    if band is None:
        cm, speed = te.convert(model, optimize="size"), te.convert(model)
    else:
        cm, speed = compile_with_band(model, band, "size"), compile_with_band(model, band)
    assert cm.peak_sram == speed.peak_sram and cm.flash == speed.flash
    assert cm.plan.tensor_offset == speed.plan.tensor_offset
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), N_SAMPLES, seed=seed)
    want = tflm_run(model, x)
    runs = [("host", lambda: cm.run(x))]
    if firmware:
        runs += [("M4 DSP", lambda: run_m4(cm, x, True)), ("M4 portable", lambda: run_m4(cm, x, False))]
    for label, run in runs:
        got = np.asarray(run()).reshape(want.shape)
        bad = np.argwhere(got != want)
        assert not len(bad), (f"{label}: {len(bad)} of {want.size} outputs differ from TFLM, first "
                              f"at {tuple(bad[0])}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}")
    return cm, speed


def shared_calls(cm) -> dict:
    src = cm.sources[f"{cm.prefix}.c"]
    return {fn: src.count(f"{fn}(&") for fn in ("te_c_conv", "te_c_dw")}


# Which cases the shared kernels take (the others keep their specialized code, checked too).
def _conv_shared(p) -> bool:
    return p["groups"] == 1 and p["dh"] == p["dw"] == 1 and p["batch"] == 1


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv(name):
    p = CONV_CASES[name]
    cm, _ = check_size_mode(conv_model(p))
    assert shared_calls(cm)["te_c_conv"] == int(_conv_shared(p))


@pytest.mark.parametrize("band", [None, 0])
@pytest.mark.parametrize("name", list(DW_CASES))
def test_depthwise(name, band):
    """As compiled (a lone layer's scratch is its peak, so it may get a band, which keeps its
    specialized code) and with the whole plane forced (the shared kernel on every shape)."""
    p = DW_CASES[name]
    cm, speed = check_size_mode(dw_model(p), band=band)
    in_place = [code.in_place for _, code in speed._gen.layers if code][0]
    banded = any(op.options.get(BAND_OPTION, 0) for op, _ in cm._gen.layers)
    shared = in_place and p["dh"] == p["dw"] == 1 and p["batch"] == 1 and not banded
    assert shared_calls(cm)["te_c_dw"] == int(shared)
    assert [c.in_place for _, c in cm._gen.layers if c] == [in_place]


@pytest.mark.parametrize("name", list(FC_CASES))
def test_fully_connected(name):
    shape, k, n, per_channel, act, zp = FC_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    cm, _ = check_size_mode(fc_model(shape, k, n, rng, per_channel=per_channel, act=act, in_zp=zp))
    assert shared_calls(cm)["te_c_conv"] == 1


def test_fully_connected_huge_bias_keeps_its_kernel():
    """A bias that could overflow te_c_conv's sum (TFLM's int32 sum wraps) keeps the FC kernel."""
    rng = np.random.default_rng(3)
    m = fc_model((1, 64), 64, 6, rng, bias_values=np.array([2**31 - 5, -2**31 + 3, 7, 0, 1, -1]))
    cm, _ = check_size_mode(m, firmware=False)
    assert shared_calls(cm)["te_c_conv"] == 0


@pytest.mark.parametrize("name,model", [
    ("conv_border_s2", lambda: conv_model(CONV_CASES["explicit_pad"])),
    ("conv_image_smaller_than_kernel", lambda: conv_model(CONV_CASES["image_smaller_than_kernel"])),
    ("conv_oc_tail", lambda: conv_model(CONV_CASES["pw_ic16_oc7_odd_pixels"])),
    ("dw_k3_s1_odd_width", lambda: dw_model(DW_CASES["k3_width3"])),
    ("dw_k7_s2", lambda: dw_model(DW_CASES["k7_s2"])),
])
def test_sanitized(name, model):
    """ASan + UBSan over the layer alone, on exact-size buffers (in place: output over input)."""
    m = model()
    cm = te.convert(m, optimize="size")
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), N_SAMPLES, seed=5)
    assert_sanitized_matches_tflm(cm, m, x, layer=len(cm.graph.ops) - 1)


@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_shared_models(shared_models, name):
    """The MLPerf Tiny models: bit-exact on the host and the M4; every conv and depthwise layer
    calls the shared kernels, and the linked code beyond the weights is smaller."""
    data = (shared_models / f"{name}.tflite").read_bytes()
    cm, speed = check_size_mode(data, seed=11)
    kinds = [op.kind for op, code in cm._gen.layers if code]
    calls = shared_calls(cm)
    assert calls["te_c_dw"] == kinds.count("DEPTHWISE_CONV_2D")
    assert calls["te_c_conv"] == kinds.count("CONV_2D") + kinds.count("FULLY_CONNECTED")
    small, big = cm.build_firmware("cortex-m4"), speed.build_firmware("cortex-m4")
    assert small.sram_bytes == big.sram_bytes
    assert small.flash_bytes - cm.flash < big.flash_bytes - speed.flash


def test_vww_sanitized(shared_models):
    data = (shared_models / "vww_96_int8.tflite").read_bytes()
    cm = te.convert(data, optimize="size")
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 3, seed=2)
    assert_sanitized_matches_tflm(cm, data, x, timeout=300)


def test_default_is_speed():
    m = conv_model(CONV_CASES["k3_ic16"])
    assert te.convert(m).sources == te.convert(m, optimize="speed").sources
    assert "te_c_conv" not in te.convert(m).sources["model.c"]


@pytest.mark.parametrize("bad", ["fast", "SIZE", None, 1])
def test_bad_value_names_the_fix(bad):
    with pytest.raises(te.TinyEngineError) as info:
        te.convert(conv_model(CONV_CASES["k3_ic16"]), optimize=bad)
    msg = str(info.value)
    assert f"optimize={bad!r}" in msg and 'optimize="speed"' in msg and 'optimize="size"' in msg


def test_with_patches(shared_models):
    """Patch-based prefixes keep their specialized per-patch code; the rest shares kernels, and
    the plan is the one speed mode has."""
    data = (shared_models / "vww_96_int8.tflite").read_bytes()
    cm = te.convert(data, optimize="size", patches="auto")
    speed = te.convert(data, patches="auto")
    assert cm.patched and cm.peak_sram == speed.peak_sram and cm.flash == speed.flash
    assert shared_calls(cm)["te_c_conv"] > 0
    x = int8_inputs((96, 96, 3), 3, seed=4)
    got = np.asarray(cm.run(x)).reshape(-1)
    assert np.array_equal(got, np.asarray(tflm_run(data, x)).reshape(-1))
    assert cm.optimize == "size" and speed.optimize == "speed"


def test_hard_float_build(shared_models):
    """-mfloat-abi=hard -mfpu=fpv4-sp-d16 firmware of a size-mode model equals TFLM too."""
    data = (shared_models / "kws_ref_model.tflite").read_bytes()
    cm = te.convert(data, optimize="size")
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 4, seed=6)
    got = np.asarray(cm.run(x, target="cortex-m4", float_abi="hard")).reshape(-1)
    assert np.array_equal(got, np.asarray(tflm_run(data, x)).reshape(-1))


def test_size_mode_kept_where_the_plan_shrinks_scratch():
    """An inverted-residual block whose peak holds the depthwise plane and the projection chunk:
    the layers the band plan re-emits keep size mode (the expansion and tail convs stay shared)."""
    from test_band_plan import SHRUNK
    from test_kernels_conv_residual import block
    cm, speed = check_size_mode(block(c=16, e=64, h=12, w=12, seed=3))
    assert any(k in op.options for op, code in cm._gen.layers if code for k in SHRUNK)
    plain_convs = sum(op.kind == "CONV_2D" and "residual" not in op.options for op in cm.graph.ops)
    assert plain_convs >= 1 and shared_calls(cm)["te_c_conv"] == plain_convs
    assert cm.sources[f"{cm.prefix}.c"] != speed.sources[f"{speed.prefix}.c"]


# te_c_dw's asm steps (3x3, stride 1 or 2 across, outputs that saturate at the int8 range):
# the shapes where a step's loads or its overlapping last step meet the plane's edges.
STEP_CASES = {
    # SAME, even input, stride 2: the plane is 2 ow + 1 wide, the last word ends on its last byte
    "s2_plane_2ow_plus_1": dw_spec(c=3, h=8, w=8, sh=2, sw=2, xzp=-128, yzp=-128, act="RELU"),
    "s2_odd_row_overlap": dw_spec(c=5, h=9, w=13, sh=2, sw=2),               # ow 7
    "s2_valid_two_outputs": dw_spec(c=2, h=5, w=5, sh=2, sw=2, pad="VALID"),  # ow 2, one step
    "s1_down2_across1": dw_spec(c=4, h=11, w=9, sh=2, sw=1),
    "s1_c260_register_strides": dw_spec(c=260, h=4, w=5),
    "s1_sign_term_extremes": dw_spec(c=6, h=6, w=7, xzp=127, yzp=-100, wmin=-128),
    "s2_output_zero_point_0": dw_spec(c=4, h=7, w=8, sh=2, sw=2, yzp=0),
    # RELU6 clamped below 127: the plain C loop (no steps)
    "relu6_clamped": dw_spec(c=3, h=6, w=6, act="RELU6", ys=0.05, yzp=-128),
}


def _dw_record(cm) -> list:
    """The te_rq_p fields (zp, lo, hi, fast) of the model's te_dw_p descriptors."""
    src = cm.sources[f"{cm.prefix}.c"]
    return [[int(v) for v in m.split(",")]
            for m in re.findall(r"static const te_dw_p \w+ = \{.*\{([^{}]*)\}\};", src)]


@pytest.mark.parametrize("name", list(STEP_CASES))
def test_depthwise_steps(name):
    p = STEP_CASES[name]
    cm, _ = check_size_mode(dw_model(p), band=0)
    (rq,) = _dw_record(cm)
    assert rq[3] == (1 if name == "relu6_clamped" else 2), rq


def test_depthwise_steps_run_fewer_instructions(monkeypatch):
    """The asm steps against te_c_dw's C loop on the same layer, both bit-exact (check_size_mode)."""
    from tinyengine_tf.kernels import compact
    model = dw_model(STEP_CASES["s2_plane_2ow_plus_1"] | dict(c=8, h=16, w=16))
    steps, _ = check_size_mode(model, band=0)
    fast = compact._requant

    def c_loop(*a, **k):
        bias, q, shift, f = fast(*a, **k)
        return bias, q, shift, min(f, 1)
    monkeypatch.setattr(compact, "_requant", c_loop)
    loop, _ = check_size_mode(model, band=0)
    assert _dw_record(steps)[0][3] == 2 and _dw_record(loop)[0][3] == 1
    n_steps, n_loop = (m.profile("cortex-m4").invoke_instructions for m in (steps, loop))
    assert n_steps * 2 < n_loop, (n_steps, n_loop)
