"""ADD, SUB and MUL on int8: bit-exact with TFLite Micro over quantizations, broadcasts, constant
operands and fused activations; in place; exact folded requantization; footprint; sanitizers."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       check_total_footprint, int8_inputs, run_c_check, sample_shape)
from tflite_builder import ModelBuilder

OPTIONS = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}
N_SAMPLES = 20


def binary_model(kinds, s1, s2, q1, q2, qo, act="NONE", const=None, seed=0, out_shape=None,
                 dtype="int8"):
    """One op per kind in `kinds` (a name or a list), all on the same two operands, one output
    each. const = 0 or 1 makes that operand a constant tensor."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    ids, graph_inputs = [], []
    for k, (shape, (scale, zp)) in enumerate(((s1, q1), (s2, q2))):
        if const == k:
            ids.append(b.tensor(shape, dtype=dtype, scale=scale, zp=zp,
                                data=rng.integers(-128, 128, size=shape)))
        else:
            ids.append(b.tensor(shape, dtype=dtype, scale=scale, zp=zp))
            graph_inputs.append(ids[-1])
    shape = out_shape if out_shape is not None else np.broadcast_shapes(tuple(s1), tuple(s2))
    outputs = []
    for kind in kinds:
        outputs.append(b.tensor(shape, dtype=dtype, scale=qo[0], zp=qo[1]))
        b.op(kind, ids, [outputs[-1]], OPTIONS[kind], fusedActivationFunction=act)
    return b.build(graph_inputs, outputs), [s for k, s in enumerate((s1, s2)) if k != const]


def check(kinds, s1, s2, q1, q2, qo, act="NONE", const=None, seed=0):
    model, shapes = binary_model(kinds, s1, s2, q1, q2, qo, act, const, seed)
    cm = te.convert(model)
    xs = [int8_inputs(sample_shape(s), N_SAMPLES, seed=seed + 7 * k) for k, s in enumerate(shapes)]
    assert_matches_tflm(cm, model, xs)
    check_total_footprint(cm)
    return cm


# Quantizations (scale, zero point) of input 1, input 2, output: equal scales, scales 100x apart
# either way, extreme zero points, an output scale finer than the inputs.
QUANTS = [
    ((0.1, 1), (0.2, -3), (0.3, 2)),
    ((0.01, -128), (1.0, 127), (0.05, 0)),
    ((0.5, 5), (0.005, -7), (0.02, -100)),
    ((0.05, 0), (0.05, 0), (0.05, 0)),
    ((0.0371, 127), (0.0042, -128), (0.0009, 13)),
    ((2.0, -60), (0.02, 90), (3.5, -128)),
]

# (shape 1, shape 2): equal, scalar, per-channel vector, [1,1,1,C], [N,H,1,1], ranks 2..6,
# broadcasts on both sides, input 0 the broadcast one.
SHAPES = [
    ((1, 5, 6, 8), (1, 5, 6, 8)),
    ((1, 5, 6, 8), (1,)),
    ((1, 5, 6, 8), (8,)),
    ((1, 5, 6, 8), (1, 1, 1, 8)),
    ((1, 1, 1, 8), (1, 5, 6, 8)),
    ((2, 5, 6, 8), (2, 5, 1, 1)),
    ((1, 5, 1, 1), (1, 5, 6, 8)),
    ((7, 9), (7, 1)),
    ((9,), (7, 9)),
    ((2, 3, 1, 4, 5), (1, 1, 3, 1, 5)),
    ((2, 1, 3, 4, 2, 2), (1, 3, 1, 1, 2, 1)),
    ((1, 1), (1, 1)),
    ((3, 1, 5), (1, 4, 1)),
]


ALL = ["ADD", "SUB", "MUL"]


@pytest.mark.parametrize("qi", range(len(QUANTS)))
def test_quantizations(qi):
    q1, q2, qo = QUANTS[qi]
    check(ALL, (1, 6, 5, 16), (1, 6, 5, 16), q1, q2, qo, seed=qi)
    check(ALL, (1, 6, 5, 16), (16,), q1, q2, qo, seed=qi + 50)


def random_quant(rng, lo=-3.0, hi=0.5):
    return float(10 ** rng.uniform(lo, hi)), int(rng.integers(-128, 128))


