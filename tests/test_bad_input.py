"""Bad input (issue 24 item 5): each case of the sweep is a one-line error naming the thing and the fix
with a non-zero exit (no traceback, no `internal error`), or — for a damaged segment among good ones —
a warning naming it while the rest reads; "unknown" is never printed as 0."""
from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest
from click.testing import CliRunner
from testing import bad_traces as B
from testing.traces import set_counters, two_runs

from gpreempt_trace.cli.main import main


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="gpreempt-trace", **kw)


def one_line(res, code: int) -> str:
    """The single line the command printed, after checking the exit code and that nothing else came."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    lines = res.output.splitlines()
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.fixture
def r1(tmp_path):
    return two_runs(tmp_path / "runs")[0]


# ---- meta.json --------------------------------------------------------------------------------------
def test_meta_with_wrong_typed_fields_is_one_line_for_report_and_query(r1):
    B.edit_meta(r1, counters="x", labels=[1])
    for args in (["report", r1], ["report", r1, "-o", r1.parent / "rep"], ["query", "events.overview", r1]):
        assert one_line(run(*args), 1) == (f'Error: {r1}/meta.json: "labels" is a list ([1]), expected an object of strings (key -> value): '
                                           "the file is damaged: restore it from the recorder's output")
    B.edit_meta(r1, labels={}, start_ns="a")
    assert one_line(run("report", r1), 1) == (f'Error: {r1}/meta.json: "start_ns" is a string ("a"), expected a CLOCK_MONOTONIC time in ns '
                                              "(an integer >= 0) or null: the file is damaged: restore it from the recorder's output")


def test_meta_without_run_id_is_one_line_for_report_and_query(r1):
    B.edit_meta(r1, run_id=B.DELETE)
    line = f"Error: {r1}/meta.json has no \"run_id\": the file is damaged: restore it from the recorder's output"
    assert one_line(run("report", r1), 1) == line
    assert one_line(run("report", r1, "-o", r1.parent / "rep"), 1) == line
    assert one_line(run("query", "events.overview", r1), 1) == line


def test_newer_schema_version_is_refused(r1):
    B.edit_meta(r1, schema_version=99)
    assert one_line(run("query", "events.overview", r1), 1) == f"Error: {r1} has schema version 99, this tool reads up to 2: upgrade gpreempt-trace"


def test_unreadable_meta_names_the_cause_not_json(r1, monkeypatch):
    real = pathlib.Path.read_bytes

    def denied(self):
        if self.name == "meta.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    assert one_line(run("query", "events.overview", r1), 1) == \
        f"Error: cannot read {r1}/meta.json: Permission denied: make it a readable file (check its type, owner and permissions)"
    monkeypatch.undo()
    (r1 / "meta.json").unlink()
    (r1 / "meta.json").mkdir()
    assert one_line(run("query", "events.overview", r1), 1) == \
        f"Error: cannot read {r1}/meta.json: Is a directory: make it a readable file (check its type, owner and permissions)"


def test_nan_in_meta_is_not_json(r1):
    (r1 / "meta.json").write_text('{"format": "gpreempt-trace", "version": 1, "run_id": "r1", "start_ns": NaN}')
    assert one_line(run("query", "events.overview", r1), 1) == \
        f"Error: {r1}/meta.json is not valid JSON (NaN is not a JSON number): restore it from the recorder's output"


# ---- segments and table folders ---------------------------------------------------------------------
@pytest.mark.parametrize("table, column", [("events", "run_id"), ("events", "event"), ("events", "ts_ns"), ("markers", "kind")])
def test_a_segment_missing_a_required_column_is_skipped_with_a_warning(r1, table, column):
    seg, = B.edit_segments(r1, table, B.drop_column(column))
    res = run("query", "events.overview", r1, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert f"warning: skipping segment {seg} (no column {column}, which every row needs)" in res.output.splitlines()
    assert "internal error" not in res.output


def test_report_on_rows_without_run_id_counts_what_is_readable(r1):
    """Was KeyError: None. Both reports: meta.json's count next to the rows that can be read."""
    seg, = B.edit_segments(r1, "events", B.drop_column("run_id"))
    res = run("report", r1)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"warning: skipping segment {seg} (no column run_id, which every row needs)"
    assert "| r1 | model=a | " in res.output and " | 10 written, 0 readable (segments skipped: see the warnings) | unknown | 0/0 | True |" in res.output
    res = run("report", r1, "-o", r1.parent / "rep")
    assert res.exit_code == 0, res.output
    assert "<td class='l'>10 written, 0 readable (segments skipped: see the warnings)</td>" in (r1.parent / "rep" / "index.html").read_text()


