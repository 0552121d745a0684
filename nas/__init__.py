"""TinyNAS for tinyengine-tf: the MCUNet search space, an exact TensorFlow-free cost model, and
stage 1 (search-space optimization).

    import nas
    space = nas.MCUNetSpace()
    arch = space.sample(resolution=96, width=0.5, rng=0)
    cost = nas.estimate(arch)              # .macs, .flash, .peak_sram: equal to te.convert(...)
    choice = nas.optimize_search_space(sram=320_000, flash=1_000_000)
    model = nas.build_model(arch, num_classes=2)   # tf_keras, ready for tfmot QAT

Importing nas does not import TensorFlow; only build_model does.
"""
from nas.build import build_model
from nas.cost import Cost, estimate
from nas.search_space import (SearchSpaceChoice, Sensitivity, measure_throughput,
                              optimize_search_space, sensitivity)
from nas.space import Arch, Block, MCUNetSpace, make_divisible

__all__ = ["MCUNetSpace", "Arch", "Block", "make_divisible", "build_model", "estimate", "Cost",
           "optimize_search_space", "SearchSpaceChoice", "sensitivity", "Sensitivity",
           "measure_throughput"]
