"""Issue-level memory claims on Keras-built networks: plan == lower bound, <= TFLM, bit-exact."""
import os

import numpy as np
import pytest

import tinyengine_tf as te
from reference import assert_matches_tflm, int8_inputs

pytestmark = pytest.mark.slow


def _mobilenetv2(px):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras
    from converters.keras_to_tflite import keras_to_tflite

    model = tf_keras.applications.MobileNetV2(input_shape=(px, px, 3), alpha=0.35, weights=None,
                                              classes=10, classifier_activation=None)
    data = np.random.default_rng(0).uniform(-1, 1, (8, px, px, 3)).astype("float32")
    return keras_to_tflite(model, data)


def _mcunet(res, width, seed):
    import nas
    from converters.keras_to_tflite import keras_to_tflite

    arch = nas.MCUNetSpace().sample(resolution=res, width=width, rng=seed)
    model = nas.build_model(arch, num_classes=2)
    data = np.random.default_rng(seed).uniform(-1, 1, (8, res, res, 3)).astype("float32")
    return keras_to_tflite(model, data)


@pytest.mark.parametrize("build", [lambda: _mobilenetv2(64), lambda: _mcunet(96, 0.5, 0)],
                         ids=["mobilenetv2_0.35_64", "mcunet_r96_w0.5"])
def test_plan_meets_lower_bound_and_beats_tflm(build):
    data = build()
    cm = te.convert(data)
    rep = cm.memory_report()
    assert cm.peak_sram == rep.lower_bound
    assert cm.peak_sram <= rep.tflm.arena_head < rep.tflm.arena_total
    # In-place depthwise: every depthwise layer with multiplier 1 wrote over its input.
    aliased = [op for op in cm.graph.ops if op.kind == "DEPTHWISE_CONV_2D"
               and cm.plan.tensor_offset.get(op.outputs[0]) == cm.plan.tensor_offset.get(op.inputs[0])]
    assert aliased, "no depthwise layer ran in place"
    t = cm.graph.t(cm.graph.inputs[0])
    assert_matches_tflm(cm, data, int8_inputs(tuple(t.shape[1:]), 20, seed=11))
