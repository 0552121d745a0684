"""The Arm DSP path (c/te_dsp.h) of FULLY_CONNECTED, DEPTHWISE_CONV_2D and CONV_2D: firmware for a
Cortex-M4 under QEMU, built with the DSP instructions and without them (-DTE_NO_DSP), equals TFLite
Micro on every input, for single-op models that reach every code shape the DSP path has (filter-
or input-expanded and direct conv forms, border patches, tile remainders, word remainders, folded
and unfolded zero points, the wide requantization, the portable fallbacks), plus the host build of
the same sources; the DSP build really runs the DSP code (fewer instructions per MAC)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_sanitized_matches_tflm, check_footprints, int8_inputs,
                       sample_shape, tflm_run)
from test_kernels_conv import conv_model, spec as conv_spec
from test_kernels_depthwise import BAND_CASES, compile_with_band, dw_model, spec as dw_spec
from test_kernels_fully_connected import fc_model
from test_kernels_pooling import pool_model, spec as pool_spec
from tflite_builder import ModelBuilder, bias_scale
from tinyengine_tf.compiled import _NP, _sample_shape

N_SAMPLES = 12          # all -128, all 127, alternating extremes, then random
TARGET = "cortex-m4"


def run_m4(cm, x, dsp: bool, **build):
    """cm.run(x, target="cortex-m4") with the DSP path on (the default) or off."""
    arrays, n, _ = cm._prepare_inputs(x)
    outs = [np.empty((n, *_sample_shape(t)), dtype=_NP[t.dtype]) for t in cm._io("out")]
    cm._run_firmware(TARGET, arrays, n, outs, dsp=dsp, **build)
    return outs[0]


def check(model: bytes, seed: int = 0, cm=None):
    """DSP firmware, portable firmware and the host build all equal TFLM; returns the model
    (compiled by te.convert unless given)."""
    cm = te.convert(model) if cm is None else cm
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), N_SAMPLES, seed=seed)
    want = tflm_run(model, x)
    for label, got in (("DSP", run_m4(cm, x, True)), ("portable", run_m4(cm, x, False)),
                       ("host", cm.run(x))):
        got = np.asarray(got).reshape(want.shape)
        bad = np.argwhere(got != want)
        assert not len(bad), (f"{label} build: {len(bad)} of {want.size} outputs differ from TFLM, "
                              f"first at {tuple(bad[0])}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}")
    check_footprints(cm)
    return cm


def dsp_source(cm) -> str:
    """The DSP branches of the generated model."""
    src = cm.sources[f"{cm.prefix}.c"]
    parts, pos = [], 0
    while (i := src.find("#if TE_DSP", pos)) >= 0:
        j = src.find("#else", i)
        parts.append(src[i:j])
        pos = j
    return "\n".join(parts)


# -- FULLY_CONNECTED --------------------------------------------------------------------------------

FC_CASES = {
    # (input shape, K, N, per_channel, activation, input zp)
    "k300_n40_relu6": ((1, 300), 300, 40, True, "RELU6", 127),
    "k300_n40_per_tensor": ((1, 300), 300, 40, False, "RELU", -128),
    "k17_rows4_tail": ((4, 17), 17, 3, True, "NONE", 5),        # K % 4 = 1, N < 4
    "k1_n1": ((1, 1), 1, 1, False, "NONE", 0),                   # no whole word at all
    "k64_n1_rows2": ((2, 64), 64, 1, False, "RELU6", -1),
    "k10_n7_overlap": ((1, 10), 10, 7, True, "NONE", 9),         # N % 4: last tile overlaps
    "k3_n40": ((3, 3), 3, 40, True, "NONE", 100),
    # expanded input row (fully_connected._dsp_expanded_body): whole loop iterations only,
    # and rows too far apart for one LDR offset (the direct body)
    "k640_n20_rows2_loop_only": ((2, 640), 640, 20, True, "RELU", -128),
    "k17_n16_one_iteration_tail": ((1, 17), 17, 16, False, "RELU6", -128),
    "k10_n18_no_loop_overlap": ((3, 10), 10, 18, True, "NONE", 9),
    "k1400_n16_direct": ((1, 1400), 1400, 16, True, "NONE", 3),
    # the pair form without a loop (two steps), and over rows of the shared-filter kind
    "k8_n8_pair_no_loop": ((3, 8), 8, 8, True, "NONE", -5),
}


# What each FULLY_CONNECTED form leaves in the DSP branch (kernels/fc_tiled.py and the two
# bodies of kernels/fully_connected.py).
FC_FORMS = {"pair": "uxtb16 r4, r4", "w16": "_w16;", "expanded": "ldrd %[xl], %[xh]",
            "direct": "const int8_t *xp = x;"}
# Each case's form: the pair form for whole tiles of units and whole words of inputs from 8
# units where the row fits on the stack, else the two sign-extending bodies (the expanded one
# from 16 units, or where the pair form's |SA| limit fails).
FC_CASE_FORM = {"k300_n40_relu6": "pair", "k300_n40_per_tensor": "pair", "k17_rows4_tail": "direct",
                "k1_n1": "direct", "k64_n1_rows2": "direct", "k10_n7_overlap": "direct",
                "k3_n40": "direct", "k640_n20_rows2_loop_only": "pair",
                "k17_n16_one_iteration_tail": "expanded", "k10_n18_no_loop_overlap": "expanded",
                "k1400_n16_direct": "direct", "k8_n8_pair_no_loop": "pair"}


def fc_form(src: str) -> set:
    return {f for f, marker in FC_FORMS.items() if marker in src}


@pytest.mark.parametrize("name", list(FC_CASES))
def test_fully_connected(name):
    shape, k, n, per_channel, act, zp = FC_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    cm = check(fc_model(shape, k, n, rng, per_channel=per_channel, act=act, in_zp=zp))
    src = dsp_source(cm)
    assert "smlad" in src or k < 4
    assert fc_form(src) == {FC_CASE_FORM[name]}, name


# The widened form (convert(flash=...) with room): whole loop iterations and the rest, K % 4
# tails, n % 4 tiles that overlap, rows, the doubled and the plain accumulators.
W16_CASES = {
    "k300_n40_relu6": ((1, 300), 300, 40, True, "RELU6", 127),
    "k17_rows4_n5_overlap": ((4, 17), 17, 5, True, "NONE", 5),
    "k3_n4": ((3, 3), 3, 4, False, "NONE", 100),
    "k640_n20_rows2": ((2, 640), 640, 20, False, "RELU", -128),
    "k30_n7": ((1, 30), 30, 7, True, "NONE", -7),
}


@pytest.mark.parametrize("name", list(W16_CASES))
def test_fully_connected_widened(name):
    shape, k, n, per_channel, act, zp = W16_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    model = fc_model(shape, k, n, rng, per_channel=per_channel, act=act, in_zp=zp,
                     w_range=(-128, 127))
    cm = check(model, cm=te.convert(model, flash=1 << 26))
    src = dsp_source(cm)
    assert fc_form(src) == {"w16"} and "[u + 0] << 1)" in src, name   # doubled accumulators


def test_fully_connected_widened_undoubled():
    """The wide requantization and the portable one after the int16 loop: plain accumulators."""
    rng = np.random.default_rng(11)
    bias = rng.integers(-3000, 3000, 18)
    bias[2] = 2**30 + 5
    for model, fn in ((fc_model((1, 72), 72, 18, rng, per_channel=False, act="NONE", in_zp=-3,
                                bias_values=bias, out_scale=2.0), "te_dsp_rq_wide("),
                      (fc_model((1, 64), 64, 20, rng, per_channel=False, act="NONE", in_zp=-128,
                                w_scale=0.01, out_scale=0.0001, out_zp=3), "te_mbqm(")):
        cm = check(model, cm=te.convert(model, flash=1 << 26))
        src = dsp_source(cm)
        assert fc_form(src) == {"w16"} and fn in src and "[u + 0] << 1)" not in src


def test_fully_connected_expanded_where_pairs_overflow():
    """Filters too heavy for the pair form's 256 SA keep the sign-extending expanded body."""
    rng = np.random.default_rng(5)
    weights = rng.choice([-127, 127], (16, 600))
    cm = check(fc_model((1, 600), 600, 16, rng, per_channel=True, act="RELU", in_zp=-128,
                        weights=weights, out_scale=50.0))
    assert fc_form(dsp_source(cm)) == {"expanded"}


def test_fully_connected_cases_reach_every_form():
    assert set(FC_CASE_FORM.values()) | {"w16", "expanded"} == set(FC_FORMS)


def test_fully_connected_left_shift_expanded():
    """A multiplier above 1 keeps the portable requantization after the pair form's loop."""
    rng = np.random.default_rng(12)
    cm = check(fc_model((1, 64), 64, 20, rng, per_channel=False, act="NONE", in_zp=-128,
                        w_scale=0.01, out_scale=0.0001, out_zp=3))
    src = dsp_source(cm)
    assert "int32_t xx[" in src and "te_dsp_rq" not in src


def test_fully_connected_wide_requantization_expanded():
    """A huge per-tensor bias takes te_dsp_rq_wide after the pair form's loop."""
    rng = np.random.default_rng(11)
    bias = rng.integers(-3000, 3000, 18)
    bias[2] = 2**30 + 5
    cm = check(fc_model((1, 72), 72, 18, rng, per_channel=False, act="NONE", in_zp=-3,
                        bias_values=bias, out_scale=2.0))
    src = dsp_source(cm)
    assert "te_dsp_rq_wide(" in src and "int32_t xx[" in src and "__sadd16(lo" not in src


# -- DEPTHWISE_CONV_2D ------------------------------------------------------------------------------