def test_markdown_report_says_unknown_for_a_killed_run_as_the_html_one_does(tmp_path):
    r1, r2 = two_runs(tmp_path)
    set_counters(r2, events_written=None, events_lost=None)
    B.edit_meta(r2, stop_ns=None)
    md = run("report", r1, r2)
    assert md.exit_code == 0, md.output
    assert "| r2 | model=b | " in md.output and " | unfinished | 1 (counted from the segments: meta.json does not know) | unknown | 0/0 | True |" in md.output
    assert "None" not in md.output
    run("report", r1, r2, "-o", tmp_path / "rep")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<td class='l'>1 (counted from the segments: meta.json does not know)</td>" in page and "<td class='l'>unknown</td>" in page


def test_export_perfetto_on_a_segment_without_event_skips_it(r1, tmp_path):
    seg, = B.edit_segments(r1, "events", B.drop_column("event"))
    res = run("export", "--perfetto", "-o", tmp_path / "x.pftrace", r1)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [f"warning: skipping segment {seg} (no column event, which every row needs)", f"{tmp_path}/x.pftrace"]


def test_export_hive_leaves_out_what_query_skips(r1, tmp_path):
    seg, = B.edit_segments(r1, "events", B.retype_column("tgid"))
    res = run("export", "--hive", tmp_path / "hive", r1)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"warning: skipping segment {seg} (column tgid is string, expected int32)"
    assert sorted(p.name for p in (tmp_path / "hive" / "run_id=r1" / "events").iterdir()) == ["schema.parquet"]
    assert (tmp_path / "hive" / "run_id=r1" / "markers" / "seg-000000.parquet").is_file()


@pytest.mark.parametrize("table", ["events", "markers"])
def test_a_table_folder_that_is_a_file_is_an_error_not_zero_rows(r1, table):
    shutil.rmtree(r1 / table)
    (r1 / table).write_text("x")
    assert one_line(run("query", "events.overview", r1), 1) == (
        f"Error: {r1}/{table} is not a folder: the trace's {table} cannot be read: restore {table}/ from the recorder's output, "
        f"or remove it to read the trace as having no {table} rows")


def test_a_sql_file_of_two_statements_returns_the_last(r1, tmp_path):
    f = tmp_path / "two.sql"
    f.write_text("SELECT count(*) AS n FROM events;\nCREATE TEMP TABLE x AS SELECT 41 AS a;\nSELECT a + 1 AS b FROM x;\n")
    res = run("query", f, r1, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ['"b"', "42"]
    f.write_text("SELECT 1; SELECT 2 AS two")
    assert run("query", f, r1, "--format", "csv").output.splitlines() == ['"two"', "2"]


# ---- numbers and paths at the CLI -------------------------------------------------------------------
def test_synth_lost_nan_is_a_usage_error_and_writes_nothing(tmp_path):
    assert one_line(run("synth", "--scheme", "A", "--lost", "nan", "-o", tmp_path / "t"), 2) == \
        "Error: Invalid value for '--lost': nan is not a finite number in the range 0.0<=x<1.0: see 'gpreempt-trace synth --help'"
    assert not (tmp_path / "t").exists()


def test_synth_to_an_empty_path_writes_nothing_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert one_line(run("synth", "--scheme", "A", "--events", "1000", "-o", ""), 2) == \
        "Error: Invalid value for '-o' / '--output': the path is empty: give a file or directory name: see 'gpreempt-trace synth --help'"
    from gpreempt_trace import api
    from gpreempt_trace.errors import GptError

    with pytest.raises(GptError) as e:  # the library too (record, snapshot, synth write through TraceWriter.create)
        api.synth("", "A", 1000)
    assert e.value.line() == "output path is empty: give the trace directory to write with -o, e.g. -o runs/a"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, opt", [(["report", "{r1}", "-o", ""], "'-o' / '--output'"), (["query", "events.overview", "{r1}", "--out", ""], "'--out'"),
                                       (["doctor", "--btf", ""], "'--btf'"), (["doctor", "--kallsyms", ""], "'--kallsyms'")])
def test_an_empty_path_is_a_usage_error_not_the_current_directory(r1, tmp_path, monkeypatch, args, opt):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    res = run(*[a.format(r1=r1) for a in args])
    assert one_line(res, 2) == f"Error: Invalid value for {opt}: the path is empty: give a file or directory name: see 'gpreempt-trace {args[0]} --help'"
    assert sorted(os.listdir(tmp_path)) == before


def test_a_usage_error_listing_choices_is_one_line():
    assert one_line(run("synth", "-o", "x"), 2) == "Error: Missing option '--scheme'. Choose from: A, B: see 'gpreempt-trace synth --help'"


def test_workload_batch_has_an_upper_bound():
    assert one_line(run("workload", "online", "--batch", "1000000000"), 2) == \
        "Error: Invalid value for '--batch': 1000000000 is not in the range 1<=x<=1024: see 'gpreempt-trace workload --help'"


