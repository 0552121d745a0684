"""Builds generated C for this host (shared library for ctypes, or an executable for sanitizers).

Builds are cached by a hash of the sources, flags and compiler, so re-running a converted model
costs nothing. Every build uses -Wall -Wextra -Werror: a warning in generated code is a bug.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tinyengine_tf.errors import ToolchainError

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
HOST_FLAGS = ["-O3", "-march=native", "-fno-strict-aliasing"]
SANITIZE_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer"]


def cache_dir() -> Path:
    base = os.environ.get("TINYENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tinyengine_tf")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise ToolchainError(f"no C compiler found (looked for {cc!r}); install gcc "
                             "(apt-get install gcc) or set CC")
    return cc


def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"cannot run {cc}: {exc}") from None


def _key(sources: dict, flags: list, cc: str, kind: str) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    h.update(" ".join(WARNINGS + flags).encode() + kind.encode() + _compiler_id(cc).encode())
    return h.hexdigest()[:24]


def build(sources: dict, kind: str = "shared", flags: list | None = None) -> Path:
    """Compile every .c in sources; kind 'shared' (a .so) or 'exe'. Returns the cached artifact."""
    cc = compiler()
    flags = list(HOST_FLAGS if flags is None else flags)
    key = _key(sources, flags, cc, kind)
    out = cache_dir() / (f"{key}.so" if kind == "shared" else f"{key}.exe")
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="te_build_") as tmp:
        for name, text in sources.items():
            Path(tmp, name).write_text(text)
        cfiles = [str(Path(tmp, n)) for n in sorted(sources) if n.endswith(".c")]
        target = Path(tmp, out.name)
        cmd = [cc, *WARNINGS, *flags, *(["-shared", "-fPIC"] if kind == "shared" else []),
               "-I", tmp, *cfiles, "-o", str(target)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError("compiling the generated C failed (a tinyengine-tf bug; please "
                                 f"report it with the model):\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
        tmp_out = out.with_suffix(out.suffix + f".{os.getpid()}.tmp")
        shutil.copy2(target, tmp_out)
        os.replace(tmp_out, out)
    return out


def load(path: Path) -> ctypes.CDLL:
    return ctypes.CDLL(str(path))