@pytest.mark.parametrize("kind", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("seed", range(4))
def test_all_input_pairs(kind, seed):
    """Every (x1, x2) int8 pair, under random scales up to 3000x apart: the whole input space."""
    rng = np.random.default_rng(100 + seed)
    q1, q2, qo = random_quant(rng), random_quant(rng), random_quant(rng, -3.0, 1.0)
    if kind != "MUL" and 2 * max(q1[0], q2[0]) >= (1 << 20) * qo[0]:
        qo = (q1[0], qo[1])
    model, _ = binary_model(kind, (1, 65536), (1, 65536), q1, q2, qo,
                            act=["NONE", "RELU", "RELU6", "NONE"][seed])
    pairs = np.arange(65536)
    x1 = np.concatenate([((pairs >> 8) - 128).astype(np.int8)[None], int8_inputs((65536,), 20, seed)])
    x2 = np.concatenate([((pairs & 255) - 128).astype(np.int8)[None],
                         int8_inputs((65536,), 20, seed + 1)])
    cm = te.convert(model)
    assert_matches_tflm(cm, model, [x1, x2])


@pytest.mark.parametrize("si", range(len(SHAPES)))
def test_broadcast_shapes(si):
    s1, s2 = SHAPES[si]
    q1, q2, qo = QUANTS[si % len(QUANTS)]
    check(ALL, s1, s2, q1, q2, qo, seed=si)


@pytest.mark.parametrize("act", ["RELU", "RELU6", "RELU_N1_TO_1"])
def test_fused_activation(act):
    check(ALL, (1, 4, 4, 8), (1, 1, 1, 8), (0.03, -20), (0.06, 11), (0.02, -9), act=act)


@pytest.mark.parametrize("const,shapes", [(1, ((1, 4, 5, 6), (6,))), (0, ((1, 1, 1, 6), (1, 4, 5, 6))),
                                          (1, ((1, 4, 5, 6), (1, 4, 5, 6))), (0, ((1,), (3, 7)))])
def test_constant_operand(const, shapes):
    cm = check(ALL, *shapes, (0.07, 4), (0.011, -33), (0.05, 17), const=const, seed=const)
    assert f"model_L0_in{const}" in cm.sources["model.c"]


def test_same_tensor_twice():
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 8), scale=0.04, zp=-5)
    y = b.tensor((1, 4, 4, 8), scale=0.07, zp=3)
    z = b.tensor((1, 4, 4, 8), scale=0.002, zp=-100)
    b.op("ADD", [x, x], [y], "AddOptions")
    b.op("MUL", [x, y], [z], "MulOptions")
    model = b.build([x], [z])
    assert_matches_tflm(te.convert(model), model, int8_inputs((4, 4, 8), N_SAMPLES))


def test_in_place_output_overwrites_input_0():
    """In a chain the output of an equal-shape op takes input 0's bytes and stays exact."""
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 8), scale=0.05, zp=2)
    w = b.tensor((1, 1, 1, 8), scale=0.03, zp=-7)
    h = b.tensor((1, 6, 6, 8), scale=0.04, zp=-1)
    s = b.tensor((1, 6, 6, 8), scale=0.06, zp=9)
    y = b.tensor((1, 6, 6, 8), scale=0.08, zp=-4)
    b.op("MUL", [x, w], [h], "MulOptions")          # h is an intermediate ...
    b.op("ADD", [h, w], [s], "AddOptions")          # ... consumed only here: s may take h's bytes
    b.op("SUB", [s, x], [y], "SubOptions", fusedActivationFunction="RELU")
    model = b.build([x, w], [y])
    cm = te.convert(model)
    codes = [code for _, code in cm._gen.layers]
    assert [c.in_place for c in codes] == [True, True, True]
    assert cm.plan.tensor_offset[h] == cm.plan.tensor_offset[s]
    xs = [int8_inputs((6, 6, 8), N_SAMPLES), int8_inputs((1, 1, 8), N_SAMPLES, seed=3)]
    assert_matches_tflm(cm, model, xs)