DW_CASES = {
    "k3_s1_same": dw_spec(c=8, h=9, w=9),
    "k3_s1_vww": dw_spec(c=8, h=12, w=12, xzp=-128, yzp=-128, act="RELU"),
    "k3_s2_same": dw_spec(c=16, h=10, w=10, sh=2, sw=2),
    "k3_s2_valid_odd": dw_spec(c=5, h=11, w=11, sh=2, sw=2, pad="VALID"),
    "k5_s1": dw_spec(c=5, kh=5, kw=5, h=9, w=8),
    "k7_s2": dw_spec(c=3, kh=7, kw=7, sh=2, sw=2, h=13, w=12),
    "k3_dilation2": dw_spec(dh=2, dw=2, h=10, w=9),
    "k5_dilation3": dw_spec(kh=2, kw=5, dh=3, dw=3, w=14),
    "k1x3_width1": dw_spec(kh=1, kw=3, w=1),
    "k3_width3": dw_spec(c=6, h=5, w=3),                          # odd row: the last pair overlaps
    "k3x1_stride3": dw_spec(kh=3, kw=1, sw=3),
    "k2_s2_valid": dw_spec(kh=2, kw=2, sh=2, sw=2, pad="VALID"),  # 4 taps: no ring, one word
    "mult2": dw_spec(c=3, mult=2),                                # out of place: portable loops
    "mult2_s2": dw_spec(c=4, mult=2, sh=2, sw=2, h=8, w=8),
    "per_tensor_relu6": dw_spec(per_channel=False, act="RELU6"),
    "relu_n1_to_1": dw_spec(act="RELU_N1_TO_1", ys=0.01),
    "batch2": dw_spec(batch=2, h=6, w=7),
    "explicit_pad": dw_spec(pad_extra=(1, 2, 0, 3), pad="VALID", xzp=-7),
    "left_shift": dw_spec(ys=0.0002, xs=0.5, yzp=0),              # portable requantization
    "tiny_multiplier": dw_spec(ys=40.0, yzp=120),                 # large shifts: zp not folded
    # asm tiles (depthwise._asm_shape): 1 or 2 output rows of 1-4 outputs, overlapping last tiles
    "k5_s2_odd_c3": dw_spec(c=3, kh=5, kw=5, sh=2, sw=2, h=11, w=13),
    "k7_s1_c2": dw_spec(c=2, kh=7, kw=7, h=10, w=11, xzp=127),
    "k3_s1_rows_overlap": dw_spec(c=6, h=7, w=6, xzp=-128, yzp=-128, act="RELU"),
    "k3_s2_c1_valid": dw_spec(c=1, h=9, w=10, sh=2, sw=2, pad="VALID"),
    "k7_s2_wide": dw_spec(c=5, kh=7, kw=7, sh=2, sw=2, h=16, w=17, act="RELU6"),
    "out3x3_c16": dw_spec(c=16, h=3, w=3, xzp=-128, yzp=-128, act="RELU"),
    "out3x3_c300_gather_offsets": dw_spec(c=300, h=3, w=3),          # channel stride > 255
    "width2": dw_spec(c=3, h=5, w=2),
    "one_row_width2": dw_spec(c=4, h=1, w=2, kh=1, kw=3),
    "width1_s2": dw_spec(c=2, h=6, w=1, sh=2, sw=2),
    "row_offsets_past_4095": dw_spec(c=1, h=3, w=2100),            # C tiles (_dsp_pair_code)
    "two_rows_width1": dw_spec(c=3, h=2, w=1),                     # 2x1 tiles
    "four_rows_width3": dw_spec(c=2, h=4, w=3, xzp=-128, yzp=-128, act="RELU"),   # 4x1 tiles
    # KWS's plane: 25 rows of 5 outputs, one row tile each (7-byte plane rows from two words)
    "kws_rows_of_5": dw_spec(c=4, h=25, w=5, xzp=-128, yzp=-128, act="RELU"),
    # rows up to GATHER_ROW_UNROLL bytes written out (_dsp_gather_rows), 17-24 bytes
    "rows_20_written_out": dw_spec(c=2, h=4, w=20, xzp=-128, yzp=-128, act="RELU"),
    "rows_23_written_out_k7_s2": dw_spec(c=2, kh=7, kw=7, sh=2, sw=2, h=9, w=23),
    # wider rows (_dsp_gather_rows_wide): 8- or 16-byte steps, then the row's last 1-7 bytes;
    # the step to the next plane row on the last store, or added after the steps
    "wide_rows_25_k5": dw_spec(c=3, kh=5, kw=5, h=6, w=25),
    "wide_rows_28": dw_spec(c=2, h=4, w=28, xzp=-128, yzp=-128, act="RELU"),
    "wide_rows_40_s2": dw_spec(c=4, h=5, w=40, sh=2, sw=2, xzp=-128, yzp=-128, act="RELU"),
    "wide_rows_31_k7_s2": dw_spec(c=2, kh=7, kw=7, sh=2, sw=2, h=9, w=31),
    "wide_rows_37_16_byte_steps": dw_spec(c=2, h=3, w=37),
    "wide_rows_32_16_byte_steps_s2": dw_spec(c=3, h=4, w=32, sh=2, sw=2),
}


@pytest.mark.parametrize("name", list(DW_CASES))
def test_depthwise(name):
    cm = check(dw_model(DW_CASES[name]))
    in_place = [code.in_place for op, code in cm._gen.layers if op.kind == "DEPTHWISE_CONV_2D"]
    # In place (multiplier 1, output no larger than the input) is the DSP path's.
    assert ("smla" in dsp_source(cm)) == in_place[0]   # asm tiles or intrinsics


@pytest.mark.parametrize("name", ["k3_s1_same", "k3_s1_same_b5", "k3_s2_valid_odd", "k5_s2_same",
                                  "k7_s1_same", "k7_s2_valid", "k4_s1_same_asym", "k3x1_s2x1_valid",
                                  "batch2", "mobilenet_like", "width1", "explicit_pad_in_place"])
def test_depthwise_band(name):
    """The band form (kernels/depthwise_band.py) over the whole-plane branch's asm tiles."""
    p, band = BAND_CASES[name]
    m = dw_model(p)
    cm = check(m, cm=compile_with_band(m, band))
    assert "smla" in dsp_source(cm) and "for (int y0 = 0;" in dsp_source(cm)


def test_depthwise_whole_plane_forced():
    """The whole plane, which single-layer models leave for a band, stays covered."""
    for name in ["k3_s1_vww", "k5_s2_odd_c3", "k7_s1_c2", "kws_rows_of_5"]:
        m = dw_model(DW_CASES[name])
        check(m, cm=compile_with_band(m, 0))


def test_depthwise_cases_reach_every_tile_shape():
    """The cases above run each asm tile shape the in-place DSP path picks, and the C tiles."""
    seen = set()
    for p in DW_CASES.values():
        src = dsp_source(te.convert(dw_model(p)))
        seen |= set(re.findall(r"asm tile (\d+x\d+)", src))
        if "__smla" in src:
            seen.add("C")
    assert seen >= {"1x2", "1x3", "1x4", "1x5", "1x6", "2x1", "2x2", "2x3", "3x1", "4x1", "C"}, seen


# A per-tensor layer's q, h and r are literals in its channel records (depthwise._records_call).
PER_TENSOR_RECORDS = re.compile(r"wv\[\d+\] = \(int32_t\)-?\d+; wv\[\d+\] = \(int32_t\)-?\d+; "
                                r"wv\[\d+\] = \(int32_t\)\d+;")


def test_depthwise_cases_reach_every_asm_requantization():
    """The cases above run the asm tiles' requantization tail in both forms (with the sign term,
    and without it where the clamp is at or above the zero point), per channel and per tensor
    (q, h, r literals in the tile's stack array), with the bias as an operand and loaded from
    the stack array, and the tiles that leave the requantization to C."""
    seen = set()
    for p in DW_CASES.values():
        src = dsp_source(te.convert(dw_model(p)))
        if "asr #31" in src and "smmlar %[w1], %[a0]" in src:
            seen.add("sign")
        if "smmlar %[a0], %[a0]" in src:
            seen.add("pos")
        if PER_TENSOR_RECORDS.search(src):
            seen.add("per-tensor")
        if re.search(r"asm tile \d+x\d+ \*/", src):
            seen.add("C")
        if re.search(r'__asm__\("ldr %\[a\d\], \[%\[k\]', src):
            seen.add("bias from the stack array")
        if re.search(r'asm tile \d+x\d+ rq \*/(?:(?!asm tile).)*\[bf\] "r"\(bf\)', src, re.S):
            seen.add("bias in a register")
    assert seen == {"sign", "pos", "per-tensor", "C", "bias from the stack array",
                    "bias in a register"}, seen


def test_depthwise_cases_reach_every_row_tile():
    """The cases above run the tiles that store their own outputs and step their pointers
    (depthwise._row_tile_code): one tile a row, several tiles a row, tiles of several output rows
    (the others' outputs at offsets, yo stepped after the row); the output pointer
    post-incremented and, past 255 channels, by offsets and an add; with and without the sign
    term, per channel and per tensor."""
    seen = set()
    for p in DW_CASES.values():
        src = dsp_source(te.convert(dw_model(p)))
        for ny, nx, form, asm in re.findall(r'asm tile (\d)x(\d) rq, (row|steps) \*/\s*\{[^;]*;'
                                            r'\s*__asm__ volatile\("(.*?)"', src, re.S):
            assert re.search(r"\[%\[p\]\], #\d+", asm), asm    # the plane pointer's step
            seen.add("one tile a row" if form == "row" else
                     "rows a tile" if ny != "1" else "tiles a row")
            seen.add("post-incremented" if "[%[y]], #" in asm else "offsets")
            seen.add("sign" if "asr #31" in asm else "pos")
            seen.add("per-tensor" if PER_TENSOR_RECORDS.search(src) else "per-channel")
            if ny != "1":
                assert re.search(r"pp \+= \d+;\s*yo \+= \d+;", src), src
    assert seen == {"one tile a row", "tiles a row", "rows a tile", "post-incremented",
                    "offsets", "sign", "pos", "per-tensor", "per-channel"}, seen


def test_depthwise_cover_splits_a_pair_over_chosen_words():
    """Five outputs of a 3-wide kernel read plane bytes 0-6: words at 0 and 3 serve every tap,
    the pair [x2, x4] as two single taps (one MAC more), cheaper than a third word and its
    extends (KWS's 25 x 5 planes)."""
    from tinyengine_tf.kernels.depthwise import _cover_min_of
    words, where = _cover_min_of((0, 1, 2, 3, 4), (1, 2, 3, 4, 5), 0, 4)
    assert len(words) == 2 and 2 not in where and len(where) == 9, (words, where)


