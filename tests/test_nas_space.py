"""The MCUNet search space: channel rounding, sampling, mutation, crossover, JSON."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.space import (EXPAND_RATIOS, KERNEL_SIZES, RESOLUTIONS, STAGE_DEPTHS, STAGE_STRIDES,
                       STAGE_WIDTHS, WIDTHS, Arch, MCUNetSpace, make_divisible)

SPACE = MCUNetSpace()


def _archs(n, seed=0, space=SPACE):
    rng = random.Random(seed)
    return [space.sample(rng=rng) for _ in range(n)]


# -- make_divisible ---------------------------------------------------------------------------
@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.floats(0.5, 4000, allow_nan=False))
def test_make_divisible_properties(v):
    c = make_divisible(v)
    assert c % 8 == 0 and c >= 8
    assert c >= 0.9 * round(v, 6)                    # never loses more than 10%
    nearest = max(8, int(round(v, 6) + 4) // 8 * 8)  # otherwise the nearest multiple, halves up
    assert c in (nearest, nearest + 8)


def test_make_divisible_mobilenet_examples():
    # MobileNet's rule: nearest multiple of 8 unless that loses more than 10%.
    assert make_divisible(32 * 0.5) == 16
    assert make_divisible(16 * 0.2) == 8                  # floor at the divisor
    assert make_divisible(96 * 0.2) == 24                 # 16 would lose 17%
    assert make_divisible(24 * 0.3) == 8                  # 7.2 (float noise 7.1999..) -> 8
    assert make_divisible(320 * 0.7) == 224
    assert make_divisible(44) == 48                       # halves round up


def test_channels_are_rounded_in_every_configuration():
    for r, w in SPACE.configurations()[::7]:
        a = SPACE.sample(r, w, rng=1)
        for b in a.blocks():
            assert b.cin % 8 == 0 and b.cout % 8 == 0 and b.cin >= 8
        assert a.stage_channels() == [make_divisible(c * w) for c in STAGE_WIDTHS]


# -- structure ----------------------------------------------------------------------------------
def test_defaults_are_the_mcunet_grid():
    assert list(SPACE.resolutions) == list(range(48, 225, 16)) == list(RESOLUTIONS)
    assert len(SPACE.resolutions) == 12 and len(SPACE.widths) == 9
    assert SPACE.widths[0] == 0.2 and SPACE.widths[-1] == 1.0
    assert len(SPACE.configurations()) == 108


@pytest.mark.parametrize("arch", _archs(25, seed=3), ids=lambda a: a.short()[:24])
def test_blocks_follow_the_space(arch):
    blocks = arch.blocks()
    assert len(blocks) == 1 + sum(arch.depths)
    first = blocks[0]
    assert (first.kernel, first.expand, first.stride, first.cin) == (3, 1, 1, arch.stem_channels)
    j = 1
    for stage, (depth, stride, width) in enumerate(zip(arch.depths, STAGE_STRIDES, STAGE_WIDTHS)):
        for i in range(depth):
            b = blocks[j]
            assert b.stride == (stride if i == 0 else 1)
            assert b.cout == make_divisible(width * arch.width)
            assert b.cin == blocks[j - 1].cout
            assert b.kernel == arch.kernels[j - 1] and b.expand == arch.expands[j - 1]
            assert b.residual == (b.stride == 1 and b.cin == b.cout)
            j += 1
    assert arch.depths[-1] == 1


# -- sampling -----------------------------------------------------------------------------------
def test_sample_is_reproducible_and_valid():
    for seed in range(20):
        a = SPACE.sample(96, 0.5, rng=seed)
        assert a == SPACE.sample(96, 0.5, rng=seed)
        assert a == SPACE.sample(96, 0.5, rng=random.Random(seed))
        assert a.resolution == 96 and a.width == 0.5 and a.num_classes == 1000
        assert all(d in allowed for d, allowed in zip(a.depths, STAGE_DEPTHS))
        assert set(a.kernels) <= set(KERNEL_SIZES) and set(a.expands) <= set(EXPAND_RATIOS)
    assert len({SPACE.sample(96, 0.5, rng=s) for s in range(20)}) == 20


def test_sample_with_numpy_generator_and_free_resolution():
    a = SPACE.sample(rng=np.random.default_rng(5))
    assert a == SPACE.sample(rng=np.random.default_rng(5))
    assert a.resolution in RESOLUTIONS and a.width in WIDTHS


def test_sample_covers_every_choice():
    archs = _archs(200, seed=9)
    assert {k for a in archs for k in a.kernels} == set(KERNEL_SIZES)
    assert {e for a in archs for e in a.expands} == set(EXPAND_RATIOS)
    for s in range(5):
        assert {a.depths[s] for a in archs} == set(STAGE_DEPTHS[s])


def test_restricted_space_samples_only_its_choices():
    sp = MCUNetSpace(resolutions=[64], widths=[0.3], kernel_sizes=(3, 5), expand_ratios=(4,), num_classes=2)
    for a in (sp.sample(rng=s) for s in range(20)):
        assert set(a.kernels) <= {3, 5} and set(a.expands) == {4}
        assert (a.resolution, a.width, a.num_classes) == (64, 0.3, 2)
    with pytest.raises(ValueError):
        MCUNetSpace(kernel_sizes=(9,))


# -- mutation and crossover -----------------------------------------------------------------------
def test_mutate_is_reproducible_and_valid():
    for k, a in enumerate(_archs(30, seed=4)):
        m = SPACE.mutate(a, 0.3, rng=k)
        assert m == SPACE.mutate(a, 0.3, rng=k)
        assert (m.width, m.resolution, m.num_classes) == (a.width, a.resolution, a.num_classes)
        m.validate()


def test_mutate_probability_bounds():
    archs = _archs(30, seed=5)
    assert all(SPACE.mutate(a, 0.0, rng=1) == a for a in archs)
    changed = [SPACE.mutate(a, 1.0, rng=i) != a for i, a in enumerate(archs)]
    assert sum(changed) >= 28
    # a low probability changes few genes: count kernel differences on unchanged depths
    diffs = []
    for i, a in enumerate(archs):
        m = SPACE.mutate(a, 0.1, rng=i)
        if m.depths == a.depths:
            diffs.append(np.mean(np.array(m.kernels) != np.array(a.kernels)))
    assert 0.0 < np.mean(diffs) < 0.2


def test_mutate_resolution_only_when_asked():
    a = SPACE.sample(96, 0.5, rng=0)
    res = {SPACE.mutate(a, 1.0, rng=i, resolution=True).resolution for i in range(30)}
    assert len(res) > 3 and res <= set(RESOLUTIONS)


def test_crossover_is_reproducible_and_takes_genes_from_parents():
    archs = _archs(40, seed=6)
    for k in range(0, 40, 2):
        a, b = SPACE.sample(112, 0.6, rng=k), SPACE.sample(112, 0.6, rng=k + 1000)
        c = SPACE.crossover(a, b, rng=k)
        assert c == SPACE.crossover(a, b, rng=k)
        c.validate()
        ja = jb = jc = 0
        for da, db, dc in zip(a.depths, b.depths, c.depths):
            assert dc in (da, db)
            for i in range(dc):
                options_k = [p.kernels[j + i] for p, j, d in ((a, ja, da), (b, jb, db)) if i < d]
                options_e = [p.expands[j + i] for p, j, d in ((a, ja, da), (b, jb, db)) if i < d]
                assert c.kernels[jc + i] in options_k and c.expands[jc + i] in options_e
            ja, jb, jc = ja + da, jb + db, jc + dc
    assert SPACE.crossover(archs[0], archs[0], rng=3) == archs[0]


def test_crossover_mixes_both_parents():
    a, b = SPACE.sample(96, 0.5, rng=1), SPACE.sample(96, 0.5, rng=2)
    children = {SPACE.crossover(a, b, rng=i) for i in range(20)}
    assert len(children) > 10
    assert len(children - {a, b}) >= 10   # most children are new mixtures of both parents


def test_crossover_rejects_parents_from_different_spaces():
    with pytest.raises(ValueError):
        SPACE.crossover(SPACE.sample(96, 0.5, rng=0), SPACE.sample(96, 0.6, rng=0))


# -- JSON ---------------------------------------------------------------------------------------
def test_json_round_trip():
    for a in _archs(30, seed=7):
        text = a.to_json()
        b = Arch.from_json(text)
        assert b == a and hash(b) == hash(a) and b.to_json() == text
        assert Arch.from_json(a.to_dict()) == a
        assert isinstance(b.kernels, tuple) and isinstance(b.width, float)


@pytest.mark.parametrize("change", [
    {"depths": (2, 3, 4, 2, 3, 0)},          # every stage has 1..4 blocks
    {"depths": (5, 3, 4, 2, 3, 1)},
    {"kernels": (9,)},
    {"expands": (2,)},
    {"resolution": 4},
    {"width": 0},
])
def test_invalid_architectures_raise(change):
    a = SPACE.sample(96, 0.5, rng=0)
    d = a.to_dict()
    if "kernels" in change:
        d["kernels"] = list(change["kernels"]) * len(a.kernels)
    elif "expands" in change:
        d["expands"] = list(change["expands"]) * len(a.expands)
    else:
        d.update(change)
    with pytest.raises(ValueError):
        Arch.from_json(d)


def test_input_shape_and_stage_depths_shape_the_space():
    """A 49x10x1 input: every sample, mutant and child keeps it; shallower stage choices are
    honoured; a resolution other than the input's height keeps its aspect ratio."""
    space = MCUNetSpace(widths=[0.3], num_classes=12, input_shape=(49, 10, 1),
                        stage_depths=[(1, 2)] * 5 + [(1,)])
    assert space.resolutions == (49,)
    archs = [space.sample(rng=i) for i in range(30)]
    kids = [space.mutate(a, 0.5, rng=i) for i, a in enumerate(archs)] + \
           [space.crossover(a, b, rng=i) for i, (a, b) in enumerate(zip(archs, archs[1:]))]
    for a in archs + kids:
        assert a.input_shape == (49, 10, 1)
        assert all(d in (1, 2) for d in a.depths[:5]) and a.depths[5] == 1
    assert {a.depths[0] for a in archs} == {1, 2}
    wide = MCUNetSpace(resolutions=[96, 60], input_shape=(120, 160, 3))
    assert wide.input_shape_at(96) == (96, 128, 3) and wide.input_shape_at(60) == (60, 80, 3)
    a = wide.sample(60, 0.5, rng=0)
    assert a.input_shape == (60, 80, 3) and Arch.from_json(a.to_json()) == a
    assert "r60x80" in a.short()
    with pytest.raises(ValueError):
        MCUNetSpace(stage_depths=[(0, 1)] * 6)
