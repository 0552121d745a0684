"""The side-by-side memory report against TFLite Micro."""
import re
import shutil
import subprocess

import numpy as np
import pytest

import tinyengine_tf as te
from tflite_builder import ModelBuilder, bias_scale
from tinyengine_tf.report import measure_tflm_arena

# TFLM's arena as NOTICE.md records it (measured by the people who supplied the models).
NOTICE = {"vww_96_int8": (103680, 73728, 29952), "kws_ref_model": (24272, 16000, 8272),
          "pretrainedResnet_quant": (55984, 49152, 6832), "ad01_int8": (3984, 768, 3216)}


def _conv_chain(seed=0, hw=16, chans=(3, 8, 16, 8)):
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    s_in = 0.05
    x = b.tensor((1, hw, hw, chans[0]), scale=s_in, zp=-2)
    cur = x
    for k in range(1, len(chans)):
        ic, oc = chans[k - 1], chans[k]
        fs = rng.uniform(0.005, 0.02, oc)
        w = b.tensor((oc, 3, 3, ic), scale=fs, zp=[0] * oc, data=rng.integers(-127, 128, (oc, 3, 3, ic)))
        bias = b.tensor((oc,), "int32", scale=bias_scale(s_in, fs), zp=[0] * oc,
                        data=rng.integers(-500, 500, oc))
        y = b.tensor((1, hw, hw, oc), scale=0.08, zp=-5)
        b.op("CONV_2D", [cur, w, bias], [y], "Conv2DOptions", padding="SAME", strideH=1, strideW=1,
             fusedActivationFunction="RELU")
        cur, s_in = y, 0.08
    return b.build([x], [cur])


@pytest.mark.parametrize("name", sorted(NOTICE))
def test_measured_tflm_arena_matches_notice(shared_models, name):
    assert measure_tflm_arena((shared_models / f"{name}.tflite").read_bytes()) == NOTICE[name]


@pytest.mark.parametrize("seed,hw,chans", [(0, 16, (3, 8, 16, 8)), (1, 12, (4, 24, 8, 32, 4)),
                                           (2, 20, (1, 16, 16, 16))])
def test_replayed_tflm_planner_equals_measured_head(seed, hw, chans):
    cm = te.convert(_conv_chain(seed, hw, chans))
    rep = cm.memory_report()
    assert rep.tflm.replayed_head == rep.tflm.arena_head
    assert cm.peak_sram <= rep.tflm.arena_head


def test_report_renders_markdown_html_and_plot(tmp_path):
    cm = te.convert(_conv_chain(), name="chain")
    rep = cm.memory_report()
    md = rep.to_markdown()
    assert "| peak SRAM (arena) |" in md and f"{cm.peak_sram:,}" in md
    assert len([l for l in md.splitlines() if re.match(r"\| \d+ \| CONV_2D", l)]) == 3
    page = rep.to_html(tmp_path / "r.html")
    text = open(page).read()
    assert "<table id=\"layers\">" in text and "data:image/png;base64," in text
    png = rep.plot(tmp_path / "r.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert rep.lower_bound <= rep.tinyengine.peak_sram
    assert rep.peak_layer.startswith("CONV_2D")


def test_html_report_escapes_names_from_the_model(tmp_path):
    cm = te.convert(_conv_chain(), name="x<script>&")
    text = open(cm.memory_report().to_html(tmp_path / "r.html")).read()
    assert "<script>" not in text and "Memory report: x&lt;script&gt;&amp;</h1>" in text
    assert text.count('class="peak"') == 1


def test_save_writes_project_and_report(tmp_path):
    cm = te.convert(_conv_chain(), name="chain")
    out = cm.save(tmp_path / "proj")
    names = {p.name for p in out.iterdir()}
    assert {"chain.c", "chain.h", "te_runtime.h", "Makefile", "memory_report.md",
            "memory_report.html", "memory_report.png"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".te_save_")]
    # The saved project builds and runs with its own Makefile.
    proc = subprocess.run(["make", "-s", "-C", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(out / "chain_demo")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("out0[0] =")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed")
def test_html_report_renders_in_chromium(tmp_path):
    cm = te.convert(_conv_chain(), name="chain")
    page = cm.memory_report().to_html(tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", f"file://{page}"], capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000  # a real page, not a blank one
