"""`make codegen` (gpreempt_trace.codegen.headers) owns every generated header: --check names a stale one and
fails, a rewrite makes it current, and the checked-in headers are current."""
from __future__ import annotations

from gpreempt_trace.codegen import headers as generated
from gpreempt_trace.recorder import record_layout


def test_checked_in_headers_are_current():
    assert generated.stale() == [], "run `make codegen`"
    assert generated.main(["--check"]) == 0


def test_check_names_a_stale_header_and_a_rewrite_mends_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(record_layout, "HEADER_PATH", tmp_path / "gpt_event.h")
    assert generated.main(["--check"]) == 1
    assert f"{tmp_path / 'gpt_event.h'} is stale: run `make codegen`" in capsys.readouterr().err
    (tmp_path / "gpt_event.h").write_text("/* edited by hand */\n")
    assert generated.main(["--check"]) == 1
    assert generated.main([]) == 0
    assert (tmp_path / "gpt_event.h").read_text() == record_layout.c_header()
    assert generated.main(["--check"]) == 0
