"""SVDF int8 with int16 and int8 activation state, over sequences, against one TFLM interpreter.

One hand-built model holds five SVDF layers (ranks 1, 2, 3; memory sizes 1, 3, 4, 5, 10; batch 1
and 2; int16 and int8 state, the int8 one with a non-zero state zero point; one SVDF fed by
another), so one compile covers every combination; each output is compared step by step with
TFLite Micro over 30 steps (all -128, all 127, alternating extremes, then random), then again
after reset() on both sides.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_carries_state_and_resets, check_footprints, int8_inputs,
                       sanitized_run, TFLMSequence, _as_list, _assert_same)
from tflite_builder import ModelBuilder

N_STEPS = 30


def add_svdf(b, rng, x, x_scale, batch, n_in, rank, units, memory, state_dtype="int16",
             state_zp=0, out_scale=0.04, out_zp=2, activation="NONE", bias=True):
    """One SVDF layer on tensor x; returns its output tensor (and the state tensor)."""
    filters = rank * units
    wf_scale = 0.012
    if state_dtype == "int16":
        state_scale, wt_scale, wt_max = 0.0006, 1.0 / 24000, 32767
    else:
        state_scale, wt_scale, wt_max = 0.05, 0.008, 127
    wf = b.tensor((filters, n_in), scale=wf_scale, zp=0,
                  data=rng.integers(-127, 128, (filters, n_in)))
    wt = b.tensor((filters, memory), dtype=state_dtype, scale=wt_scale, zp=0,
                  data=rng.integers(-wt_max, wt_max + 1, (filters, memory)))
    bias_scale = float(np.float32(state_scale) * np.float32(wt_scale))
    inputs = [x, wf, wt]
    if bias:
        inputs.append(b.tensor((units,), dtype="int32", scale=bias_scale, zp=0,
                               data=rng.integers(-20000, 20000, units)))
    else:
        inputs.append(-1)
    state = b.tensor((batch, memory * filters), dtype=state_dtype, scale=state_scale, zp=state_zp)
    b.tensors[state].isVariable = True
    inputs.append(state)
    y = b.tensor((batch, units), scale=out_scale, zp=out_zp)
    b.op("SVDF", inputs, [y], "SVDFOptions", rank=rank, fusedActivationFunction=activation)
    return y, state


def svdf_model() -> bytes:
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x1 = b.tensor((1, 16), scale=0.05, zp=-3)
    x2 = b.tensor((2, 5), scale=0.03, zp=4)
    ya, _ = add_svdf(b, rng, x1, 0.05, 1, 16, rank=1, units=8, memory=4)
    yb, _ = add_svdf(b, rng, x1, 0.05, 1, 16, rank=2, units=6, memory=10, out_zp=-5,
                     activation="RELU")  # TFLM's integer SVDF ignores the activation
    yc, _ = add_svdf(b, rng, x2, 0.03, 2, 5, rank=1, units=4, memory=3, state_dtype="int8",
                     state_zp=3)
    yd, _ = add_svdf(b, rng, x2, 0.03, 2, 5, rank=3, units=2, memory=1)
    ye, _ = add_svdf(b, rng, ya, 0.04, 1, 8, rank=1, units=4, memory=5)
    return b.build(inputs=[x1, x2], outputs=[ya, yb, yc, yd, ye])


@pytest.fixture(scope="module")
def model():
    data = svdf_model()
    return data, te.convert(data, name="svdf_seq")


def _steps(cm, n, seed):
    return [int8_inputs((16,), n, seed=seed), int8_inputs((2, 5), n, seed=seed + 1)]


def test_svdf_sequences_match_tflm(model):
    data, cm = model
    names = ["rank1 mem4", "rank2 mem10", "int8 state batch2", "rank3 mem1 batch2", "stacked"]
    more = _steps(cm, 6, seed=5)
    assert_carries_state_and_resets(cm, data, _steps(cm, N_STEPS, seed=0), more, names)
    # The outputs do depend on the past (a stateless kernel would fail the comparisons above
    # only by luck): the same input after different histories gives different outputs.
    cm.reset()
    first = _as_list(cm.run([x[:1] for x in more]))
    again = _as_list(cm.run([x[:1] for x in more]))
    assert any(not np.array_equal(a, b) for a, b in zip(first, again))


def test_svdf_state_outside_arena(model):
    _, cm = model
    check_footprints(cm)   # the shape-only Flash / scratch equal what each layer emits
    # int16 states: 1*4*8, 1*10*12, 2*1*6, 1*5*4 elements; int8: 2*3*4 (16-byte aligned each).
    sizes = [64, 240, 24, 32, 40]
    assert cm.state_bytes == sum((s + 15) // 16 * 16 for s in sizes)
    assert "svdf_seq_reset" in cm.sources["svdf_seq.h"]
    assert f"SVDF_SEQ_STATE_BYTES {cm.state_bytes}" in cm.sources["svdf_seq.h"]
    # The arena holds no state: it is smaller than the state alone.
    assert cm.peak_sram < cm.state_bytes
    rep = cm.memory_report()
    assert rep.tinyengine.state_bytes == cm.state_bytes and rep.tinyengine.peak_sram == cm.peak_sram
    assert f"| state (persistent, outside the arena) | {cm.state_bytes:,} |" in rep.to_markdown()
    # TFLM keeps the same states in its arena's persistent tail.
    assert rep.tflm.arena_tail > cm.state_bytes


def test_svdf_sanitized(model):
    data, cm = model
    xs = _steps(cm, 20, seed=3)
    ours = sanitized_run(cm, xs)
    _assert_same(ours, _as_list(TFLMSequence(data).run(xs)))


def test_svdf_refusals():
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.05, zp=0)
    y, _ = add_svdf(b, rng, x, 0.05, 1, 4, rank=1, units=2, memory=3, bias=False)
    with pytest.raises(te.UnsupportedOpError, match=r"SVDF \(op #0\).*bias"):
        te.convert(b.build([x], [y]))
    b = ModelBuilder()
    x = b.tensor((1, 4), scale=0.05, zp=0)
    y, state = add_svdf(b, rng, x, 0.05, 1, 4, rank=1, units=2, memory=3)
    b.tensors[state].isVariable = False
    with pytest.raises(te.TinyEngineError, match=r"SVDF \(op #0\)"):
        te.convert(b.build([x], [y]))


def test_svdf_cortex_m4_sequence(model):
    """20 steps in one firmware run under QEMU (Cortex-M4, DSP build) equal TFLM's sequence."""
    data, cm = model
    xs = _steps(cm, 20, seed=11)
    _assert_same(_as_list(cm.run(xs, target="cortex-m4")), _as_list(TFLMSequence(data).run(xs)))


def test_svdf_macs_count_both_matmuls(model):
    # Per batch row: filters x inputs for the features, filters x memory for the time filter
    # (filters = rank x units), from the five layers svdf_model builds.
    layers = [(1, 16, 1, 8, 4), (1, 16, 2, 6, 10), (2, 5, 1, 4, 3), (2, 5, 3, 2, 1), (1, 8, 1, 4, 5)]
    want = sum(batch * rank * units * (n_in + memory) for batch, n_in, rank, units, memory in layers)
    assert model[1].macs == want