def test_experiment_queues_are_checked_before_any_run(tmp_path):
    assert one_line(run("experiment", "ab", "--queues", "abc", "-o", tmp_path / "x"), 2) == (
        "Error: Invalid value for '--queues': --queues 'abc' is not `all` or a comma-separated list of queue ids: e.g. --queues 0,1,2: "
        "see 'gpreempt-trace experiment ab --help'")
    assert not (tmp_path / "x").exists()


# ---- the controller's socket ------------------------------------------------------------------------
@pytest.fixture
def fake_service(tmp_path):
    """A Unix socket that answers every request line with `answer` (None: never answers)."""
    import socket
    import threading

    servers = []

    def start(answer: bytes | None) -> str:
        path = str(tmp_path / f"s{len(servers)}")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen()
        held = []

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                held.append(c)
                try:
                    c.recv(65536)
                    if answer is not None:
                        c.sendall(answer)
                except OSError:
                    pass

        threading.Thread(target=serve, daemon=True).start()
        servers.append((srv, held))
        return path

    yield start
    for srv, held in servers:
        srv.close()
        for c in held:
            c.close()


@pytest.mark.parametrize("op", ["suspend", "resume", "status"])
def test_a_socket_answering_non_utf8_is_one_line(fake_service, op):
    s = fake_service(b"\xff\xfe\n")
    name = {"suspend": "preempt"}.get(op, op)
    assert one_line(run("preempt", op, "--socket", s), 1) == (
        f"Error: {s} answered {name} with b'\\xff\\xfe', not a preempt service answer (a JSON object with \"ok\": true|false): "
        "give the socket of `gpreempt-trace preempt serve`")


def test_ok_maybe_is_not_success(fake_service):
    s = fake_service(b'{"ok": "maybe"}\n')
    assert one_line(run("preempt", "status", "--socket", s), 1) == (
        f"Error: {s} answered status with b'{{\"ok\": \"maybe\"}}', not a preempt service answer (a JSON object with \"ok\": true|false): "
        "give the socket of `gpreempt-trace preempt serve`")


def test_a_silent_controller_fails_after_the_timeout(fake_service):
    import time

    s = fake_service(None)
    t0 = time.monotonic()
    assert one_line(run("preempt", "resume", "--socket", s, "--timeout", "0.3"), 1) == (
        f"Error: preempt service at {s} did not answer resume within 0.3 s: check that `preempt serve` is running and not stopped, "
        "or allow a slow one more time (preempt --timeout, workload --controller-timeout)")
    assert time.monotonic() - t0 < 3


def test_workload_with_a_silent_controller_fails_after_its_timeout(fake_service):
    import time

    s = fake_service(None)
    t0 = time.monotonic()
    res = run("workload", "online", "--backend", "numpy", "--duration", "0.5", "--preempt-policy", "per-request",
              "--controller-socket", s, "--controller-timeout", "0.3")
    assert res.exit_code == 1, res.output
    assert res.output.splitlines()[-1] == (
        f"Error: preempt service at {s} did not answer preempt within 0.3 s: check that `preempt serve` is running and not stopped, "
        "or allow a slow one more time (preempt --timeout, workload --controller-timeout)")
    assert "Traceback" not in res.output and "internal error" not in res.output
    assert time.monotonic() - t0 < 5  # was 30 s per call


def test_default_client_timeout_is_short():
    from gpreempt_trace.control import Client

    assert Client("/nonexistent").timeout_s == 5.0
    assert "[default: 5.0" in run("preempt", "status", "--help").output


def test_a_socket_path_too_long_for_sockaddr_un(tmp_path):
    long = str(tmp_path / ("a" * 120))
    n = len(long.encode())
    for args, cmd in ((["preempt", "serve", "--pid", "1", "--dry-run", "--socket", long], "preempt serve"),
                      (["workload", "online", "--controller-socket", long], "workload")):
        opt = "--socket" if cmd == "preempt serve" else "--controller-socket"
        assert one_line(run(*args), 2) == (f"Error: Invalid value for '{opt}': {long} is {n} bytes, longer than a Unix socket path can be (107): "
                                           f"pick a shorter path (e.g. under /tmp or /run): see 'gpreempt-trace {cmd} --help'")
    from gpreempt_trace.control.service import _bind
    from gpreempt_trace.errors import GptError

    with pytest.raises(GptError) as e:
        _bind(long)
    assert e.value.line() == f"socket path {long} is {n} bytes, longer than a Unix socket path can be (107): pick a shorter --socket path (e.g. under /tmp or /run)"