def test_broadcast_input_is_not_in_place():
    model, _ = binary_model("ADD", (1, 1, 1, 8), (1, 4, 4, 8), (0.1, 0), (0.1, 0), (0.1, 0))
    cm = te.convert(model)
    assert not cm._gen.layers[0][1].in_place


def test_rank_7_equal_shapes():
    check("MUL", (2, 1, 3, 1, 2, 3, 2), (2, 1, 3, 1, 2, 3, 2), (0.02, 3), (0.03, -3), (0.001, 0))


# -- the folded requantization helper ---------------------------------------------------------

MBQM_CHECK = r"""
#include <stdio.h>
#include "te_runtime.h"
static uint64_t s = 88172645463325252ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }
static int32_t pick(void) {
  static const int32_t edge[] = {0, 1, -1, 2, -2, INT32_MAX, INT32_MIN, INT32_MIN + 1,
                                 1 << 30, -(1 << 30), (1 << 30) + 1, -(1 << 30) - 1};
  uint32_t r = rnd();
  if (r % 5 == 0) return edge[rnd() % 12];
  if (r % 5 == 1) return (int32_t)(rnd() % 70000u) - 35000;  /* small: MUL/ADD operands */
  return (int32_t)rnd();
}
int main(void) {
  for (long i = 0; i < 3000000; ++i) {
    const int32_t x = pick();
    int32_t q = (int32_t)(rnd() >> 1);
    if (i % 7 == 0) q = (i % 14 == 0) ? 0 : INT32_MAX;
    if (i % 11 == 0) q = 1 << 30;
    const int right = (int)(rnd() % 32u);
    if (te_mbqm_1r(x, q, right) != te_mbqm_r(x, q, right)) {
      printf("x=%ld q=%ld right=%d\n", (long)x, (long)q, right);
      return 1;
    }
  }
  return 0;
}
"""


def test_single_rounding_mbqm_equals_two_step():
    run_c_check(MBQM_CHECK, flags=["-O2", "-fsanitize=undefined", "-fno-sanitize-recover=all"])


# -- sanitizers -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,s1,s2,const", [("ADD", (1, 3, 4, 8), (8,), None),
                                              ("MUL", (2, 3, 1, 4), (1, 1, 5, 4), 1),
                                              ("SUB", (1, 6, 6, 3), (1, 6, 6, 3), None)])
def test_clean_under_sanitizers(kind, s1, s2, const):
    # MUL's 2.0 * 0.9 / 0.001 multiplier takes the left-shift path.
    q = ((2.0, -3), (0.9, 5), (0.001, 1)) if kind == "MUL" else QUANTS[2]
    model, shapes = binary_model(kind, s1, s2, *q, act="RELU6", const=const)
    xs = [int8_inputs(sample_shape(s), 8, seed=k) for k, s in enumerate(shapes)]
    assert_sanitized_matches_tflm(te.convert(model), model, xs)


# -- unsupported configurations ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["MUL"])
def test_unsupported_int16(kind):
    model, _ = binary_model(kind, (1, 4), (1, 4), (0.1, 3), (0.1, 0), (0.1, 0), dtype="int16")
    assert_unsupported(model, kind, "zero points 0")


@pytest.mark.parametrize("kind", ["ADD", "SUB"])
def test_unsupported_output_multiplier_at_least_one(kind):
    # 2 * max(s1, s2) / (2^20 * s_out) >= 1: TFLM's QuantizeMultiplierSmallerThanOneExp aborts.
    model, _ = binary_model(kind, (1, 4), (1, 4), (1.0, 0), (0.5, 0), (2.0 ** -20, 0))
    assert_unsupported(model, kind, "multiplier")


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
def test_unsupported_shapes(kind):
    model, _ = binary_model(kind, (1, 4, 3), (1, 4, 5), (0.1, 0), (0.1, 0), (0.1, 0),
                            out_shape=(1, 4, 5))
    assert_unsupported(model, kind, "broadcast")
    model, _ = binary_model(kind, (2, 1, 2, 1, 2, 1, 2), (1, 2, 1, 2, 1, 2, 1), (0.1, 0), (0.1, 0),
                            (0.1, 0))
    assert_unsupported(model, kind, "at most 6")