def test_depthwise_cases_reach_every_written_out_gather():
    """The cases above gather written-out rows (_dsp_gather_rows) one row a step, several rows a
    step, and all of them without a loop, post-incrementing and (past 255 channels) by offsets:
    counted by the rows' steps to the next plane row (a store's post-increment other than 1 or
    4, or an add)."""
    seen = set()
    for p in DW_CASES.values():
        src = dsp_source(te.convert(dw_model(p)))
        for asm in re.findall(r'"1:\\n\\tldrb %\[t0\].*?"|"ldrb %\[t0\].*?"', src):
            steps = [m for m in re.findall(r"\[%\[d\]\], #(\d+)", asm) if m not in ("1", "4")]
            rows = len(steps) + asm.count("add %[d]")
            if not rows:
                continue                       # no ring: _dsp_gather
            seen.add("no loop" if not asm.startswith('"1:') else "one row" if rows == 1 else "rows")
            seen.add("offsets" if "add %[s]" in asm else "post-incremented")
    assert seen == {"no loop", "one row", "rows", "offsets", "post-incremented"}, seen


def test_depthwise_cases_reach_every_wide_gather():
    """The cases above gather wide rows in steps of 8 and 16 bytes, ending in a word and bytes,
    a word, bytes alone, and none (the plane-row step then added after the steps)."""
    from tinyengine_tf.kernels.depthwise import GATHER_ROW_UNROLL
    seen = set()
    for p in DW_CASES.values():
        src = dsp_source(te.convert(dw_model(p)))
        for asm in re.findall(r'"1:\\n\\tmov %\[m\].*?"', src):
            steps, tail = asm.split("bne 2b")
            seen.add(("word" if "str %[t0], [%[d]], #" in tail else "")
                     + ("bytes" if "strb" in tail else "") + ("add" if "add %[d]" in tail else ""))
            seen.add(f"{8 * steps.count('str %[t0], [%[d]], #8')}-byte steps")
    assert GATHER_ROW_UNROLL < 25
    assert seen >= {"wordbytes", "word", "bytes", "add", "8-byte steps", "16-byte steps"}, seen


# -- ADD / SUB --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,act,qo", [("ADD", "NONE", (0.08, -128)), ("SUB", "NONE", (0.05, 3)),
                                         ("ADD", "RELU", (0.06, -20))])
def test_add_sub_saturation(kind, act, qo):
    """The [-128, 127] clamp as one SSAT (te_sat8) on the M4, and te_clamp where an activation
    narrows it; the second operand constant (check feeds one input)."""
    from test_kernels_elementwise import binary_model
    model, _ = binary_model(kind, (1, 6, 7, 16), (1, 6, 7, 16), (0.05, -3), (0.03, 10), qo,
                            act=act, const=1, seed=3)
    src = check(model).sources
    text = "".join(v for k, v in src.items() if k.endswith(".c"))
    assert ("te_sat8(" in text) == (act == "NONE")


# The ADD/SUB table form (elementwise._dsp_tables): per input code its rescaled value, looked
# up per element (four a loop turn where they divide the run), then one SMMLAR for the output.
# Cases: (kind, shape 1, shape 2, q1, q2, qo, activation, const operand, markers of the form).
ADD_CASES = {
    # ResNet's: RELU at the output zero point -128, no sign term
    "relu_at_zp": ("ADD", (1, 8, 8, 16), (1, 8, 8, 16), (0.04, -128), (0.1, 4), (0.05, -128),
                   "RELU", None, ("te_dsp_rq2_pos(", "t1[pa[i + 3]]")),
    "none_signed": ("ADD", (1, 8, 8, 16), (1, 8, 8, 16), (0.045, -17), (0.11, 4), (0.053, 3),
                    "NONE", None, ("te_dsp_rq2(",)),
    # 630 elements: one at a time
    "sub_relu6_clamp": ("SUB", (1, 6, 7, 15), (1, 6, 7, 15), (0.05, -3), (0.03, 10), (0.02, -20),
                        "RELU6", None, ("te_clamp(", "t1[pa[i]] - t2[pb[i]]")),
    # broadcasts: a per-channel vector, one value per pixel (hoisted out of the inner loop),
    # and a constant operand
    "broadcast_vector": ("ADD", (1, 6, 7, 16), (16,), (0.5, 5), (0.005, -7), (0.02, -100),
                         "NONE", None, ("t2[pb[i + 3]]",)),
    "broadcast_pixel": ("ADD", (1, 6, 7, 16), (1, 6, 7, 1), (0.5, 5), (0.005, -7), (0.02, -100),
                        "RELU", None, ("const int32_t vb = t2[",)),
    "const_operand": ("SUB", (1, 6, 7, 16), (1, 6, 7, 16), (0.0371, 127), (0.0042, -128),
                      (0.0009, 13), "NONE", 1, ("te_dsp_rq2(",)),
    # an output multiplier so small that the zero point is added after the shift
    "zp_after_shift": ("ADD", (1, 600), (1, 600), (0.001, 3), (0.002, -5), (5.8, 100),
                       "NONE", None, (") + 100), 8)",)),
}


def _add_model(case):
    from test_kernels_elementwise import binary_model
    kind, s1, s2, q1, q2, qo, act, const, _ = case
    return binary_model(kind, s1, s2, q1, q2, qo, act=act, const=const, seed=5)[0]


def check_binary(model: bytes):
    """check() for models with one or two inputs: DSP, portable and host builds equal TFLM."""
    cm = te.convert(model)
    xs = [int8_inputs(sample_shape(cm.graph.t(t).shape), N_SAMPLES, seed=k)
          for k, t in enumerate(cm.graph.inputs)]
    want = tflm_run(model, xs)
    for label, got in (("DSP", run_m4(cm, xs, True)), ("portable", run_m4(cm, xs, False)),
                       ("host", cm.run(xs))):
        assert np.array_equal(np.asarray(got).reshape(want.shape), want), label
    return cm


@pytest.mark.parametrize("name", list(ADD_CASES))
def test_add_sub_tables(name):
    cm = check_binary(_add_model(ADD_CASES[name]))
    src = dsp_source(cm)
    assert "int32_t tab[512];" in src and all(m in src for m in ADD_CASES[name][-1]), name


def test_add_sub_small_layers_keep_the_portable_loop():
    from test_kernels_elementwise import binary_model
    model, _ = binary_model("ADD", (1, 5, 6, 8), (1, 5, 6, 8), (0.05, -3), (0.03, 10),
                            (0.06, -20), seed=3)
    cm = check_binary(model)
    assert "#if TE_DSP" not in cm.sources["model.c"]


@pytest.mark.parametrize("kind,seed", [("ADD", 0), ("ADD", 1), ("SUB", 2), ("ADD", 3)])
def test_add_sub_tables_all_input_pairs(kind, seed):
    """Every (x1, x2) int8 pair through the tables on the M4, random scales up to 3000x apart."""
    from test_kernels_elementwise import binary_model, random_quant
    rng = np.random.default_rng(200 + seed)
    q1, q2, qo = random_quant(rng), random_quant(rng), random_quant(rng, -3.0, 1.0)
    if 2 * max(q1[0], q2[0]) >= (1 << 20) * qo[0]:
        qo = (q1[0], qo[1])
    model, _ = binary_model(kind, (1, 65536), (1, 65536), q1, q2, qo,
                            act=["NONE", "RELU", "RELU6", "NONE"][seed])
    pairs = np.arange(65536)
    x1 = np.concatenate([((pairs >> 8) - 128).astype(np.int8)[None], int8_inputs((65536,), 3, seed)])
    x2 = np.concatenate([((pairs & 255) - 128).astype(np.int8)[None],
                         int8_inputs((65536,), 3, seed + 1)])
    cm = te.convert(model)
    assert "int32_t tab[512];" in dsp_source(cm)
    want = tflm_run(model, [x1, x2])
    got = run_m4(cm, [x1, x2], True)
    assert np.array_equal(np.asarray(got).reshape(want.shape), want)


# -- CONV_2D ----------------------------------------------------------------------------------------

