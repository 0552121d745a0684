"""Arch -> tf_keras model, the network nas.estimate() predicts the compiled cost of.

Only plain layers that tfmot's default 8-bit QAT scheme knows: Conv2D (no bias) +
BatchNormalization + ReLU(6), DepthwiseConv2D, Add, GlobalAveragePooling2D, Dense. TensorFlow is
imported inside the function so ``import nas`` stays TensorFlow-free.
"""
from __future__ import annotations

from nas.space import Arch

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


def build_model(arch: Arch, num_classes: int | None = None, *, dropout: float = 0.0,
                name: str | None = None):
    """A tf_keras Model for `arch` taking float inputs of arch.input_shape ((R, R, 3) images by
    default) and returning logits.

    num_classes overrides arch.num_classes (pass the same value to nas.estimate). Dropout, if any,
    sits before the classifier and vanishes at conversion, so it does not change the cost.
    """
    import tf_keras as keras
    L = keras.layers

    num_classes = arch.num_classes if num_classes is None else int(num_classes)

    def conv_bn(x, filters, kernel, stride, act, prefix):
        x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                     name=f"{prefix}_conv")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        return L.ReLU(6.0, name=f"{prefix}_relu6")(x) if act else x

    def dw_bn(x, kernel, stride, prefix):
        x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                              name=f"{prefix}_dw")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{prefix}_dwbn")(x)
        return L.ReLU(6.0, name=f"{prefix}_dwrelu6")(x)

    inp = keras.Input(arch.input_shape, name="image")
    x = conv_bn(inp, arch.stem_channels, 3, 2, True, "stem")
    for i, b in enumerate(arch.blocks()):
        p = f"b{i}"
        h = conv_bn(x, b.mid, 1, 1, True, f"{p}_expand") if b.expand != 1 else x
        h = dw_bn(h, b.kernel, b.stride, p)
        h = conv_bn(h, b.cout, 1, 1, False, f"{p}_project")
        x = L.Add(name=f"{p}_add")([x, h]) if b.residual else h
    x = L.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    out = L.Dense(num_classes, name="classifier")(x)
    return keras.Model(inp, out, name=name or f"mcunet_{arch.short()}"[:120].replace(".", "_"))
