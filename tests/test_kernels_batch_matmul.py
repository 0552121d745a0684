"""BATCH_MATMUL on int8 against TFLite Micro: ranks 2..5, batch broadcasting either side,
adj_x / adj_y, constant operands, quantizations with extreme zero points; sanitizers."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       check_total_footprint, int8_inputs, sample_shape)
from tflite_builder import ModelBuilder


def bmm_model(ls, rs, adj_x=False, adj_y=False, q=((0.05, -3), (0.02, 7), (0.1, 4)), const=None,
              seed=0, out_shape=None):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    ids, ins = [], []
    for k, (shape, (s, zp)) in enumerate(((ls, q[0]), (rs, q[1]))):
        data = rng.integers(-128, 128, shape) if const == k else None
        ids.append(b.tensor(shape, scale=s, zp=zp, data=data))
        if const != k:
            ins.append(ids[-1])
    if out_shape is None:
        l5 = (1,) * (5 - len(ls)) + tuple(ls)
        r5 = (1,) * (5 - len(rs)) + tuple(rs)
        batch = [max(a, c) for a, c in zip(l5[:3], r5[:3])]
        rows = l5[4] if adj_x else l5[3]
        cols = r5[3] if adj_y else r5[4]
        rank = max(len(ls), len(rs))
        out_shape = tuple(batch[3 - (rank - 2):]) + (rows, cols) if rank > 2 else (rows, cols)
    y = b.tensor(out_shape, scale=q[2][0], zp=q[2][1])
    b.op("BATCH_MATMUL", ids, [y], "BatchMatMulOptions", adjX=adj_x, adjY=adj_y)
    return b.build(ins, [y]), [s for k, s in enumerate((ls, rs)) if k != const]


def check(ls, rs, adj_x=False, adj_y=False, q=((0.05, -3), (0.02, 7), (0.1, 4)), const=None, seed=0):
    model, shapes = bmm_model(ls, rs, adj_x, adj_y, q, const, seed)
    cm = te.convert(model)
    xs = [int8_inputs(sample_shape(s), 20, seed=seed + k) for k, s in enumerate(shapes)]
    assert_matches_tflm(cm, model, xs if len(xs) > 1 else xs[0])
    check_total_footprint(cm)


# (lhs, rhs) with adj_x = adj_y = False; the adjoint variants transpose the last two dims.
SHAPES = [((1, 3, 4), (1, 4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (1, 4, 5)), ((1, 3, 4), (3, 4, 2)),
          ((3, 4), (4, 6)), ((2, 1, 3, 4), (1, 3, 4, 2)), ((2, 2, 1, 2, 3), (1, 2, 3, 3, 2)),
          ((4, 7, 9), (9, 3)), ((1, 1, 16), (1, 16, 1)), ((5, 2), (1, 2, 5))]


def _adj(shape, flag):
    return tuple(shape[:-2]) + (shape[-1], shape[-2]) if flag else tuple(shape)


@pytest.mark.parametrize("si", range(len(SHAPES)))
@pytest.mark.parametrize("adj_x,adj_y", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_tflm(si, adj_x, adj_y):
    ls, rs = SHAPES[si]
    check(_adj(ls, adj_x), _adj(rs, adj_y), adj_x, adj_y, seed=si)


QUANTS = [((0.01, -128), (0.5, 127), (0.05, 0)), ((1.5, 100), (0.003, -100), (0.02, -128)),
          ((0.2, 0), (0.2, 0), (3.0, 127)), ((0.0004, -9), (0.0007, 60), (0.00001, 5))]


@pytest.mark.parametrize("qi", range(len(QUANTS)))
@pytest.mark.parametrize("const", [None, 1, 0])
def test_quantizations_and_constant_operands(qi, const):
    check((2, 5, 8), (8, 6), q=QUANTS[qi], const=const, seed=qi)


def test_clean_under_sanitizers():
    model, shapes = bmm_model((2, 3, 4), (1, 5, 4), adj_y=True, const=1)
    xs = int8_inputs((2, 3, 4), 6)
    assert_sanitized_matches_tflm(te.convert(model), model, xs, layer=0)


def test_refusals():
    assert_unsupported(bmm_model((2, 3, 4), (3, 4, 5), out_shape=(2, 3, 5))[0], "BATCH_MATMUL",
                       "broadcast")
    assert_unsupported(bmm_model((3, 4), (5, 6), out_shape=(3, 6))[0], "BATCH_MATMUL", "summed")
    assert_unsupported(bmm_model((1, 1, 1, 1, 3, 4), (4, 5), out_shape=(1, 1, 1, 1, 3, 5))[0],
                       "BATCH_MATMUL", "ranks")


@pytest.mark.parametrize("si", [0, 2, 5, 7])
@pytest.mark.parametrize("adj_x,adj_y", [(False, False), (True, True)])
def test_int16(si, adj_x, adj_y):
    """16x8-style int16 BATCH_MATMUL (zero points 0): int64 sums, TFLM's 64-bit requantization."""
    ls, rs = SHAPES[si]
    ls, rs = _adj(ls, adj_x), _adj(rs, adj_y)
    rng = np.random.default_rng(si)
    b = ModelBuilder()
    l, r = b.tensor(ls, dtype="int16", scale=2e-4, zp=0), b.tensor(rs, dtype="int16", scale=3e-4, zp=0)
    ref_model, _ = bmm_model(ls, rs, adj_x, adj_y)
    from converters.tflite_reader import read_tflite
    out_shape = read_tflite(ref_model).t(2).shape
    y = b.tensor(out_shape, dtype="int16", scale=5e-3, zp=0)
    b.op("BATCH_MATMUL", [l, r], [y], "BatchMatMulOptions", adjX=adj_x, adjY=adj_y)
    model = b.build([l, r], [y])
    xs = []
    for s in (ls, rs):
        x = rng.integers(-32768, 32768, (10, *sample_shape(s))).astype(np.int16)
        x[0], x[1] = -32768, 32767
        xs.append(x)
    cm = te.convert(model)
    assert_matches_tflm(cm, model, xs)
    check_total_footprint(cm)
