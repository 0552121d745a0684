"""`tinyengine-tf data ...` is registered by nas/datasets/cli.py and degrades like `nas`."""
import sys

from tinyengine_tf import cli


def test_data_commands_are_listed(capsys):
    assert cli.main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert "speech-commands" in out and "vww-synthetic" in out


def test_usage_errors_exit_2(capsys):
    assert cli.main(["data", "speech-commands", "out", "--per-word", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_without_the_datasets_package_there_is_no_data_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nas.datasets.cli", None)      # import fails as if absent
    assert cli.main(["data", "--help"]) == 2
    assert "invalid choice" in capsys.readouterr().err
