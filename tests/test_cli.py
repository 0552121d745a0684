"""The command line, run the way a user runs it: `python -m tinyengine_tf ...` in a subprocess.

Every error path must exit non-zero with `error: <message>` and no traceback, and a failed
conversion must leave the output directory as it was.
"""
import importlib.util
import os
import subprocess
import sys
import types

import pytest

import tinyengine_tf as te
from conftest import ROOT
from tinyengine_tf import cli
from test_errors import conv_model, float_model, png_bytes



def run_cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "tinyengine_tf", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def unsupported_model() -> bytes:
    from tflite_builder import ModelBuilder
    from test_errors import _conv, _gather
    b = ModelBuilder()
    x = b.tensor((1, 6, 6, 3), scale=0.05, zp=-1)
    out = _gather(b, _conv(b, x))
    return b.build([x], [out])


@pytest.fixture()
def conv_file(tmp_path):
    path = tmp_path / "tiny_conv.tflite"
    path.write_bytes(conv_model())
    return path


# -- success -----------------------------------------------------------------------------------
def test_ops_lists_every_supported_op():
    code, out, err = run_cli("ops")
    assert code == 0, err
    listed = {line.split()[0] for line in out.splitlines() if line[:1].isupper()}
    assert set(te.supported_ops()) <= listed


def test_help_and_usage_errors():
    code, out, _ = run_cli("--help")
    assert code == 0 and "convert" in out and "report" in out
    code, _, err = run_cli()
    assert code == 2 and "usage" in err and "Traceback" not in err
    code, _, err = run_cli("frobnicate")
    assert code == 2 and "invalid choice" in err
    code, _, err = run_cli("convert", "x.tflite")  # -o is required
    assert code == 2 and "-o" in err


def test_convert_writes_project_and_summary(conv_file, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("convert", conv_file, "-o", out_dir)
    assert code == 0, err
    cm = te.convert(conv_file)
    files = {p.name for p in out_dir.iterdir()}
    assert {"tiny_conv.c", "tiny_conv.h", "Makefile"} <= files
    assert f"{cm.peak_sram:,}" in out and f"{cm.flash:,}" in out
    assert f"{len(cm.source_graph.ops)} ops" in out
    for name in files:
        assert name in out, f"the summary should list written file {name}"
    assert "tiny_conv_invoke" in (out_dir / "tiny_conv.h").read_text()


def test_convert_conformance_model(shared_models, tmp_path):
    model = shared_models / "kws_ref_model.tflite"
    out_dir = tmp_path / "kws"
    code, out, err = run_cli("convert", model, "-o", out_dir, "--sram", "320KB", "--flash", "1MB")
    assert code == 0, err
    # The budgets as the CLI passes them (the Flash left widens the FULLY_CONNECTED filter).
    cm = te.convert(model, sram=320 * 1024, flash=1 << 20)
    assert out.startswith("kws_ref_model: 13 ops")  # NOTICE.md: 13 ops
    assert f"arena {cm.peak_sram:,} bytes" in out and f"flash {cm.flash:,} bytes" in out
    assert (out_dir / "kws_ref_model.c").exists() and (out_dir / "Makefile").exists()


def test_convert_name_and_budgets(conv_file, tmp_path):
    cm = te.convert(conv_file)
    out_dir = tmp_path / "named"
    code, _, err = run_cli("convert", conv_file, "-o", out_dir, "--name", "kws",
                           "--sram", cm.peak_sram, "--flash", "1MB")
    assert code == 0, err
    assert (out_dir / "kws.c").exists() and "kws_invoke" in (out_dir / "kws.h").read_text()


@pytest.mark.parametrize("flag", ["--sram", "--flash"])
def test_convert_over_budget_writes_nothing(conv_file, tmp_path, flag):
    cm = te.convert(conv_file)
    need = cm.peak_sram if flag == "--sram" else cm.flash
    out_dir = tmp_path / "out"
    code, out, err = run_cli("convert", conv_file, "-o", out_dir, flag, need - 1)
    assert code == 1
    assert err.startswith("error: ") and "does not fit" in err and f"{need:,}" in err
    assert "Traceback" not in err
    assert not out_dir.exists()


@pytest.mark.parametrize("size", ["12QB", "-5", "0", "1.5", "KB", ""])
def test_bad_size_is_a_usage_error(conv_file, tmp_path, size):
    code, _, err = run_cli("convert", conv_file, "-o", tmp_path / "o", "--sram", size)
    assert code == 2 and "invalid size" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text,value", [("320000", 320000), ("320_000", 320000),
                                        ("320KB", 320 * 1024), ("320kib", 320 * 1024),
                                        ("320 K", 320 * 1024), ("1MB", 1 << 20), ("2MiB", 2 << 20),
                                        ("1.5KB", 1536), ("64B", 64), ("1,048,576", 1 << 20)])
def test_parse_size(text, value):
    assert cli.parse_size(text) == value


def test_report_prints_markdown_and_writes_html(conv_file, tmp_path):
    html = tmp_path / "rep.html"
    code, out, err = run_cli("report", conv_file, "--html", html)
    assert code == 0, err
    cm = te.convert(conv_file)
    assert f"{cm.peak_sram:,}" in out and "|" in out and "CONV_2D" in out
    assert html.exists() and "<" in html.read_text() and "CONV_2D" in html.read_text()
    assert "Traceback" not in err


# -- failures ----------------------------------------------------------------------------------
BAD_MODELS = {
    "missing": (None, "no such file"),
    "empty": (b"", "too short"),
    "png": (png_bytes(), "not a TFLite model"),
    "text": (b"hello, this is a text file and not a model at all\n", "not a TFLite model"),
    "float": ("float", "representative_dataset"),
    "unsupported": ("unsupported", "GATHER (op #1)"),
}