# ---- other commands ---------------------------------------------------------------------------------
def test_compare_by_empty_is_a_usage_error(r1):
    assert one_line(run("compare", "--by", "", r1), 2) == \
        "Error: Invalid value for '--by': empty: give scheme or a meta.json label key (e.g. --by model): see 'gpreempt-trace compare --help'"


def test_doctor_btf_given_a_file_says_so(tmp_path):
    f = tmp_path / "vmlinux"
    f.write_bytes(b"\x9f\xeb")
    assert one_line(run("doctor", "--btf", f), 1) == (
        f"Error: --btf {f} is a file, not a directory: pass the directory holding it (files vmlinux and amdgpu, like /sys/kernel/btf); "
        "`btf build -o DIR/` writes one")


def test_bench_help_and_unknown_names():
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parent.parent
    names = ", ".join(sorted(f.stem.removeprefix("bench_") for f in (repo / "bench").glob("bench_*.py")))
    assert names.startswith("control, debugfs, lab, query, recorder")  # the files this test must see
    p = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.splitlines()[0] == "usage: python -m bench [NAME ...]", p
    assert f"Names: {names}" in p.stdout  # every bench/bench_*.py, none other
    p = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [f"error: unknown bench 'nope': choose from {names} (or none for all)"]


# ---- record: SIGTERM during its start-up ------------------------------------------------------------
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")


@root_only
def test_sigterm_while_planning_leaves_no_trace(tmp_path, monkeypatch):
    import signal

    from gpreempt_trace.recorder import runtime

    real = runtime.Recorder._plan

    def plan(self):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the probes are planned (in the loader child)
        return real(self)

    monkeypatch.setattr(runtime.Recorder, "_plan", plan)
    before = signal.getsignal(signal.SIGTERM)
    res = run("record", "-o", tmp_path / "t", "--probes", "ioctl", "--kfd-path", "/dev/null", "--duration", "5")
    assert one_line(res, 143) == ("Error: record stopped by SIGTERM during start-up (planning the probes): no trace was written: "
                                  "run it again and stop it once it records (its status line, or recorder.recording_since_ns in meta.json)")
    assert not (tmp_path / "t").exists()
    assert signal.getsignal(signal.SIGTERM) == before


@root_only
def test_sigterm_while_compiling_closes_the_trace(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    repo = pathlib.Path(__file__).resolve().parent.parent
    t = tmp_path / "t"
    p = subprocess.Popen([sys.executable, "-m", "gpreempt_trace.cli.main", "record", "-o", str(t), "--probes", "ioctl", "--kfd-path", "/dev/null",
                          "--duration", "60"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while not (t / "meta.json").exists():  # the trace exists from here; the BPF compile (seconds) comes next
        assert p.poll() is None and time.monotonic() < end, p.communicate()
        time.sleep(0.005)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    # the BPF compile takes seconds; the step before it (no --snapshot-interval: nothing to open) about a millisecond
    step = "opening debugfs" if "(opening debugfs)" in err else "compiling the BPF program"
    assert err.splitlines() == [f"Error: record stopped by SIGTERM during start-up ({step}): {t} is closed and holds no events: "
                                "run it again and stop it once it records (its status line, or recorder.recording_since_ns in meta.json)"]
    meta = json.loads((t / "meta.json").read_text())
    assert meta["stop_ns"] is not None and meta["recorder"]["stop_reason"] == f"SIGTERM during start-up ({step})"
    assert meta["counters"]["events_written"] == 0
    assert run("query", "events.overview", t, "--format", "csv").exit_code == 0


def test_workload_with_a_controller_answering_non_utf8_is_one_error_line(fake_service):
    s = fake_service(b"\xff\xfe\n")
    res = run("workload", "online", "--backend", "numpy", "--duration", "0.5", "--preempt-policy", "per-request", "--controller-socket", s)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    lines = res.output.splitlines()
    assert [ln for ln in lines if ln.startswith("Error:")] == [lines[-1]]
    assert lines[-1] == (f"Error: {s} answered preempt with b'\\xff\\xfe', not a preempt service answer (a JSON object with \"ok\": true|false): "
                         "give the socket of `gpreempt-trace preempt serve`")


@pytest.mark.parametrize("value", ["", " , "])
def test_record_empty_probes_is_not_the_default(tmp_path, value):
    assert one_line(run("record", "-o", tmp_path / "t", "--probes", value, "--duration", "1"), 1) == \
        "Error: no probe group given: choose from kfd,ioctl"
    assert not (tmp_path / "t").exists()


@root_only
def test_record_empty_kfd_path_is_named(tmp_path):
    assert one_line(run("record", "-o", tmp_path / "t", "--probes", "ioctl", "--kfd-path", "", "--duration", "1"), 1) == \
        "Error: --kfd-path is empty: give the KFD device node (/dev/kfd) with --kfd-path"
    assert not (tmp_path / "t").exists()
