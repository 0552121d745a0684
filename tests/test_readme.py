"""The README's claims that code can check: the supported-op table and the two commands."""
import re
from pathlib import Path

import tinyengine_tf as te

README = Path(__file__).resolve().parent.parent / "README.md"


def _op_table():
    text = README.read_text()
    section = text.split("## Supported ops", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| `([A-Z0-9_]+)` \|", section, re.M)}


def test_supported_op_table_equals_the_kernel_registry():
    assert _op_table() == set(te.supported_ops())


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
