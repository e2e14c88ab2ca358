"""The host side of lab runs: the bytecode written before a guest boots (lab/bytecode.py; the guest has
a read-only / and PYTHONDONTWRITEBYTECODE=1) and the scheme-B module loader (lab/scheme_b.py)."""
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


def test_default_is_this_package(monkeypatch):
    import compileall
    from pathlib import Path

    import gpreempt_trace

    seen = []
    monkeypatch.setattr(compileall, "compile_dir", lambda d, quiet: seen.append(d) or True)
    assert "did not compile" not in precompile()
    assert seen == [str(Path(gpreempt_trace.__file__).resolve().parent)]


def test_scheme_b_loader_names_the_built_module_and_falls_back_to_debians():
    from gpreempt_trace.lab import scheme_b

    script = scheme_b.load_amdgpu()
    assert f"[ -f {scheme_b.SHIM_KO} ] && [ -f {scheme_b.PATCHED_KO} ]" in script
    assert f"insmod {scheme_b.SHIM_KO} && insmod {scheme_b.PATCHED_KO} && echo '{scheme_b.PATCHED_LINE}'" in script
    assert "else modprobe amdgpu; fi" in script and script.endswith("set +e\n")