CONV_CASES = {
    # 1x1 over the whole image (the "w" form below 32 input channels, "x" for few pixels)
    "pw_ic8": conv_spec(kh=1, kw=1, ic=8, oc=16, h=8, w=8, xzp=-128, yzp=-128, act="RELU"),
    "pw_ic16_oc7_odd_pixels": conv_spec(kh=1, kw=1, ic=16, oc=7, h=5, w=5),
    "pw_ic32": conv_spec(kh=1, kw=1, ic=32, oc=32, h=8, w=8),
    "pw_ic36_odd_word_count": conv_spec(kh=1, kw=1, ic=36, oc=10, h=4, w=5),
    "pw_ic13_word_overlap": conv_spec(kh=1, kw=1, ic=13, oc=6, h=5, w=5),
    "pw_ic3": conv_spec(kh=1, kw=1, ic=3, oc=4, h=4, w=4),                  # run < 4: portable
    "pw_ic128_few_pixels": conv_spec(kh=1, kw=1, ic=128, oc=64, h=3, w=3),
    "pw_ic66_few_pixels_overlap": conv_spec(kh=1, kw=1, ic=66, oc=20, h=2, w=3),
    "pw_oc1": conv_spec(kh=1, kw=1, ic=24, oc=1, h=3, w=3),
    "pw_one_pixel": conv_spec(kh=1, kw=1, ic=40, oc=9, h=1, w=1),
    "pw_s2": conv_spec(kh=1, kw=1, ic=48, oc=17, sh=2, sw=2, h=7, w=7),
    "pw_ic512_far_offsets": conv_spec(kh=1, kw=1, ic=512, oc=4, h=2, w=2),   # C word steps
    # 400 pixels, 32 channels: the "e" form (3-pixel "w" tiles before it; see k3_ic3_3px_tiles_border)
    "pw_3px_tiles": conv_spec(kh=1, kw=1, ic=32, oc=32, h=20, w=20, xzp=-128, yzp=-128, act="RELU"),
    # (an odd output width: even ones at stride 1 are the "o" form's, o3_s1_*)
    "k3_ic3_3px_tiles_border": conv_spec(ic=3, oc=10, h=40, w=41),
    "pw_batch3": conv_spec(kh=1, kw=1, ic=16, oc=24, h=3, w=5, batch=3),
    # first layers: 3 input channels, borders on the right and bottom (or all around)
    "k3_ic3_s2_vww": conv_spec(ic=3, oc=8, h=17, w=17, sh=2, sw=2, xzp=-128, yzp=-128, act="RELU"),
    "k3_ic3_s1_same": conv_spec(ic=3, oc=5, h=9, w=8),
    # rows of 3-pixel tiles ended by 2-pixel ones (conv_dsp_wxd._narrow_plan): two without
    # borders (channel pairs outside; at stride 2 the "o" form's row variant takes such layers)
    "k3_ic3_valid_mixed_two_narrow": conv_spec(ic=3, oc=8, h=42, w=43, pad="VALID", xzp=-128,
                                               act="RELU6", ys=0.03, yzp=-100),
    "k3_ic5_overlapping_word": conv_spec(ic=5, oc=6, h=7, w=7),              # runs of 15 bytes
    "k3_ic2_overlapping_word": conv_spec(ic=2, oc=4, h=6, w=6, xzp=-128),    # runs of 6 bytes
    "k10x4_s2_kws": conv_spec(kh=10, kw=4, sh=2, sw=2, h=49, w=10, ic=1, oc=16, act="RELU",
                              xzp=83, yzp=-128),
    # "o" form (conv_dsp_o._dsp_o_form): one input channel at stride 2 across, the padded image
    # expanded once; an odd kw (zero weight padding the last pair), overlapping tiles of 5
    "o_k3_s2_odd_kw_ow7": conv_spec(kh=3, kw=3, sh=2, sw=2, h=12, w=14, ic=1, oc=5, xzp=-128),
    # three tap pairs (4-pixel tiles), stride 1 down, per-tensor, batches, unread rows and columns
    "o_k5_s1x2_valid_batch2": conv_spec(kh=5, kw=5, sh=1, sw=2, h=7, w=12, ic=1, oc=3, batch=2,
                                        pad="VALID", per_channel=False, act="RELU6", ys=0.03,
                                        yzp=-100),
    # one tap pair, an odd count of input words per row
    "o_k2x2_s3x2": conv_spec(kh=2, kw=2, sh=3, sw=2, h=8, w=5, ic=1, oc=4, xzp=127),
    "o_left_shift": conv_spec(kh=3, kw=4, sh=2, sw=2, h=9, w=10, ic=1, oc=4, ys=0.0004, xs=0.5,
                              yzp=0),                                 # portable requantization
    "o_image_too_big": conv_spec(kh=3, kw=3, sh=2, sw=2, h=40, w=40, ic=1, oc=4),   # portable
    # its row variant (conv_dsp_o._dsp_o_rows): three input channels at stride 2 across (VWW's
    # first layer is k3_ic3_s2_vww), kernel rows expanded into row slots; another zero point
    # than -128, batches, a last column no window reads
    "o3_valid_batch2_unread_column": conv_spec(ic=3, oc=6, sh=2, sw=2, h=10, w=12, batch=2,
                                               pad="VALID", per_channel=False, xzp=9),
    # at stride 1 (ResNet's first layer, 32 x 32 SAME here), odd pixels read the copy of the
    # row a half-word on; VALID with another zero point (k3_ic3_s1_same too)
    "o3_s1_shifted_copy_resnet": conv_spec(ic=3, oc=16, h=32, w=32, xzp=-128, yzp=-128,
                                           act="RELU"),
    "o3_s1_shifted_valid_zp": conv_spec(ic=3, oc=6, h=7, w=10, pad="VALID", per_channel=False,
                                        xzp=9),
    # MobileNetV1's first layer in small: 32 x 32 outputs, tiles of 4
    "o3_s2_mobilenet_v1_first": conv_spec(ic=3, oc=10, h=64, w=64, sh=2, sw=2, xzp=-128,
                                          yzp=-128, act="RELU"),
    # stride 1 down (two of three rows reused), rows of whole 8-byte turns, a narrow clamp
    "o3_s1x2_rows_reused": conv_spec(ic=3, oc=5, sh=1, sw=2, h=8, w=16, xzp=-128, act="RELU6",
                                     ys=0.03, yzp=-100),
    # stride 6 down past a 5-row kernel (rows skipped), one tile of 3 pixels a row
    "o3_k5x3_s6x2_rows_skipped": conv_spec(kh=5, kw=3, sh=6, sw=2, h=20, w=6, ic=3, oc=4,
                                           xzp=-60),
    # a folded explicit pad (an odd first half-word), the portable requantization
    "o3_explicit_pad_left_shift": conv_spec(ic=3, oc=4, sh=2, sw=2, h=9, w=11,
                                            pad_extra=(2, 0, 1, 1), ys=0.0004, xs=0.5, yzp=0),
    # 3x3 and up
    "k3_ic16": conv_spec(ic=16, oc=16, h=8, w=8, xzp=-128, act="RELU"),
    "k3_ic16_s2_oc9": conv_spec(ic=16, oc=9, h=9, w=10, sh=2, sw=2),
    # past DSP_WIDE_MACS, rows of 16: 2-pixel tiles (3 would recompute 2 of 16; _wide_pays)
    "k3_ic16_rows16_2px_tiles": conv_spec(ic=16, oc=16, h=16, w=16, xzp=-128, act="RELU"),
    # windows of 1152 B (ResNet's 3x3 64-channel layer): the "x" form's two pixels interleaved
    "k3_ic64_x_interleaved": conv_spec(ic=64, oc=64, h=6, w=6, xzp=-128, yzp=-128, act="RELU"),
    "k3_ic62_x_interleaved_overlap": conv_spec(ic=62, oc=7, h=5, w=4, xzp=3),   # runs of 186 B
    "k3_ic63_x_interleaved_tail_byte": conv_spec(ic=63, oc=9, h=4, w=5, per_channel=False),
    # "r" form (conv_dsp_r._dsp_r_form): input rows and filters expanded (more in R_CASES)
    "k3_ic8_r_dilated_rows_batch2": conv_spec(ic=8, oc=12, dh=2, h=10, w=11, batch=2,
                                              per_channel=False, xzp=127),
    "k3_ic24_r_explicit_pad": conv_spec(ic=24, oc=18, h=9, w=10, pad_extra=(2, 0, 1, 1), xzp=9),
    # neither side fits expanded: the "d" form
    "k3_ic128_direct": conv_spec(ic=128, oc=6, h=4, w=5, xzp=-128, yzp=-128, act="RELU"),
    "k3_ic64_direct_s2_oc5": conv_spec(ic=64, oc=5, h=7, w=9, sh=2, sw=2),
    "k5_valid_ic4": conv_spec(kh=5, kw=5, ic=4, oc=6, pad="VALID", h=9, w=9),
    "k4x2_asym": conv_spec(kh=4, kw=2, h=10, w=7),
    "k3_dilated_rows": conv_spec(dh=2, h=10, w=9),
    "k3_dilated_cols": conv_spec(dw=2, h=10, w=9),                          # portable
    "groups2": conv_spec(ic=8, oc=6, groups=2),                             # portable
    "image_smaller_than_kernel": conv_spec(h=2, w=3, kh=5, kw=5),           # every tile a border
    "batch2": conv_spec(batch=2, h=6, w=7),
    "explicit_pad": conv_spec(pad_extra=(2, 0, 1, 1), sh=2, sw=2, xzp=9),
    "per_tensor": conv_spec(per_channel=False, oc=12),
    "relu6_narrow": conv_spec(act="RELU6", ys=0.03, yzp=-100),
    "left_shift": conv_spec(ys=0.0004, xs=0.5, yzp=0),                     # portable requantization
    "tiny_multiplier": conv_spec(ys=30.0, yzp=127),                         # zp not folded
    # "p" form (conv_dsp_p._dsp_p_form): P pixels x 1 channel, the last tile overlapping
    "pw_p6_ic128": conv_spec(kh=1, kw=1, ic=128, oc=128, h=6, w=6, xzp=-128, yzp=-128, act="RELU"),
    "pw_p5_overlap_per_tensor": conv_spec(kh=1, kw=1, ic=128, oc=96, h=3, w=3, per_channel=False),
    "pw_p_ic36_step_remainder": conv_spec(kh=1, kw=1, ic=36, oc=64, h=1, w=5, xzp=127),
    "pw_p_left_shift": conv_spec(kh=1, kw=1, ic=64, oc=64, h=3, w=3, ys=0.0004, xs=0.5, yzp=0),
    "pw_p3_ic256": conv_spec(kh=1, kw=1, ic=256, oc=64, h=3, w=3, xzp=-128, yzp=-128, act="RELU"),
    # 10 words a run: pixels expanded by the asm loop, word steps 4 a turn and 2 past them
    "pw_p_ic40_unroll4": conv_spec(kh=1, kw=1, ic=40, oc=48, h=3, w=4, xzp=5, yzp=-7),
    # 256 channels' requantization records would not fit beside the pixels: the tables read;
    # 9 pixels: a tile of 5, then one of 4 (conv_dsp_p._p_tail)
    "pw_p_oc256_tables": conv_spec(kh=1, kw=1, ic=128, oc=256, h=3, w=3, xzp=-128, yzp=-128,
                                   act="RELU"),
    # "e" form (conv_dsp_e._dsp_e_form): both sides expanded, 2 x 2 tiles in blocks of pixels
    "pw_e_ic32_chunks_overlap": conv_spec(kh=1, kw=1, ic=32, oc=46, h=5, w=7, xzp=-128, yzp=-128,
                                          act="RELU"),                   # chunks of 16: 0, 16, 30
    "pw_e_ic24_two_pixels": conv_spec(kh=1, kw=1, ic=24, oc=5, h=1, w=2, xzp=100),
    "pw_e_ic8_blocks_overlap": conv_spec(kh=1, kw=1, ic=8, oc=6, h=7, w=7, per_channel=False,
                                         act="RELU6", ys=0.03, yzp=-100),   # 49 px, blocks of 32
    "pw_e_ic28_dot_free_order": conv_spec(kh=1, kw=1, ic=28, oc=12, h=4, w=5, xzp=-128),
    # "s" form (conv_dsp_s._dsp_s_form): 8 input channels, one channel's filter in registers
    # against blocks of pixels; blocks of 32 the last overlapping, the sign term (no RELU) with
    # per-tensor literals, blocks of 8 over batches, an odd channel count
    "pw_s_ic8_relu_blocks_overlap": conv_spec(kh=1, kw=1, ic=8, oc=16, h=12, w=12, xzp=-128,
                                              yzp=-128, act="RELU"),
    "pw_s_ic8_sign_per_tensor": conv_spec(kh=1, kw=1, ic=8, oc=24, h=5, w=8, per_channel=False,
                                          xzp=37, yzp=3),
    "pw_s_ic8_block8_batch2_oc97": conv_spec(kh=1, kw=1, ic=8, oc=97, h=2, w=3, batch=2, xzp=-5),
    # strided pixels (ResNet's projections), each expanded from its own position; batches
    "pw_e_s2_batch2": conv_spec(kh=1, kw=1, ic=16, oc=10, sh=2, sw=2, h=7, w=9, batch=2, xzp=-17),
    "pw_e_s2_ic32_rows_x3": conv_spec(kh=1, kw=1, ic=32, oc=20, sh=2, sw=3, h=9, w=10,
                                      xzp=-128, yzp=-128, act="RELU"),
}