@pytest.mark.parametrize("kind", ["ADD", "SUB", "MUL", "MAXIMUM", "SQUARED_DIFFERENCE", "PRELU"])
def test_per_channel_operand_uses_the_first_channel_as_tflm(kind):
    """TFLM's element-wise kernels read a per-channel operand's first scale and zero point and
    run (issue 11: accept what TFLM accepts); so does the generated code."""
    b = ModelBuilder()
    x = b.tensor((1, 2, 2, 3), scale=0.1, zp=0)
    c = b.tensor((1, 1, 1, 3), scale=[0.1, 0.2, 0.3], zp=[4, 0, 0], qdim=3, data=[[[[1, -2, 3]]]])
    y = b.tensor((1, 2, 2, 3), scale=0.07, zp=-5)
    b.op(kind, [x, c], [y], *([OPTIONS[kind]] if kind in OPTIONS else
                              [NEW_OPTIONS[kind]] if NEW_OPTIONS.get(kind) else []))
    model = b.build([x], [y])
    assert_matches_tflm(te.convert(model), model, int8_inputs((2, 2, 3), N_SAMPLES))


@pytest.mark.parametrize("act", ["TANH", "SIGN_BIT"])
def test_fused_tanh_and_sign_bit_do_not_clamp_as_in_tflm(act):
    """TFLM's quantized ADD/SUB/MUL clamp only for the RELU family; TANH/SIGN_BIT run as NONE."""
    check(ALL, (1, 4, 4, 8), (1, 1, 1, 8), (0.03, -20), (0.06, 11), (0.02, -9), act=act)


def test_unsupported_mul_multiplier_too_large():
    model, _ = binary_model("MUL", (1, 4), (1, 4), (1000.0, 0), (1000.0, 0), (1e-6, 0))
    assert_unsupported(model, "MUL", "left shift")


# -- MAXIMUM, MINIMUM, SQUARED_DIFFERENCE, PRELU --------------------------------------------------

NEW_OPTIONS = {"MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions",
               "SQUARED_DIFFERENCE": "SquaredDifferenceOptions", "PRELU": None}
NEW = list(NEW_OPTIONS)


def new_binary_model(kind, s1, s2, q1, q2, qo, const=None, seed=0, dtype="int8"):
    """One `kind` op on two operands (const = 0 or 1 makes that one a constant)."""
    rng = np.random.default_rng(seed)
    lo, hi = (-128, 128) if dtype == "int8" else (-32768, 32768)
    b = ModelBuilder()
    ids, graph_inputs = [], []
    for k, (shape, (scale, zp)) in enumerate(((s1, q1), (s2, q2))):
        data = rng.integers(lo, hi, size=shape) if const == k else None
        ids.append(b.tensor(shape, dtype=dtype, scale=scale, zp=zp, data=data))
        if const != k:
            graph_inputs.append(ids[-1])
    y = b.tensor(np.broadcast_shapes(tuple(s1), tuple(s2)), dtype=dtype, scale=qo[0], zp=qo[1])
    if NEW_OPTIONS[kind]:
        b.op(kind, ids, [y], NEW_OPTIONS[kind])
    else:
        b.op(kind, ids, [y])
    return b.build(graph_inputs, [y]), [s for k, s in enumerate((s1, s2)) if k != const]


