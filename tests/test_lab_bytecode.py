"""lab/bytecode.precompile: the .pyc a lab guest (read-only /, PYTHONDONTWRITEBYTECODE=1) cannot write itself."""
import importlib.util
import os

from gpreempt_trace.lab.bytecode import precompile


def test_writes_missing_bytecode_and_says_what_did_not_compile(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "good.py").write_text("X = 1\n")
    (pkg / "bad.py").write_text("def broken(:\n")
    line = precompile(pkg)
    assert "some modules did not compile" in line and "bad.py" in line
    assert os.path.exists(importlib.util.cache_from_source(str(pkg / "good.py")))
    (pkg / "bad.py").unlink()
    assert "did not compile" not in precompile(pkg)  # nothing stale left: only the time


def test_default_is_this_package():
    import gpreempt_trace

    line = precompile()
    assert "did not compile" not in line
    assert os.path.exists(importlib.util.cache_from_source(os.path.join(os.path.dirname(gpreempt_trace.__file__), "errors.py")))