# Markers of the DSP code shapes in the generated C: conv forms, border patches, the
# requantizations (doubled accumulators or not, with the sign term or without it where the
# activation clamps at the zero point), the C word step for offsets no instruction encodes, and
# the ends of runs that are not whole words (a last byte; an overlapping word, filters or inputs
# expanded).
FORMS = {"w": "bias0 = bx[j + 0];", "x": "2 * s_] = ", "x_il": "d[4 * s_] = ", "r": "int32_t xr[", "d": "int32_t bd[", "patch": "int32_t patch_w[",
         "rq": "te_dsp_rq(", "rq_pos": "te_dsp_rq_pos(", "rq2": "te_dsp_rq2(",
         "rq2_pos": "te_dsp_rq2_pos(", "c_step": "vl = te_sx02(v);", "3px": "a20 = ",
         "tail_byte": "smlabt %[", "overlap_w": "? 4 * s :", "overlap_x": "u) & 0x",
         "p": "ldrd %[x0], %[x1]", "e": "xk = xx + k", "rows_unrolled": "const int8_t *du = ",
         "o": "int16_t *const xh", "o_odd_kw": "2 * t + 1 < ", "o_single_x": "ldr %[x0], [%[d]",
         "s": "int32_t xbuf[", "o_rows": "int32_t fx_all[", "o_rows_zp": "bx[o] = (int32_t)((uint32_t)",
         "o_rows_lead": "(int16_t)(src[0] + 128)", "o_rows_tail": "; ++k) ((int16_t *)slot)[",
         "o_rows_shifted": "sh[k] = a[k] >> 16",
         "o_single_w": "ldr %[w", "mixed_rows": " + i_p * 2;",
         "p_expand2": "%[t0], lsl #1", "p_expand1": "and %[t2], %[m], %[t0]\\n",
         "p_expand_c": "dx += ", "p_unroll8": "ldr %[t], [%[d]], #32",
         "e_rq": "const int32_t *rq = rx + 3 * j;", "p_rq": "const int32_t *rq = rx + 3 * o;",
         "p_tables": "reloaded. */\n      const int32_t q = mult[o];",
         "p_tail": "const int p = n_tiles * "}


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv(name):
    check(conv_model(CONV_CASES[name]))


# Layers too small for the "r" form's estimate, run in it (R_MAX raised): blocks overlapping
# (odd widths), chunks and channel pairs overlapping (odd channel counts), strides, VALID.
R_CASES = {
    "k3_ic16_s2_oc16_odd_width": conv_spec(ic=16, oc=16, h=17, w=18, sh=2, sw=2, xzp=-128,
                                           yzp=-128, act="RELU"),
    "k3_ic8_valid_oc7": conv_spec(ic=8, oc=7, pad="VALID", h=12, w=13, act="RELU6", ys=0.03,
                                  yzp=-100),
    "k3_ic16_oc13_w5": conv_spec(ic=16, oc=13, h=7, w=5, xzp=-60),
    "k5_ic16_image_smaller": conv_spec(kh=5, kw=5, ic=16, oc=6, h=3, w=3, xzp=-60, per_channel=False),
}


@pytest.mark.parametrize("name", list(R_CASES))
def test_conv_r_form(name, monkeypatch):
    from tinyengine_tf.kernels import conv_dsp_r
    monkeypatch.setattr(conv_dsp_r, "R_MAX", 100.0)
    cm = check(conv_model(R_CASES[name]))
    assert FORMS["r"] in dsp_source(cm)


# "p"-form layers too small for a tile of their last pixels to pay (P_TAIL_PER_BYTE lowered):
# tails of 4 and 5 pixels, the requantization from records, per tensor and portable.
P_TAIL_CASES = {
    "ic128_9px_records": conv_spec(kh=1, kw=1, ic=128, oc=128, h=3, w=3, xzp=9, yzp=4),
    "ic40_11px_per_tensor": conv_spec(kh=1, kw=1, ic=40, oc=48, h=1, w=11, per_channel=False,
                                      act="RELU6", ys=0.03, yzp=-100),
    "ic64_11px_left_shift": conv_spec(kh=1, kw=1, ic=64, oc=64, h=1, w=11, ys=0.0004, xs=0.5,
                                      yzp=0),
    "ic36_odd_words_11px": conv_spec(kh=1, kw=1, ic=36, oc=64, h=1, w=11, xzp=-128, yzp=-128,
                                     act="RELU"),
}


@pytest.mark.parametrize("name", list(P_TAIL_CASES))
def test_conv_p_tail(name, monkeypatch):
    from tinyengine_tf.kernels import conv_dsp_p
    monkeypatch.setattr(conv_dsp_p, "P_TAIL_PER_BYTE", 0)
    cm = check(conv_model(P_TAIL_CASES[name]))
    src = dsp_source(cm)
    assert FORMS["p"] in src and FORMS["p_tail"] in src


# The widened "p" form (convert(flash=...) with room: int16 filters, 3-pixel tiles, LDM steps
# of 8 channels): no loop (64 channels), whole loop turns (128), turns and steps past them (72,
# 136), the last tile overlapping (pixels % 3), exactly one tile, batches; per tensor, the
# portable and the wide requantization, the records and the tables (256 channels), the input's
# extreme zero points.
PW_CASES = {
    "ic64_no_loop_36px": conv_spec(kh=1, kw=1, ic=64, oc=24, h=6, w=6, xzp=-128, yzp=-128,
                                   act="RELU"),
    "ic128_two_turns_overlap": conv_spec(kh=1, kw=1, ic=128, oc=40, h=2, w=5, xzp=127),
    "ic72_turn_and_step": conv_spec(kh=1, kw=1, ic=72, oc=17, h=1, w=7, per_channel=False,
                                    act="RELU6", ys=0.03, yzp=-100),
    "ic136_three_px": conv_spec(kh=1, kw=1, ic=136, oc=9, h=1, w=3, xzp=-5),
    "ic64_left_shift_batch2": conv_spec(kh=1, kw=1, ic=64, oc=32, h=3, w=5, batch=2, ys=0.0004,
                                        xs=0.5, yzp=0),
    "ic128_oc256_tables": conv_spec(kh=1, kw=1, ic=128, oc=256, h=3, w=3, xzp=-128, yzp=-128,
                                    act="RELU"),
    "ic256_tiny_multiplier": conv_spec(kh=1, kw=1, ic=256, oc=24, h=3, w=4, ys=30.0, yzp=127),
    # windows (3x3 and the like): rows and columns outside the image as the zero point's pairs
    # (-128: the fill is 0; 7 and 127: it is not), strides, VALID, batches, 2-pixel tiles where
    # 3 windows would not fit the stack (576 inputs: ResNet's 64-channel layer)
    "k3_ic16_same_relu": conv_spec(ic=16, oc=16, h=8, w=8, xzp=-128, act="RELU"),
    "k3_ic32_s2_zp7": conv_spec(ic=32, oc=20, h=9, w=10, sh=2, sw=2, xzp=7),
    "k3_ic32_valid_batch2": conv_spec(ic=32, oc=8, h=5, w=6, pad="VALID", batch=2,
                                      per_channel=False),
    "k3_ic64_2px_zp127": conv_spec(ic=64, oc=24, h=6, w=5, xzp=127, yzp=-128, act="RELU6",
                                   ys=0.03),
    "k5x3_ic24_s1x2": conv_spec(kh=5, kw=3, ic=24, oc=10, h=7, w=9, sw=2, xzp=-60),
    # records of q, h, r without the bias (ResNet's 64-channel layer: with it, they would not
    # fit beside its two windows)
    "k3_ic64_oc64_records_no_bias": conv_spec(ic=64, oc=64, h=4, w=4, xzp=-128, yzp=-128,
                                              act="RELU"),
}
PW_MARKS = ("ldm %[d]!, {r8, r9, r10, r11}", "const int16_t *ds = wt;")


@pytest.mark.parametrize("name", list(PW_CASES))
def test_conv_widened_pointwise(name):
    """With Flash to spare the pointwise filters are stored as int16 and read by the widened
    "p" form; DSP, portable and host builds all equal TFLM on the type's extremes."""
    model = conv_model(PW_CASES[name])
    cm = check(model, cm=te.convert(model, flash=1 << 26))
    src = dsp_source(cm)
    assert all(m in src for m in PW_MARKS), name
    assert "model_L0_w16[" in cm.sources["model.c"]
    p = PW_CASES[name]
    assert te.convert(model).flash + p["kh"] * p["kw"] * p["ic"] * p["oc"] == cm.flash
    # the bias read from the requantization records wherever they hold it too
    assert ("int32_t bias = rx[4 * o];" in src) == ("rx[4 * o] = " in src), name
    pixels = "ldm %[e]!, {r0, r1, r2, r3}"
    per_step = dsp_source(cm).split("ldm %[d]!")[1].count(pixels)
    assert per_step == (2 if 6 * p["kh"] * p["kw"] * p["ic"] > 3072 else 3), name


def test_conv_widened_runs_fewer_instructions():
    """The widened form's point: fewer instructions per MAC than the int8 filter's "p" form on a
    128-channel layer (VWW's: 0.96 and 0.78)."""
    model = conv_model(conv_spec(kh=1, kw=1, ic=128, oc=64, h=6, w=6, xzp=-128, yzp=-128,
                                 act="RELU"))
    narrow, wide = (te.convert(model, flash=f).profile(TARGET).layers[0] for f in (None, 1 << 26))
    assert wide.per_mac < 0.85 * narrow.per_mac, (wide.per_mac, narrow.per_mac)


def test_conv_o_rows_runs_fewer_instructions(monkeypatch):
    """The "o" form's row variant against the "w" form it replaced on an RGB first layer at
    stride 2 (VWW's, at a quarter of its input: 1.35 against 1.54 instructions per MAC there)."""
    from tinyengine_tf.kernels import conv_dsp_o
    model = conv_model(conv_spec(ic=3, oc=8, h=48, w=48, sh=2, sw=2, xzp=-128, yzp=-128,
                                 act="RELU"))
    rows = te.convert(model)
    assert FORMS["o_rows"] in dsp_source(rows)
    monkeypatch.setattr(conv_dsp_o, "_o_row_plan", lambda L: None)
    w_form = te.convert(model)
    assert FORMS["w"] in dsp_source(w_form)
    new, old = (cm.profile(TARGET).layers[0] for cm in (rows, w_form))
    assert new.per_mac < 0.9 * old.per_mac, (new.per_mac, old.per_mac)


