"""The arena planner: lifetimes, aliasing, and the verifier that every plan must pass."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyengine_tf.errors import TinyEngineError
from tinyengine_tf.ir import Graph, Op, Tensor
from tinyengine_tf.memory import Buffer, Plan, plan_memory, verify


def _tensor(i, name, n, scale=1.0):
    """An int8 (1, n) tensor: to the planner only its size matters."""
    return Tensor(i, name, (1, n), "int8", np.array([scale], np.float32), np.array([0]))


def _chain(sizes, view_at=()):
    """input -> op0 -> t1 -> op1 -> ... ; sizes are element counts of t0..tn (int8)."""
    tensors = {i: _tensor(i, f"t{i}", n, 0.1) for i, n in enumerate(sizes)}
    ops = [Op(i, "RESHAPE" if i in view_at else "RELU", [i], [i + 1]) for i in range(len(sizes) - 1)]
    return Graph(tensors, ops, [0], [len(sizes) - 1])


def _plan(buffers, arena):
    return Plan(buffers, arena, {}, {}, set(), max(b.last for b in buffers) + 1)


def _refused(buffers, arena, match=None):
    """verify() rejects these buffers in an arena of this many bytes."""
    with pytest.raises(TinyEngineError, match=match):
        verify(_plan(buffers, arena))


def test_verifier_catches_overlap_in_space_and_time():
    a = Buffer("t0", 64, 0, 2, offset=0)
    b = Buffer("t1", 64, 1, 3, offset=32)
    _refused([a, b], 128, "overlap")


def test_verifier_catches_buffer_outside_arena():
    _refused([Buffer("t0", 64, 0, 1, offset=32)], 64, "outside")


def test_verifier_catches_misaligned_and_unplaced_buffers():
    _refused([Buffer("t0", 16, 0, 1, offset=8)], 64)
    _refused([Buffer("t0", 16, 0, 1, offset=-1)], 64)


def test_verifier_catches_touching_lifetimes():
    # Producer step of one == last step of the other: both live then (inclusive intervals).
    a = Buffer("t0", 32, 0, 1, offset=0)
    b = Buffer("t1", 32, 1, 2, offset=0)
    _refused([a, b], 32, "overlap")


def test_verifier_accepts_declared_in_place_pair_only():
    a = Buffer("t0", 32, 0, 1, offset=0)
    b = Buffer("t1", 32, 1, 2, offset=0, in_place_of="t0")
    verify(_plan([a, b], 32))
    b_late = Buffer("t1", 32, 0, 2, offset=0, in_place_of="t0")  # starts before t0 dies
    _refused([a, b_late], 32)
    # Shifted by a few bytes, the output would overwrite input slots not read yet.
    a_big = Buffer("t0", 64, 0, 1, offset=0)
    b_shifted = Buffer("t1", 32, 1, 2, offset=16, in_place_of="t0")
    _refused([a_big, b_shifted], 64, "overlap")


def test_disjoint_lifetimes_share_memory():
    g = _chain([1000, 16, 1000, 16])
    plan = plan_memory(g)
    # t0 and t2 never live together, so the arena holds two 1008-byte buffers at most.
    assert plan.arena_size == plan.lower_bound
    assert plan.arena_size < 1008 + 16 + 1008 + 16


def test_view_aliases_its_input():
    g = _chain([64, 64, 64], view_at={1})
    plan = plan_memory(g)
    assert plan.tensor_offset[1] == plan.tensor_offset[2]
    assert plan.arena_size == 128


def test_float_io_is_external():
    g = _chain([16, 16, 16])
    g.tensors[0].dtype = "float32"
    g.tensors[2].dtype = "float32"
    plan = plan_memory(g)
    assert plan.external == {0, 2}
    assert 0 not in plan.tensor_offset and 2 not in plan.tensor_offset
    assert plan.arena_size == 16


def test_scratch_is_planned_inside_the_arena():
    g = _chain([32, 32, 32])
    plan = plan_memory(g, scratch={1: 100})
    assert 1 in plan.scratch_offset
    assert plan.arena_size >= 112 + 32 + 32


def test_in_place_lower_bound_counts_the_pair_once():
    g = _chain([64, 64, 64])
    plain = plan_memory(g)
    inplace = plan_memory(g, in_place={0: True, 1: True})
    assert plain.lower_bound == 128
    assert inplace.lower_bound == 64 and inplace.arena_size == 64
    assert inplace.tensor_offset[0] == inplace.tensor_offset[1] == inplace.tensor_offset[2]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 12), st.integers(0, 6)),
                min_size=1, max_size=25))
def test_random_buffer_sets_always_verify(spec):
    """Random DAG-shaped lifetimes: the greedy plan always passes the verifier."""
    n_ops = 14
    tensors = {0: _tensor(0, "in", 8)}
    ops = []
    for k, (size, start, length) in enumerate(spec):
        tensors[k + 1] = _tensor(k + 1, f"t{k + 1}", size)
    # Op j consumes every tensor whose interval covers j and produces those starting at j.
    for j in range(n_ops):
        outs = [k + 1 for k, (s, st_, ln) in enumerate(spec) if st_ == j]
        ins = [k + 1 for k, (s, st_, ln) in enumerate(spec) if st_ < j <= st_ + ln] or [0]
        ops.append(Op(j, "RELU", ins, outs or [len(tensors) + j]))
        if not outs:
            tensors[len(tensors) + j] = _tensor(len(tensors) + j, "pad", 1)
    g = Graph(tensors, ops, [0], [ops[-1].outputs[0]])
    plan = plan_memory(g)
    verify(plan)
    assert plan.arena_size >= plan.lower_bound
