"""nas.estimate(arch, patches=...): the peak SRAM te.convert compiles to with patches, byte for
byte, on MCUNet-space architectures; with TensorFlow once end to end."""
import numpy as np
import pytest

import nas
import tinyengine_tf as te
from nas.cost import compiled_graph
from tinyengine_tf.codegen import generate
from tinyengine_tf.passes.patches import patch_prefix, valid_splits
from tinyengine_tf.profile import graph_macs

ARCHS = [(96, 0.35, 0), (112, 0.5, 1), (128, 0.4, 2), (128, 0.5, 3), (144, 0.35, 4),
         (144, 0.5, 5), (160, 0.3, 6), (160, 0.4, 7), (176, 0.3, 8), (192, 0.25, 9)]


def _arch(res, width, seed):
    return nas.MCUNetSpace().sample(resolution=res, width=width, rng=seed)


@pytest.mark.parametrize("res, width, seed", ARCHS)
def test_estimate_with_patches_equals_generated_plan(res, width, seed):
    arch = _arch(res, width, seed)
    g = compiled_graph(arch)
    plain = nas.estimate(arch)
    splits = valid_splits(g)
    # A split in the first third of the network and a grid that varies with the architecture.
    setting = (splits[len(splits) // 3 - seed % 3], 2 + seed % 3, 2 + (seed + 1) % 3)
    for inside in (True, False):
        cost = nas.estimate(arch, patches=setting, input_in_arena=inside)
        gen = generate(patch_prefix(g, *setting), "m", input_in_arena=inside)
        assert cost.patches == setting
        assert (cost.peak_sram, cost.flash) == (gen.plan.arena_size, gen.flash_bytes)
        assert cost.flash == plain.flash and cost.macs == plain.macs
        assert cost.extra_macs == graph_macs(patch_prefix(g, *setting)) - graph_macs(g) > 0


@pytest.mark.parametrize("res, width, seed", ARCHS[2:5])
def test_estimate_auto_is_the_compiled_choice(res, width, seed):
    arch = _arch(res, width, seed)
    plain = nas.estimate(arch)
    cost = nas.estimate(arch, patches="auto", max_mac_overhead=0.2)
    assert cost.patches is not None and cost.peak_sram < plain.peak_sram
    assert 0 < cost.extra_macs <= 0.2 * plain.macs
    assert generate(patch_prefix(compiled_graph(arch), *cost.patches), "m").plan.arena_size == \
        cost.peak_sram


def test_estimate_with_input_from_caller_memory():
    arch = _arch(128, 0.4, 11)
    g = compiled_graph(arch)
    caller = nas.estimate(arch, input_in_arena=False)
    assert caller.patches is None
    assert caller.peak_sram == generate(g, "m", input_in_arena=False).plan.arena_size


@pytest.mark.slow
def test_estimate_with_patches_equals_keras_model_compiled():
    arch = _arch(128, 0.4, 2)
    model = nas.build_model(arch, num_classes=arch.num_classes)
    data = np.random.default_rng(0).uniform(-1, 1, (4, 128, 128, 3)).astype("float32")
    cost = nas.estimate(arch, patches="auto", max_mac_overhead=0.2)
    cm = te.convert(model, data, patches=cost.patches)
    assert (cm.peak_sram, cm.flash) == (cost.peak_sram, cost.flash)
    assert cm.macs - graph_macs(cm.unpatched_graph) == cost.extra_macs