def _bad_model(what, tmp_path):
    data, expect = BAD_MODELS[what]
    path = tmp_path / f"{what}.tflite"
    if data == "float":
        data = float_model()
    elif data == "unsupported":
        data = unsupported_model()
    if data is not None:
        path.write_bytes(data)
    return path, expect


# Every failure with no output directory; the late failures (after the reader) also with an
# existing empty or populated one.
FAILURE_CASES = [(w, "absent") for w in sorted(BAD_MODELS)] + [
    (w, s) for w in ("float", "unsupported") for s in ("empty", "populated")]


@pytest.mark.parametrize("what,out_state", FAILURE_CASES)
def test_convert_failure_exits_1_and_writes_nothing(what, out_state, tmp_path):
    path, expect = _bad_model(what, tmp_path)
    out_dir = tmp_path / "out"
    if out_state != "absent":
        out_dir.mkdir()
    if out_state == "populated":
        (out_dir / "keep.txt").write_text("user file")
    code, out, err = run_cli("convert", path, "-o", out_dir)
    assert code == 1, (out, err)
    assert err.startswith("error: ") and expect in err, err
    assert "Traceback" not in err and "internal error" not in err
    if out_state == "absent":
        assert not out_dir.exists()
    else:
        assert sorted(p.name for p in out_dir.iterdir()) == ([] if out_state == "empty" else ["keep.txt"])
        assert out_state == "empty" or (out_dir / "keep.txt").read_text() == "user file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".te_save_")]


@pytest.mark.parametrize("what", ["unsupported", "png"])
def test_report_failure_exits_1(what, tmp_path):
    path, expect = _bad_model(what, tmp_path)
    html = tmp_path / "r.html"
    code, out, err = run_cli("report", path, "--html", html)
    assert code == 1 and err.startswith("error: ") and expect in err
    assert "Traceback" not in err and not html.exists()


def test_unwritable_output_is_an_error_not_a_crash(conv_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("convert", conv_file, "-o", blocker)
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    assert blocker.read_text() == "x"


# -- in-process: paths a subprocess cannot provoke --------------------------------------------
def _boom(exc):
    def convert(*_a, **_k):
        raise exc
    return convert


def test_internal_error_is_short_without_debug(monkeypatch, capsys, conv_file, tmp_path):
    monkeypatch.setattr(te, "convert", _boom(ZeroDivisionError("oops")))
    assert cli.main(["convert", str(conv_file), "-o", str(tmp_path / "o")]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error" in err and "ZeroDivisionError: oops" in err and "--debug" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_internal_error_traceback_with_debug(monkeypatch, capsys, conv_file, tmp_path, where):
    monkeypatch.setattr(te, "convert", _boom(ZeroDivisionError("oops")))
    args = ["convert", str(conv_file), "-o", str(tmp_path / "o")]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    assert cli.main(args) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" in err and "ZeroDivisionError" in err


def test_keyboard_interrupt_exits_130_quietly(monkeypatch, capsys, conv_file, tmp_path):
    monkeypatch.setattr(te, "convert", _boom(KeyboardInterrupt()))
    assert cli.main(["convert", str(conv_file), "-o", str(tmp_path / "o")]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal error" not in captured.err


def test_report_without_memory_report_says_so(monkeypatch, capsys, conv_file):
    class NoReport:
        pass
    monkeypatch.setattr(te, "convert", lambda *a, **k: NoReport())
    assert cli.main(["report", str(conv_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "memory report is not available" in err


def test_demo_calls_run_demo_with_the_output_dir(monkeypatch, capsys, tmp_path):
    calls = []
    fake = types.ModuleType("tinyengine_tf.demo")
    fake.run_demo = lambda out_dir: calls.append(out_dir) or {"equal": 32}
    monkeypatch.setitem(sys.modules, "tinyengine_tf.demo", fake)
    assert cli.main(["demo", "-o", str(tmp_path / "d")]) == 0
    assert calls == [str(tmp_path / "d")]
    assert "{'equal'" not in capsys.readouterr().out  # the demo prints its own summary


def test_demo_missing_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tinyengine_tf.demo", None)  # import fails
    assert cli.main(["demo"]) == 1
    assert "demo is not available" in capsys.readouterr().err


def test_nas_subcommand_follows_the_nas_package():
    code, out, err = run_cli("nas", "--help")
    if importlib.util.find_spec("nas") is not None and \
            importlib.util.find_spec("nas.cli") is not None:
        assert code == 0 and "usage" in out, err
    else:
        assert code == 2 and "invalid choice" in err


def test_usage_error_in_process_returns_2(capsys):
    assert cli.main(["convert"]) == 2
    assert "usage" in capsys.readouterr().err


def test_convert_optimize_size(conv_file, tmp_path):
    """--optimize size writes the size-mode project (the layers call the shared kernels)."""
    out_dir = tmp_path / "out"
    code, out, err = run_cli("convert", conv_file, "-o", out_dir, "--optimize", "size")
    assert code == 0, err
    assert (out_dir / "tiny_conv.c").read_text() == te.convert(conv_file, name="tiny_conv",
                                                               optimize="size").sources["tiny_conv.c"]
    assert "te_c_conv(&" in (out_dir / "tiny_conv.c").read_text()
    assert (out_dir / "te_compact.h").exists()
    code, _, err = run_cli("convert", conv_file, "-o", tmp_path / "o2", "--optimize", "fast")
    assert code == 2 and "--optimize" in err and "size" in err
