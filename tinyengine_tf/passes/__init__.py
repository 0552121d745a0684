"""Graph -> graph rewrites, run in order before planning and code generation."""
from tinyengine_tf.passes.fold_constants import fold_constants
from tinyengine_tf.passes.fold_pad import fold_pad
from tinyengine_tf.passes.fuse_residual import fuse_residual
from tinyengine_tf.passes.prune import prune

PIPELINE = (fold_constants, fold_pad, prune, fuse_residual)


def run_passes(graph):
    for p in PIPELINE:
        graph = p(graph)
    return graph
