"""The four MLPerf Tiny models nobody here wrote: bit-exact with TFLM, clean under sanitizers."""
import pytest

from reference import (SHARED_MODEL_NAMES, assert_matches_tflm, assert_sanitized_matches_tflm,
                       compiled_shared_model, model_inputs)


@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_bit_exact_with_tflm(shared_models, name):
    cm, data = compiled_shared_model(shared_models, name)
    assert_matches_tflm(cm, data, model_inputs(cm, 40, seed=hash(name) % 1000)[0])


@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_arena_is_no_larger_than_tflm_head(shared_models, name):
    cm, _ = compiled_shared_model(shared_models, name)
    rep = cm.memory_report()
    assert rep.tflm.replayed_head == rep.tflm.arena_head, "our replay of TFLM's planner drifted"
    assert cm.peak_sram <= rep.tflm.arena_head
    assert f"{cm.prefix.upper()}_ARENA_BYTES {cm.peak_sram}" in cm.sources[f"{cm.prefix}.h"]


@pytest.mark.parametrize("name", SHARED_MODEL_NAMES)
def test_clean_under_address_and_undefined_sanitizers(shared_models, name):
    cm, data = compiled_shared_model(shared_models, name)
    assert_sanitized_matches_tflm(cm, data, model_inputs(cm, 6, seed=7), timeout=600)
