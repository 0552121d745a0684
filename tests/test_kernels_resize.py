"""RESIZE_NEAREST_NEIGHBOR (int8/int16) and RESIZE_BILINEAR (int8) against TFLite Micro: up- and
downscaling, odd ratios, align_corners, half_pixel_centers, batches; footprint; sanitizers."""
from __future__ import annotations

import numpy as np
import pytest

import tinyengine_tf as te
from reference import (assert_matches_tflm, assert_sanitized_matches_tflm, assert_unsupported,
                       compile_and_check)
from tflite_builder import ModelBuilder

OPTIONS = {"RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
           "RESIZE_BILINEAR": "ResizeBilinearOptions"}


def resize_model(kind, shape, size, align=False, half=False, dtype="int8", out_shape=None,
                 size_const=True):
    b = ModelBuilder()
    x = b.tensor(shape, dtype=dtype, scale=0.05, zp=-3)
    s = b.tensor((2,), dtype="int32", data=list(size) if size_const else None)
    y = b.tensor(out_shape or (shape[0], size[0], size[1], shape[3]), dtype=dtype, scale=0.05, zp=-3)
    b.op(kind, [x, s], [y], OPTIONS[kind], alignCorners=align, halfPixelCenters=half)
    return b.build([x] if size_const else [x, s], [y])


# (input shape, output size): x2, x3, odd ratios up and down, to 1x1, from 1x1, batch 2.
GEOMETRIES = [((1, 4, 5, 3), (8, 10)), ((1, 3, 3, 2), (9, 9)), ((1, 5, 7, 4), (3, 4)),
              ((1, 6, 4, 1), (7, 11)), ((1, 4, 4, 3), (1, 1)), ((1, 1, 1, 5), (3, 2)),
              ((2, 3, 5, 2), (5, 3)), ((1, 7, 3, 8), (7, 3))]
MODES = [(False, False), (True, False), (False, True)]


@pytest.mark.parametrize("kind", list(OPTIONS))
@pytest.mark.parametrize("gi", range(len(GEOMETRIES)))
@pytest.mark.parametrize("align,half", MODES)
def test_resize_matches_tflm(kind, gi, align, half):
    shape, size = GEOMETRIES[gi]
    compile_and_check(resize_model(kind, shape, size, align, half), n=20, seed=gi)


@pytest.mark.parametrize("align,half", MODES + [(True, True)])
def test_nearest_int16(align, half):
    model = resize_model("RESIZE_NEAREST_NEIGHBOR", (1, 3, 5, 2), (7, 4), align, half, dtype="int16")
    rng = np.random.default_rng(1)
    x = rng.integers(-32768, 32768, (20, 3, 5, 2)).astype(np.int16)
    x[0], x[1] = -32768, 32767
    assert_matches_tflm(te.convert(model), model, x)


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_resize_clean_under_sanitizers(kind):
    from reference import int8_inputs
    for shape, size, align, half in (((1, 3, 5, 4), (7, 9), False, True), ((1, 6, 5, 3), (2, 4), True, False)):
        model = resize_model(kind, shape, size, align, half)
        assert_sanitized_matches_tflm(te.convert(model), model, int8_inputs(shape[1:], 5), layer=0)


def test_resize_rejects_what_tflm_rejects():
    assert_unsupported(resize_model("RESIZE_BILINEAR", (1, 3, 3, 2), (6, 6), True, True),
                       "RESIZE_BILINEAR", "half_pixel_centers")
    assert_unsupported(resize_model("RESIZE_BILINEAR", (1, 3, 3, 2), (6, 6), size_const=False),
                       "RESIZE_BILINEAR", "constant")
    assert_unsupported(resize_model("RESIZE_NEAREST_NEIGHBOR", (1, 3, 3, 2), (6, 6),
                                    out_shape=(1, 6, 5, 2)), "RESIZE_NEAREST_NEIGHBOR", "size")
    assert_unsupported(resize_model("RESIZE_BILINEAR", (1, 3, 3, 2), (6, 6), dtype="int16"),
                       "RESIZE_BILINEAR", "int16")
