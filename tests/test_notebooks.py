"""The notebooks run end to end in their small setting (their default): every cell executes
without raising, which includes each notebook's own asserts that the generated C equals TFLite
Micro bit for bit, on the host and on the emulated Cortex-M4. The repository keeps them clean."""
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("tensorflow_model_optimization")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("speech_commands.ipynb", "vww.ipynb")
KERNEL = "tinyengine-tf-test"
LIMIT = 600     # seconds one notebook may take on a loaded 2-core machine (about 2 min unloaded)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec for this interpreter that imports this checkout, found through JUPYTER_PATH:
    a fresh machine has only the virtual environment, no registered kernel."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tinyengine-tf test", "language": "python",
        "env": {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_has_no_outputs(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: code cells {dirty} keep outputs; clear them before committing"


def _outputs(nb, kind: str) -> list:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if kind == "text" and o.get("output_type") == "stream":
                out.append(o["text"])
            elif kind in o.get("data", {}):
                out.append(o["data"][kind])
    return out


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_its_small_setting(name, kernel, tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    work = tmp_path / "cwd"
    work.mkdir()
    t0 = time.time()
    # Any cell that raises fails the test (CellExecutionError names the cell and its traceback).
    nbclient.NotebookClient(nb, kernel_name=kernel, timeout=LIMIT, startup_timeout=120,
                            resources={"metadata": {"path": str(work)}}).execute()
    seconds = time.time() - t0
    assert seconds < LIMIT
    text = "".join(_outputs(nb, "text"))
    assert "C accuracy" in text and "TFLite Micro accuracy" in text
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
        assert "equal to the host's and to TFLite Micro's" in text
    # Plots inline: MFCCs or images, stage 1, stage 2, memory report.
    assert len(_outputs(nb, "image/png")) >= 4
    run = work / "runs" / name.replace(".ipynb", "")
    for png in ("stage1.png", "stage2.png", "memory.png"):
        assert (run / png).stat().st_size > 10_000
    assert (run / "model.tflite").stat().st_size > 1000
    assert (run / "c_project" / "model.c").exists()
