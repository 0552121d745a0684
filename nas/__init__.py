"""TinyNAS for tinyengine-tf: the MCUNet search space, an exact TensorFlow-free cost model,
stage 1 (search-space optimization) and stage 2 (a KerasTuner evolutionary search with QAT trials
scored on the generated C).

    import nas
    space = nas.MCUNetSpace()
    arch = space.sample(resolution=96, width=0.5, rng=0)
    cost = nas.estimate(arch)              # .macs, .flash, .peak_sram: equal to te.convert(...)
    choice = nas.optimize_search_space(sram=320_000, flash=1_000_000)      # stage 1
    model = nas.build_model(arch, num_classes=2)   # tf_keras, ready for tfmot QAT
    r = nas.search((x, y), (xv, yv), num_classes=2, sram=..., flash=..., max_trials=20)  # 1 + 2

Modules: space (the search space), cost (its exact cost), build (Arch -> tf_keras), stage1 (the
search-space optimizer), stage2_oracle (the KerasTuner oracle), stage2_tuner (the trial),
stage2_chief / stage2_worker (distributed processes), pipeline (nas.search: both stages), cli.

Importing nas does not import TensorFlow; build_model, search and the stage-2 classes do when used.
"""
from nas.build import build_model
from nas.cost import Cost, estimate
from nas.space import Arch, Block, MCUNetSpace, make_divisible
from nas.stage1 import (SearchSpaceChoice, Sensitivity, measure_throughput, optimize_search_space,
                        sensitivity)

_LAZY = {"TinyNASOracle": "nas.stage2_oracle", "TinyNASTuner": "nas.stage2_tuner",
         "search": "nas.pipeline", "SearchResult": "nas.pipeline", "DataError": "nas.pipeline"}


def __getattr__(name):
    # keras_tuner imports TensorFlow: load stage 2 only when it is asked for.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


__all__ = ["MCUNetSpace", "Arch", "Block", "make_divisible", "build_model", "estimate", "Cost",
           "optimize_search_space", "SearchSpaceChoice", "sensitivity", "Sensitivity",
           "measure_throughput", "TinyNASOracle", "TinyNASTuner", "search", "SearchResult", "DataError"]
