"""The four MLPerf Tiny models nobody here wrote: bit-exact with TFLM, clean under sanitizers."""
import subprocess

import numpy as np
import pytest

import tinyengine_tf as te
from reference import assert_matches_tflm, int8_inputs, tflm_run
from tinyengine_tf import toolchain

MODELS = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "ad01_int8"]
_cache = {}


def _compiled(shared_models, name):
    if name not in _cache:
        data = (shared_models / f"{name}.tflite").read_bytes()
        _cache[name] = (te.convert(data, name=name), data)
    return _cache[name]


def _inputs(cm, n, seed):
    t = cm.graph.t(cm.graph.inputs[0])
    return int8_inputs(tuple(t.shape[1:]), n, seed=seed)


@pytest.mark.parametrize("name", MODELS)
def test_bit_exact_with_tflm(shared_models, name):
    cm, data = _compiled(shared_models, name)
    assert_matches_tflm(cm, data, _inputs(cm, 40, seed=hash(name) % 1000))


@pytest.mark.parametrize("name", MODELS)
def test_arena_is_no_larger_than_tflm_head(shared_models, name):
    cm, _ = _compiled(shared_models, name)
    rep = cm.memory_report()
    assert rep.tflm.replayed_head == rep.tflm.arena_head, "our replay of TFLM's planner drifted"
    assert cm.peak_sram <= rep.tflm.arena_head
    assert f"{cm.prefix.upper()}_ARENA_BYTES {cm.peak_sram}" in cm.sources[f"{cm.prefix}.h"]


def _stdio_main(cm) -> str:
    """A main() that reads N samples from stdin and writes N outputs to stdout."""
    g = cm.graph
    ins = [g.t(i) for i in g.inputs]
    outs = [g.t(i) for i in g.outputs]
    decl = "".join(f"static int8_t in{k}[{t.nbytes}];\n" for k, t in enumerate(ins))
    decl += "".join(f"static int8_t out{k}[{t.nbytes}];\n" for k, t in enumerate(outs))
    reads = " && ".join(f"fread(in{k}, 1, {t.nbytes}, stdin) == {t.nbytes}" for k, t in enumerate(ins))
    writes = "".join(f"    fwrite(out{k}, 1, {t.nbytes}, stdout);\n" for k, t in enumerate(outs))
    args = ", ".join([f"in{k}" for k in range(len(ins))] + [f"out{k}" for k in range(len(outs))])
    return f"""#include <stdio.h>
#include <stdint.h>
#include "{cm.prefix}.h"
{decl}
int main(void) {{
  while ({reads}) {{
    if ({cm.prefix}_invoke({args}) != 0) return 2;
{writes}  }}
  return 0;
}}
"""


@pytest.mark.parametrize("name", MODELS)
def test_clean_under_address_and_undefined_sanitizers(shared_models, name):
    cm, data = _compiled(shared_models, name)
    exe = toolchain.build({**cm.sources, "main.c": _stdio_main(cm)}, kind="exe",
                          flags=toolchain.SANITIZE_FLAGS)
    x = _inputs(cm, 6, seed=7)
    proc = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, timeout=600,
                          env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert b"runtime error" not in proc.stderr, proc.stderr.decode()[-3000:]
    out_t = cm.graph.t(cm.graph.outputs[0])
    ours = np.frombuffer(proc.stdout, dtype=np.int8).reshape(len(x), *out_t.shape[1:])
    assert np.array_equal(ours, tflm_run(data, x))
