"""band_plan.py: smaller scratch (depthwise bands, residual-conv chunks) only where it lowers the
arena, the same choice in the code generator, the patch search and nas.estimate, bit-exact."""
import nas
import tinyengine_tf as te
from nas.cost import compiled_graph
from reference import assert_matches_tflm, model_inputs
from test_kernels_conv_residual import block
from tinyengine_tf import band_plan
from tinyengine_tf.codegen import generate
from tinyengine_tf.kernels.conv_residual import CHUNK_OPTION
from tinyengine_tf.kernels.depthwise_band import BAND_OPTION
from tinyengine_tf.memory import plan_memory
from tinyengine_tf.passes.patches import patch_prefix

SHRUNK = (BAND_OPTION, CHUNK_OPTION)


def test_shrinks_only_layers_on_the_peak_and_stays_exact():
    # An inverted-residual block: the depthwise and the fused projection run at the widest steps.
    m = block(c=16, e=64, h=12, w=12, seed=3)
    cm = te.convert(m)
    g = cm.graph
    shrunk = {pos: op for pos, (op, code) in enumerate(cm._gen.layers)
              if code is not None and any(k in op.options for k in SHRUNK)}
    assert shrunk, "the block's peak holds a depthwise plane or a projection chunk"
    in_place = {pos: code.in_place for pos, (op, code) in enumerate(cm._gen.layers) if code}
    default = _default_scratch(cm)
    plan, chosen = band_plan.plan(g, default, in_place)
    assert plan.arena_size == cm.peak_sram and set(chosen) == set(shrunk)
    # Without them (every layer's default scratch) the plan is larger; the first one shrunk is
    # the layer of the step with the most live bytes (the others joined the peak after it).
    before = plan_memory(g, default, in_place)
    assert before.arena_size > cm.peak_sram
    live = before.live_bytes()
    assert live.index(max(live)) in shrunk
    # The tail conv's step is far below the peak: nothing there changes.
    assert len(g.ops) - 1 not in shrunk
    assert_matches_tflm(cm, m, model_inputs(cm, 12, seed=4))


def _default_scratch(cm) -> dict:
    """Every layer's scratch as its kernel emits it without a band or chunk option."""
    from tinyengine_tf.kernels.base import KERNELS, EmitContext
    out = {}
    g = cm.graph
    for pos, op in enumerate(g.ops):
        if cm._gen.layers[pos][1] is None:
            continue
        ctx = EmitContext(g, "t")
        ctx.layer = f"L{pos}"
        out[pos] = KERNELS[op.kind](op, g, ctx).scratch_bytes
    return out


def test_estimate_equals_compiled_where_bands_are_chosen():
    """The MCUNet network of bench_patches.py with the input from caller memory: its patched
    plan shrinks scratch on the peak, and nas.estimate makes the same choice."""
    arch = nas.MCUNetSpace().sample(resolution=160, width=0.5, rng=3)
    g = compiled_graph(arch)
    setting = (5, 2, 3)
    gen = generate(patch_prefix(g, *setting), "m", input_in_arena=False)
    assert any(any(k in op.options for k in SHRUNK) for op, code in gen.layers if code)
    cost = nas.estimate(arch, patches=setting, input_in_arena=False)
    assert cost.peak_sram == gen.plan.arena_size