def test_conv_widened_sanitized_build_matches_tflm():
    """The portable loops over the int16 filters, under ASan and UBSan on the host."""
    for name in ("k3_ic32_s2_zp7", "ic72_turn_and_step"):
        model = conv_model(PW_CASES[name])
        cm = te.convert(model, flash=1 << 26)
        assert "model_L0_w16[" in cm.sources["model.c"]
        x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 8, seed=3)
        assert_sanitized_matches_tflm(cm, model, x)


def test_flash_budget_widens_conv_filters_with_room_only():
    """The conv filter is widened when the budget holds its extra bytes beside the room left to
    the code, not one byte less; cm.flash and the memory report count them."""
    from tinyengine_tf.api import WIDEN_CODE_ROOM
    p = PW_CASES["k3_ic16_same_relu"]
    model = conv_model(p)
    base = te.convert(model)
    extra = p["kh"] * p["kw"] * p["ic"] * p["oc"]
    for budget, wide in ((base.flash + WIDEN_CODE_ROOM + extra - 1, False),
                         (base.flash + WIDEN_CODE_ROOM + extra, True)):
        cm = te.convert(model, flash=budget)
        assert ("model_L0_w16[" in cm.sources["model.c"]) == wide
        assert cm.flash == base.flash + wide * extra
        report = cm.memory_report(measure_tflm=False)
        assert report.tinyengine.widened_bytes == wide * extra
    assert "_w16[" not in te.convert(model, flash=1 << 26, optimize="size").sources["model.c"]


def test_conv_widening_skips_what_gains_nothing():
    """Pointwise layers of fewer than 64 input channels ("e" form), inputs not in whole 8s,
    column dilation, windows too large for two on the stack keep int8."""
    for p in (conv_spec(kh=1, kw=1, ic=32, oc=16, h=4, w=4),
              conv_spec(ic=12, oc=16, h=6, w=6),
              conv_spec(ic=16, oc=8, dw=2, h=8, w=8),
              conv_spec(ic=128, oc=8, h=4, w=4)):
        model = conv_model(p)
        assert te.convert(model, flash=1 << 26).flash == te.convert(model).flash


def test_conv_cases_reach_every_form():
    """Each DSP conv form, the border patches and each requantization are exercised above."""
    seen = set()
    for p in CONV_CASES.values():
        src = dsp_source(te.convert(conv_model(p)))
        seen |= {form for form, marker in FORMS.items() if marker in src}
    assert seen == set(FORMS)


def test_mixed_rows_reach_both_loop_orders():
    """The 2-pixel tiles that end rows, with the pixel tiles outside the channel pairs (border
    patches) and inside them."""
    outer = set()
    for name in ("k3_ic3_3px_tiles_border", "k3_ic3_valid_mixed_two_narrow"):
        src = dsp_source(te.convert(conv_model(CONV_CASES[name])))
        assert " + i_p * 2;" in src, name
        outer.add(src.count("for (int i_o = 0;") > 1)
    assert outer == {True, False}


# -- requantization corner cases ------------------------------------------------------------------

def _conv_with_dead_channels(per_channel: bool, big_bias: int, act: str = "RELU",
                             yzp: int = -128) -> bytes:
    """A 3x3 conv whose every third filter is all zeros with a bias near the int32 limit, as in
    pruned models (VWW has dozens): the layer's outputs there are constants."""
    rng = np.random.default_rng(5)
    oc, ic = 9, 8
    b = ModelBuilder()
    x = b.tensor((1, 7, 7, ic), scale=0.05, zp=-128)
    wdata = rng.integers(-127, 128, (oc, 3, 3, ic))
    wdata[::3] = 0
    fs = rng.uniform(0.002, 0.02, oc) if per_channel else np.array([0.01])
    if per_channel:
        fs[::3] = 1e-9                                     # the scale a pruned filter gets
    w = b.tensor((oc, 3, 3, ic), scale=fs, zp=[0] * len(fs), data=wdata, qdim=0)
    bias = rng.integers(-3000, 3000, oc)
    bias[::3] = [big_bias, -big_bias, big_bias][:len(bias[::3])]
    bt = b.tensor((oc,), dtype="int32", scale=bias_scale(0.05, np.resize(fs, oc)), zp=[0] * oc,
                  data=bias)
    y = b.tensor((1, 7, 7, oc), scale=0.1, zp=yzp)
    b.op("CONV_2D", [x, w, bt], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1,
         fusedActivationFunction=act)
    return b.build([x], [y])


def test_dead_channels_per_channel():
    """Zero filters with saturated biases become constant channels: the short requantization
    (doubled accumulators) for the whole layer, equal to TFLM."""
    cm = check(_conv_with_dead_channels(True, 2**30))
    src = dsp_source(cm)
    assert "te_dsp_rq2" in src and "te_dsp_rq_wide" not in src


@pytest.mark.parametrize("act, yzp, fn", [("RELU", -128, "te_dsp_rq_wide_pos("),
                                          ("NONE", 3, "te_dsp_rq_wide(")])
def test_huge_bias_per_tensor_takes_the_wide_requantization(act, yzp, fn):
    """A per-tensor layer cannot rewrite one channel: accumulators near 2^30 take SMLAL."""
    cm = check(_conv_with_dead_channels(False, 2**30 + 12345, act, yzp))
    assert fn in dsp_source(cm)


def test_huge_bias_pointwise_e_form_undoubled():
    """The "e" form with the wide requantization: filters expanded as they are, not doubled."""
    p = conv_spec(kh=1, kw=1, ic=16, oc=6, h=3, w=3, per_channel=False, xzp=-128, yzp=3)
    bias = np.random.default_rng(3).integers(-3000, 3000, 6)
    bias[4] = 2**30 + 999
    cm = check(conv_model(p, bias_values=bias))
    src = dsp_source(cm)
    assert "te_dsp_rq_wide(" in src and "xk = xx + k" in src and "__sadd16(p, p)" not in src


def test_huge_bias_pointwise_p_form_undoubled():
    """The "p" form with the wide requantization: pixels expanded by the asm loop undoubled."""
    p = conv_spec(kh=1, kw=1, ic=64, oc=64, h=6, w=6, per_channel=False, xzp=-128, yzp=3)
    bias = np.random.default_rng(4).integers(-3000, 3000, 64)
    bias[7] = -(2**30 + 4321)
    cm = check(conv_model(p, bias_values=bias))
    src = dsp_source(cm)
    assert "te_dsp_rq_wide(" in src and FORMS["p"] in src and FORMS["p_expand1"] in src


def test_left_shift_keeps_the_portable_requantization():
    cm = te.convert(conv_model(CONV_CASES["left_shift"]))
    src = dsp_source(cm)
    assert "te_conv_rq_any(" in src and "te_dsp_rq" not in src


def test_dsp_path_runs_fewer_instructions():
    """The DSP build executes the DSP loops: several times fewer instructions per MAC than the
    portable build of the same sources, for each kernel family."""
    rng = np.random.default_rng(3)
    models = {
        "FULLY_CONNECTED": fc_model((1, 256), 256, 32, rng, per_channel=True, in_zp=-128),
        "DEPTHWISE_CONV_2D": dw_model(dw_spec(c=16, h=12, w=12, xzp=-128, yzp=-128)),
        "CONV_2D": conv_model(conv_spec(kh=1, kw=1, ic=64, oc=32, h=6, w=6)),
    }
    for kind, model in models.items():
        cm = te.convert(model)
        fast, slow = (cm.profile(TARGET, dsp=dsp).layers[0] for dsp in (True, False))
        assert fast.kind == kind and fast.macs == slow.macs > 0
        assert fast.per_mac < slow.per_mac / 2.5, (kind, fast.per_mac, slow.per_mac)
        assert fast.per_mac < 3.0, (kind, fast.per_mac)


@pytest.mark.parametrize("opt, flags", [("-O0", ()), ("-O2", ("-fno-omit-frame-pointer",)),
                                        ("-Os", ())])
def test_other_optimization_levels(opt, flags):
    """The asm statements leave the compiler enough registers where r7 is the frame pointer
    (-O0, -fno-omit-frame-pointer) and stay exact whatever it allocates."""
    widened = fc_model((2, 130), 130, 12, np.random.default_rng(6), per_channel=False)
    wide_convs = [conv_model(PW_CASES[n]) for n in ("ic72_turn_and_step", "ic128_oc256_tables",
                                                     "k3_ic64_2px_zp127")]
    whole_plane = dw_model(DW_CASES["kws_rows_of_5"])
    dw_s2 = dw_model(DW_CASES["k3_s2_same"])
    for model in (whole_plane, conv_model(CONV_CASES["pw_3px_tiles"]), conv_model(CONV_CASES["k3_ic3_s2_vww"]),
                  conv_model(CONV_CASES["pw_p6_ic128"]), conv_model(CONV_CASES["pw_p_oc256_tables"]),
                  dw_s2,
                  dw_model(DW_CASES["k7_s1_c2"]), conv_model(CONV_CASES["k3_ic16"]),
                  conv_model(CONV_CASES["pw_e_s2_batch2"]), conv_model(CONV_CASES["k10x4_s2_kws"]),
                  conv_model(CONV_CASES["o_k5_s1x2_valid_batch2"]),
                  conv_model(CONV_CASES["o3_valid_batch2_unread_column"]),
                  conv_model(CONV_CASES["o3_s1_shifted_copy_resnet"]),
                  conv_model(CONV_CASES["pw_s_ic8_relu_blocks_overlap"]),
                  conv_model(CONV_CASES["pw_s_ic8_sign_per_tensor"]),
                  conv_model(CONV_CASES["k3_ic3_3px_tiles_border"]),
                  pool_model("AVERAGE_POOL_2D", POOL_CASES["3x3_s2_same_c67_relu"]),
                  fc_model((2, 300), 300, 40, np.random.default_rng(4), per_channel=True,
                           act="RELU6", in_zp=127),
                  fc_model((1, 600), 600, 16, np.random.default_rng(5), per_channel=True,
                           weights=np.random.default_rng(5).choice([-127, 127], (16, 600))),
                  widened, *wide_convs,
                  # functions layers of different sizes share (their sizes in registers)
                  _pointwise_chain(*SHARED_CHAINS["p6"][0]),
                  _pointwise_chain(*SHARED_CHAINS["e_overlaps"][0])):
        # every FULLY_CONNECTED asm form: pair, expanded, and the int16 filters given the Flash
        # the widened pointwise form, in its loop and past it
        cms = [te.convert(model, flash=1 << 26 if model is widened or model in wide_convs else None)]
        if model is whole_plane:
            # KWS's whole-plane row tile takes 13 registers (the output pointer among them).
            cms.append(compile_with_band(model, 0))
        if model in (whole_plane, dw_s2):
            # optimize="size": te_c_dw's asm steps at stride 1 and 2 (12 registers)
            cms.append(compile_with_band(model, 0, "size"))
        for cm in cms:
            x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 4, seed=9)
            got = run_m4(cm, x, True, opt=opt, extra_flags=flags)
            want = tflm_run(model, x)
            assert np.array_equal(np.asarray(got).reshape(want.shape), want), (opt, flags)