def check_new(kind, s1, s2, q1, q2, qo, const=None, seed=0):
    model, shapes = new_binary_model(kind, s1, s2, q1, q2, qo, const, seed)
    cm = te.convert(model)
    xs = [int8_inputs(sample_shape(s), N_SAMPLES, seed=seed + 7 * k) for k, s in enumerate(shapes)]
    assert_matches_tflm(cm, model, xs if len(xs) > 1 else xs[0])
    check_total_footprint(cm)
    return cm


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize("seed", range(4))
def test_new_ops_all_input_pairs(kind, seed):
    """Every (x1, x2) int8 pair in one sample, then 20 random ones, under random quantizations
    (scales 1e-3 .. 3, any zero points)."""
    rng = np.random.default_rng(200 + seed)
    q1, q2, qo = random_quant(rng), random_quant(rng), random_quant(rng, -3.0, 1.0)
    model, _ = new_binary_model(kind, (1, 65536), (1, 65536), q1, q2, qo)
    pairs = np.arange(65536)
    x1 = np.concatenate([((pairs >> 8) - 128).astype(np.int8)[None], int8_inputs((65536,), 20, seed)])
    x2 = np.concatenate([((pairs & 255) - 128).astype(np.int8)[None],
                         int8_inputs((65536,), 20, seed + 1)])
    assert_matches_tflm(te.convert(model), model, [x1, x2])


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize("qi", range(len(QUANTS)))
def test_new_ops_quantizations(kind, qi):
    q1, q2, qo = QUANTS[qi]
    check_new(kind, (1, 6, 5, 16), (1, 6, 5, 16), q1, q2, qo, seed=qi)
    check_new(kind, (1, 6, 5, 16), (16,), q1, q2, qo, seed=qi + 50)


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize("si", range(len(SHAPES)))
def test_new_ops_broadcast_shapes(kind, si):
    s1, s2 = SHAPES[si]
    q1, q2, qo = QUANTS[si % len(QUANTS)]
    if kind == "SQUARED_DIFFERENCE" and tuple(s1) != tuple(s2) and max(len(s1), len(s2)) > 4:
        model, _ = new_binary_model(kind, s1, s2, q1, q2, qo)
        assert_unsupported(model, kind, "at most 4")
        return
    check_new(kind, s1, s2, q1, q2, qo, seed=si)


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize("const,shapes", [(1, ((1, 4, 5, 6), (1, 1, 6))),
                                          (1, ((1, 4, 5, 6), (4, 5, 6))),
                                          (0, ((1, 1, 1, 6), (1, 4, 5, 6)))])
def test_new_ops_constant_operand(kind, const, shapes):
    """PRELU's alpha is a constant in every converted model: per channel and per position."""
    cm = check_new(kind, *shapes, (0.07, 4), (0.011, -33), (0.05, 17), const=const, seed=const)
    assert f"model_L0_in{const}" in cm.sources["model.c"]


@pytest.mark.parametrize("kind", ["MAXIMUM", "MINIMUM"])
@pytest.mark.parametrize("s1,s2", [((1, 4, 5, 6), (1, 4, 5, 6)), ((1, 4, 5, 6), (6,)),
                                   ((3, 1, 5), (1, 4, 1))])
def test_maximum_minimum_int16(kind, s1, s2):
    model, shapes = new_binary_model(kind, s1, s2, (0.001, 0), (0.001, 0), (0.001, 0),
                                     dtype="int16")
    rng = np.random.default_rng(4)
    xs = []
    for s in shapes:
        x = rng.integers(-32768, 32768, (N_SAMPLES, *sample_shape(s))).astype(np.int16)
        x[0], x[1] = -32768, 32767
        xs.append(x)
    assert_matches_tflm(te.convert(model), model, xs)


@pytest.mark.parametrize("kind", NEW)
def test_new_ops_clean_under_sanitizers(kind):
    model, shapes = new_binary_model(kind, (2, 3, 1, 4), (1, 1, 5, 4), *QUANTS[2], const=1)
    xs = [int8_inputs(sample_shape(s), 8, seed=k) for k, s in enumerate(shapes)]
    cm = te.convert(model)
    assert_sanitized_matches_tflm(cm, model, xs)
    model, shapes = new_binary_model(kind, (1, 6, 6, 3), (1, 6, 6, 3), *QUANTS[1])
    xs = [int8_inputs(sample_shape(s), 8, seed=k) for k, s in enumerate(shapes)]
    cm = te.convert(model)
    assert cm._gen.layers[0][1].in_place
    assert_sanitized_matches_tflm(cm, model, xs, layer=0)


def test_new_ops_refusals():
    model, _ = new_binary_model("PRELU", (1, 4), (1, 4), (0.1, 0), (0.1, 0), (0.1, 0), dtype="int16")
    assert_unsupported(model, "PRELU", "int16")
    model, _ = new_binary_model("SQUARED_DIFFERENCE", (1, 4), (1, 4), (1000.0, 0), (1000.0, 0),
                                (1e-9, 0))
    assert_unsupported(model, "SQUARED_DIFFERENCE", "left shift")
    b = ModelBuilder()
    x, c, y = (b.tensor((1, 4), dtype=d, scale=0.1, zp=0) for d in ("int8", "int16", "int8"))
    b.op("MAXIMUM", [x, c], [y])
    assert_unsupported(b.build([x, c], [y]), "MAXIMUM", "int16")