# -- AVERAGE_POOL_2D ------------------------------------------------------------------------------

POOL_CASES = {
    # KWS's global pool: four whole groups of 16 channels, the taps in one loop
    "global_25x5_c64": pool_spec(h=25, w=5, c=64, fh=25, fw=5, sh=1, sw=1, zp=-128),
    # 256 taps: the halfword lanes at their limit (all -128 sums to -32768); a partial group of
    # one word, then a tail of one channel
    "global_16x16_c5_lane_limit": pool_spec(h=16, w=16, c=5, fh=16, fw=16, sh=1, sw=1),
    # 257 taps: past the lanes, the int32 loops on the DSP path too
    "global_257_taps_wide": pool_spec(h=1, w=257, c=4, fh=1, fw=257, sh=1, sw=1),
    # windows narrower than the input (rows loop), SAME borders, groups + partial group + tail
    "3x3_s2_same_c67_relu": pool_spec(h=9, w=8, c=67, fh=3, fw=3, sh=2, sw=2, pad="SAME",
                                      act="RELU", zp=7),
    "4x4_s1_c6_batch2": pool_spec(h=6, w=7, c=6, fh=4, fw=4, sh=1, sw=1, batch=2, act="RELU6"),
    # fewer than four channels: the portable loops
    "2x2_s2_c3_portable": pool_spec(h=6, w=6, c=3, zp=100),
    "1x8_rows_of_one_c20": pool_spec(h=3, w=9, c=20, fh=1, fw=8, sh=1, sw=1),
    # one tap: nothing to divide
    "1x1_s2_c8": pool_spec(h=5, w=5, c=8, fh=1, fw=1, sh=2, sw=2, zp=-50),
}
# Besides the loop shapes: the division for odd and even tap counts (the even one corrects
# negative sums), none for one tap, and the clamp as SSAT or as bounds of an activation.
POOL_FORMS = {"group": "c0 += 16) {", "partial": "const int c0 = ", "tail": "acc += r[0];",
              "one_loop": "for (int t = 0; t <", "rows_loop": "for (int kx = 0; kx <",
              "even": " >> 31))", "ssat": "__ssat(", "clamp": "te_clamp((int32_t)(((uint64_t)",
              "one_tap": "te_clamp(v, "}


@pytest.mark.parametrize("name", list(POOL_CASES))
def test_average_pool(name):
    check(pool_model("AVERAGE_POOL_2D", POOL_CASES[name]))


def test_average_pool_cases_reach_every_form():
    seen = set()
    for name, p in POOL_CASES.items():
        src = dsp_source(te.convert(pool_model("AVERAGE_POOL_2D", p)))
        portable = name in ("global_257_taps_wide", "2x2_s2_c3_portable")
        assert ("__sxtab16(" in src) != portable, name
        seen |= {form for form, marker in POOL_FORMS.items() if marker in src}
    assert seen == set(POOL_FORMS)


def test_average_pool_dsp_runs_fewer_instructions():
    cm = te.convert(pool_model("AVERAGE_POOL_2D", POOL_CASES["global_25x5_c64"]))
    fast, slow = (cm.profile(TARGET, dsp=dsp).layers[0].instructions for dsp in (True, False))
    assert fast < slow / 3, (fast, slow)


# -- layers sharing one function (codegen._shared_layers) ----------------------------------------