# -- ADD / SUB in 16x8 models -------------------------------------------------------------------

def int16_inputs(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, size=(n, *shape)).astype(np.int16)
    if n >= 3:
        x[0], x[1] = -32768, 32767
        x[2].flat[::2] = -32768
        x[2].flat[1::2] = 32767
    return x


# Quantizations of 16x8 models (zero points 0, as the converter writes them) and a few with
# zero points, which TFLM applies.
QUANTS_16 = [((3e-5, 0), (5e-5, 0), (4e-5, 0)), ((1e-4, 0), (1e-6, 0), (2e-5, 0)),
             ((0.001, 0), (0.001, 0), (0.002, 0)), ((2e-4, 100), (3e-4, -50), (5e-4, 7))]
SHAPES_16 = [((1, 4, 5, 6), (1, 4, 5, 6)), ((1, 4, 5, 6), (6,)), ((1, 5), (5,)), ((2, 3, 1), (1, 1, 4))]


@pytest.mark.parametrize("kind", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("qi", range(len(QUANTS_16)))
@pytest.mark.parametrize("si", range(len(SHAPES_16)))
def test_add_sub_int16(kind, qi, si):
    """ADD/SUB/MUL in 16x8 models (MUL: zero points 0, as TFLM requires)."""
    if kind == "MUL" and qi == 3:
        return
    if kind == "MUL":
        QUANTS_MUL = [((3e-3, 0), (5e-3, 0), (4e-2, 0)), ((1e-4, 0), (1e-2, 0), (2e-5, 0)),
                      ((0.001, 0), (0.001, 0), (0.0001, 0))]
        q = QUANTS_MUL[qi]
    else:
        q = QUANTS_16[qi]
    s1, s2 = SHAPES_16[si]
    model, shapes = binary_model(kind, s1, s2, *q, act=["NONE", "RELU"][si % 2], dtype="int16")
    xs = [int16_inputs(sample_shape(s), 12, seed=qi + k) for k, s in enumerate(shapes)]
    cm = te.convert(model)
    assert_matches_tflm(cm, model, xs)
    check_total_footprint(cm)


def test_add_int16_clean_under_sanitizers():
    model, shapes = binary_model("ADD", (1, 3, 4, 8), (1, 3, 4, 8), *QUANTS_16[0], dtype="int16")
    xs = [int16_inputs(sample_shape(s), 6, seed=k) for k, s in enumerate(shapes)]
    assert_sanitized_matches_tflm(te.convert(model), model, xs, layer=0)


@pytest.mark.parametrize("kind", ["SQUARED_DIFFERENCE", "PRELU"])
@pytest.mark.parametrize("si", range(len(SHAPES_16)))
def test_squared_difference_prelu_int16(kind, si):
    """16x8: SQUARED_DIFFERENCE on int16 (zero points 0); PRELU on int16 with an int8 alpha."""
    s1, s2 = SHAPES_16[si]
    rng = np.random.default_rng(si)
    b = ModelBuilder()
    x1 = b.tensor(s1, dtype="int16", scale=[3e-4, 1e-4][si % 2], zp=0)
    if kind == "PRELU":
        x2 = b.tensor(s2, scale=0.01, zp=[0, 5][si % 2], data=rng.integers(-128, 128, s2))
        ins = [x1]
    else:
        x2 = b.tensor(s2, dtype="int16", scale=2e-4, zp=0)
        ins = [x1, x2]
    y = b.tensor(np.broadcast_shapes(s1, s2), dtype="int16", scale=[1e-3, 5e-5][si % 2], zp=0)
    b.op(kind, [x1, x2], [y], *(["SquaredDifferenceOptions"] if kind != "PRELU" else []))
    model = b.build(ins, [y])
    xs = [int16_inputs(sample_shape(s), 12, seed=si + k) for k, s in enumerate([s1, s2][:len(ins)])]
    cm = te.convert(model)
    assert_matches_tflm(cm, model, xs if len(xs) > 1 else xs[0])
    check_total_footprint(cm)