def _repeated_blocks_model() -> bytes:
    """Two depthwise + pointwise blocks of the same shapes and zero points (other weights, biases
    and scales), as in MobileNet's stacks: one function per kind serves both."""
    rng = np.random.default_rng(11)
    b = ModelBuilder()
    c, h = 8, 10
    x = b.tensor((1, h, h, c), scale=0.05, zp=-128)
    cur = x
    for block in range(2):
        fs = rng.uniform(0.002, 0.02, c)
        w = b.tensor((1, 3, 3, c), scale=fs, zp=[0] * c, data=rng.integers(-127, 128, (1, 3, 3, c)), qdim=3)
        bias = b.tensor((c,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * c,
                        data=rng.integers(-3000, 3000, c))
        y = b.tensor((1, h, h, c), scale=0.05, zp=-128)
        b.op("DEPTHWISE_CONV_2D", [cur, w, bias], [y], "DepthwiseConv2DOptions", padding="SAME",
             strideH=1, strideW=1, dilationHFactor=1, dilationWFactor=1, depthMultiplier=1,
             fusedActivationFunction="RELU")
        fs = rng.uniform(0.002, 0.02, c)
        w = b.tensor((c, 1, 1, c), scale=fs, zp=[0] * c, data=rng.integers(-127, 128, (c, 1, 1, c)), qdim=0)
        bias = b.tensor((c,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * c,
                        data=rng.integers(-3000, 3000, c))
        z = b.tensor((1, h, h, c), scale=0.05, zp=-128)
        b.op("CONV_2D", [y, w, bias], [z], "Conv2DOptions", padding="SAME", strideH=1, strideW=1,
             fusedActivationFunction="RELU")
        cur = z
    return b.build([x], [cur])


def test_repeated_layers_share_one_function():
    """Each kind's two layers run one shared function with their own arrays: equal to TFLM on the
    DSP and portable firmware and the host (ASan + UBSan too), each layer alone in the sanitized
    harness, and the profile charges each layer half of the function's instructions."""
    from reference import assert_sanitized_matches_tflm
    model = _repeated_blocks_model()
    cm = check(model)
    assert cm._gen.shared == {"model_S0_depthwise_conv_2d": [0, 2], "model_S1_conv_2d": [1, 3]}
    src = cm.sources["model.c"]
    assert "model_L0_depthwise" not in src and src.count("model_S1_conv_2d(") == 3  # def + 2 calls
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 4, seed=2)
    assert_sanitized_matches_tflm(cm, model, x)
    layers = cm.profile(TARGET).layers
    assert layers[0].instructions == layers[2].instructions > 0
    assert layers[1].instructions == layers[3].instructions > 0


# -- layers of different sizes sharing one function (codegen._shareable_groups) -----------------

def _pointwise_chain(h: int, ic: int, layers, seed: int = 5) -> bytes:
    """1x1 convolutions one after another, (output channels, stride) each: the flat ones of
    one DSP form take one function whatever their pixel and channel counts."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.tensor((1, h, h, ic), scale=0.05, zp=-128)
    cur, c = x, ic
    for oc, s in layers:
        fs = rng.uniform(0.002, 0.02, oc)
        w = b.tensor((oc, 1, 1, c), scale=fs, zp=[0] * oc,
                     data=rng.integers(-127, 128, (oc, 1, 1, c)), qdim=0)
        bias = b.tensor((oc,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * oc,
                        data=rng.integers(-3000, 3000, oc))
        h = -(-h // s)
        y = b.tensor((1, h, h, oc), scale=0.05, zp=-128)
        b.op("CONV_2D", [cur, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=s,
             strideW=s, fusedActivationFunction="RELU")
        cur, c = y, oc
    return b.build([x], [cur])


SHARED_CHAINS = {
    # "p" form, 6-pixel tiles: 144 and 36 pixels, 64 or 128 input channels (whole loop turns);
    # 40 and 56 (two word steps past them): two functions
    "p6": ((12, 64, [(64, 1), (128, 2), (128, 1), (40, 1), (64, 1), (56, 1), (64, 1), (40, 1),
                     (96, 1)]),
           {"model_S0_conv_2d": [0, 2, 3, 5, 7], "model_S4_conv_2d": [4, 6, 8]}),
    # 5-pixel tiles over 25 pixels and over 9 (the last tile overlapping)
    "p5_overlap": ((10, 64, [(64, 1), (128, 2), (128, 1), (40, 1), (64, 1), (56, 1), (64, 1),
                             (40, 1), (96, 1), (64, 2), (64, 1), (128, 1)]),
                   {"model_S2_conv_2d": [2, 3, 5, 7, 10, 11], "model_S4_conv_2d": [4, 6, 8]}),
    # "e" form, 32 input channels: 144 pixels in whole blocks, 36 with the last block
    # overlapping; 32, 48 and 46 channels (chunks of 24 at 0 and 22)
    "e_overlaps": ((12, 32, [(32, 1), (48, 1), (46, 2), (32, 1), (46, 1)]),
                   {"model_S0_conv_2d": [0, 1, 4]}),
}


@pytest.mark.parametrize("name", list(SHARED_CHAINS))
def test_layers_of_other_sizes_share_a_form(name):
    """Layers of different pixel and channel counts run one DSP function, equal to TFLM on the
    DSP and portable firmware and the host; the profile charges each call to its own layer
    (their instructions differ as their sizes do) and none of it to library calls."""
    args, groups = SHARED_CHAINS[name]
    cm = check(_pointwise_chain(*args))
    assert cm._gen.shareable == groups
    src = cm.sources["model.c"]
    for fname, members in groups.items():
        assert src.count(f"{fname}(") == 1 + len(members)           # def + one call per layer
    prof = cm.profile(TARGET)
    assert prof.invoke_instructions == sum(l.instructions for l in prof.layers) + prof.glue
    for members in groups.values():
        layers = [prof.layers[p] for p in members]
        assert all(l.library == 0 and l.instructions > 0 for l in layers)
        by_macs = {}
        for l in layers:
            by_macs.setdefault(l.macs, set()).add(l.instructions)
        assert len({min(v) for v in by_macs.values()}) == len(by_macs) > 1


def _depthwise_chain(specs, seed: int = 3) -> bytes:
    """3x3 depthwise layers, (input size, channels, stride) each, a 1x1 conv before each
    change of channel count."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    h, c = specs[0][0], specs[0][1]
    cur = b.tensor((1, h, h, c), scale=0.05, zp=-128)
    x = cur

    def layer(kind, shape, qdim, opts_name, **opts):
        nonlocal cur
        oc = shape[0] if kind == "CONV_2D" else shape[3]
        fs = rng.uniform(0.002, 0.02, oc)
        w = b.tensor(shape, scale=fs, zp=[0] * oc, data=rng.integers(-127, 128, shape), qdim=qdim)
        bias = b.tensor((oc,), dtype="int32", scale=bias_scale(0.05, fs), zp=[0] * oc,
                        data=rng.integers(-3000, 3000, oc))
        y = b.tensor((1, h, h, oc), scale=0.05, zp=-128)
        b.op(kind, [cur, w, bias], [y], opts_name, padding="SAME", fusedActivationFunction="RELU",
             **opts)
        cur = y
    for size, channels, stride in specs:
        if channels != c:
            layer("CONV_2D", (channels, 1, 1, c), 0, "Conv2DOptions", strideH=1, strideW=1)
            c = channels
        h = -(-size // stride)
        layer("DEPTHWISE_CONV_2D", (1, 3, 3, c), 3, "DepthwiseConv2DOptions", strideH=stride,
              strideW=stride, dilationHFactor=1, dilationWFactor=1, depthMultiplier=1)
    return b.build([x], [cur])


def test_depthwise_layers_of_other_sizes_share_their_records_helper():
    """3x3 depthwise layers of four sizes and both strides, two tile forms, fill each channel's
    weight and requantization records with one out-of-line helper (codegen._emit_helpers): one
    definition, no inline copy left; equal to TFLM on the DSP and portable firmware and the host
    (ASan + UBSan too); the helper's instructions charged to the layer calling it, not to
    library calls, and the layers' totals still the whole inference."""
    from reference import assert_sanitized_matches_tflm
    model = _depthwise_chain([(12, 8, 1), (12, 16, 1), (12, 16, 2), (6, 24, 1)])
    cm = check(model)
    assert cm._gen.helpers == {"model_H0_depthwise_conv_2d": 4}
    src = cm.sources["model.c"]
    assert src.count("static TE_HELPER void model_H0_depthwise_conv_2d(") == 1
    assert src.count("model_H0_depthwise_conv_2d(wv, wc, bf, ") == 4
    assert "const int32_t wv[" not in src
    assert {"2x2 rq, steps", "1x6 rq, row"} <= set(re.findall(r"asm tile (\S+ rq, \w+)", src))
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 4, seed=2)
    assert_sanitized_matches_tflm(cm, model, x)
    prof = cm.profile(TARGET)
    assert prof.invoke_instructions == sum(l.instructions for l in prof.layers) + prof.glue
    dws = [l for l in prof.layers if l.kind == "DEPTHWISE_CONV_2D"]
    assert len(dws) == 4 and all(l.library == 0 and l.instructions > l.macs for l in dws)


def test_a_helper_one_layer_calls_is_left_to_inline():
    """A model with one depthwise layer keeps its records helper plain static (gcc inlines it)."""
    cm = te.convert(_depthwise_chain([(10, 8, 1)]))
    assert cm._gen.helpers == {"model_H0_depthwise_conv_2d": 1}
    src = cm.sources["model.c"]
    assert "static void model_H0_depthwise_conv_2d(" in src and "TE_HELPER void" not in src


# Cases whose tiles read per-channel records: per channel and per tensor, 3x3 to 7x7 (loose
# weight bytes), both strides, the bias in a register and from the records, KWS's row tiles.
RECORD_CASES = ["k3_s1_vww", "k3_s2_same", "k5_s1", "k7_s2", "per_tensor_relu6",
                "k3_s1_rows_overlap", "kws_rows_of_5", "out3x3_c16"]


def _record_words(src: str) -> int:
    """The length of the records array the run-time fill declares (int32_t wv[N])."""
    return int(re.search(r"int32_t wv\[(\d+)\];", src).group(1))


@pytest.mark.parametrize("name", RECORD_CASES)
def test_depthwise_stored_records(name):
    """With Flash to spare the in-place layer's per-channel records are a constant array
    instead of being filled at run time (depthwise._StoredRecords): no fill helper left; DSP,
    portable and host builds equal TFLM; cm.flash grows by the records' bytes exactly, and the
    memory report counts them as the budget's room."""
    model = dw_model(DW_CASES[name])
    base = te.convert(model)
    assert "_H0_depthwise_conv_2d(wv, " in base.sources["model.c"], name
    words = _record_words(base.sources["model.c"])
    cm = check(model, cm=te.convert(model, flash=1 << 26))
    src = cm.sources["model.c"]
    assert "model_L0_records[" in src and "_H0_" not in src and not cm._gen.helpers, name
    oc = DW_CASES[name]["c"]
    assert cm.flash == base.flash + 4 * words * oc, name
    assert cm.memory_report(measure_tflm=False).tinyengine.widened_bytes == 4 * words * oc


def test_depthwise_stored_records_in_bands_and_sanitized():
    """The band form reads stored records too (DSP, portable and host equal TFLM), and the
    portable loops beside them are clean under ASan and UBSan on the host."""
    from tinyengine_tf.kernels.base import WIDE_WEIGHTS
    for name in ("k3_s1_same", "k5_s2_same", "mobilenet_like"):
        p, band = BAND_CASES[name]
        m = dw_model(p)
        cm = check(m, cm=compile_with_band(m, band, options={WIDE_WEIGHTS: True}))
        src = dsp_source(cm)
        assert "for (int y0 = 0;" in src and "_records + c * " in src, name
    model = dw_model(DW_CASES["k7_s2"])
    cm = te.convert(model, flash=1 << 26)
    x = int8_inputs(sample_shape(cm.graph.t(cm.graph.inputs[0]).shape), 8, seed=5)
    assert_sanitized_matches_tflm(cm, model, x)


def test_depthwise_stored_records_run_fewer_instructions():
    """Stored records save the fill's instructions, about depthwise.RECORD_FILL a channel, and
    take Flash only where the budget leaves room beside the code's."""
    from tinyengine_tf.api import WIDEN_CODE_ROOM
    model = dw_model(dw_spec(c=64, h=6, w=6, xzp=-128, yzp=-128, act="RELU"))
    base = te.convert(model)
    extra = 4 * _record_words(base.sources["model.c"]) * 64
    for budget, stored in ((base.flash + WIDEN_CODE_ROOM + extra - 1, False),
                           (base.flash + WIDEN_CODE_ROOM + extra, True)):
        cm = te.convert(model, flash=budget)
        assert ("_records[" in cm.sources["model.c"]) == stored
        assert cm.flash == base.flash + stored * extra
    narrow, wide = (c.profile(TARGET).layers[0] for c in (base, cm))
    saved = narrow.instructions - wide.instructions
    assert 20 * 64 < saved < 60 * 64, saved
    assert "_records[" not in te.convert(model, flash=1 << 26, optimize="size").sources["model.c"]


def test_code_beyond_weights_counts_the_arrays_each_image_links():
    """With stored records the DSP image links the records and not the weights and tables the
    portable branch reads, and the portable image the other way round: code beyond weights
    subtracts what each image holds (counted here from the symbol table), not cm.flash."""
    import subprocess
    from tinyengine_tf import firmware
    cm = te.convert(dw_model(DW_CASES["k3_s1_vww"]), flash=1 << 26)
    declared = set(re.findall(r"static const \w+ (\w+)\[", cm.sources["model.c"]))
    linked = {}
    for dsp in (True, False):
        fw = firmware.build_firmware(cm, dsp=dsp)
        nm = subprocess.run(["arm-none-eabi-nm", "-S", str(fw.elf)], capture_output=True,
                            text=True, check=True).stdout
        sizes = {p[3]: int(p[1], 16) for p in map(str.split, nm.splitlines()) if len(p) == 4}
        linked[dsp] = {sym for sym in declared if sym in sizes}
        assert firmware.code_beyond_weights(fw, cm) == fw.flash_bytes - sum(
            sizes[sym] for sym in linked[dsp])
    assert linked[True] == {"model_L0_records"}
    assert "model_L0_records" not in linked[False] and "model_L0_w" in linked[False]


def test_vww_pointwise_layers_share_functions(shared_models):
    """VWW's 13 pointwise layers run three shared DSP functions and two of their own (the "e"
    layers of 8 and 16 input channels): with the first layer's, six conv functions hold MAC
    loops, so the code the sharing saves cannot come back unnoticed."""
    cm = te.convert((shared_models / "vww_96_int8.tflite").read_bytes(), name="m")
    assert cm._gen.shareable == {"m_S6_conv_2d": [6, 8], "m_S10_conv_2d": [10, 12, 14, 16, 18, 20, 22],
                                 "m_S24_conv_2d": [24, 26]}
    src = cm.sources["m.c"]
    bodies = re.split(r"\n(?=(?:#if TE_DSP\n)?static TE_LAYER )", src)
    macs = [b for b in bodies if re.match(r"(#if TE_DSP\n)?static TE_LAYER \w+ m_[LS]\d+_conv_2d\(", b)
            and "smlad" in b.split("#else")[0]]
    assert len(macs) == 6, [b.split("(")[0] for b in macs]


# -- CONV_2D with a fused residual ADD (kernels/conv_residual.py) -----------------------------

RESIDUAL_CASES = {
    "default": dict(),                                              # the conv's output larger
    "skip_first_relu_portable_conv": dict(c=6, e=20, order=1, add_act="RELU", seed=1),
    "per_tensor_odd_channels": dict(c=5, e=16, per_channel=False, seed=2),
    "relu6_sum_is_the_output": dict(c=8, e=32, h=7, w=7, proj_act="RELU6", add_act="RELU6",
                                    order=1, seed=3, tail=False),
}


@pytest.mark.parametrize("name", list(RESIDUAL_CASES))
def test_fused_residual_add(name):
    """The folded ADD's requantizations as SMMLARs (the larger input's multiplier 1/2 as a
    product), equal to TFLM on the DSP, portable and host builds."""
    from test_kernels_conv_residual import block
    cm = check(block(**RESIDUAL_CASES[name]))
    src = dsp_source(cm)
    assert "residual" in str([op.options for op in cm.graph.ops])
    assert "te_dsp_rq(" in src and " * 524288)" in src and "te_mbqm_1r(" not in src
