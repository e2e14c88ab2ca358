"""Built-in torch workloads: every model in both roles runs on CPU and writes its markers into a
trace that another process owns; bad options are one-line errors."""
import pytest
from click.testing import CliRunner

from gpreempt_trace import api
from gpreempt_trace.trace import directory as trace
from gpreempt_trace.cli.main import main
from gpreempt_trace.errors import GptError
from gpreempt_trace.workloads.torch_models import MODELS, WorkloadOptions

pytest.importorskip("torch")


def _markers(path):
    con = api.connect([str(path)])
    return con.sql("SELECT kind, seq, ts_ns, value_ns, source, label FROM markers ORDER BY ts_ns, kind").fetchall()


@pytest.mark.parametrize("model", MODELS)
def test_each_model_runs_a_second_in_both_roles_and_writes_markers(tmp_path, model):
    owner = trace.TraceWriter.create(tmp_path / "t")
    on = api.workload("online", model=model, batch=1, rate_hz=10, duration_s=1.0, device="cpu", threads=1, trace=str(tmp_path / "t"))
    off = api.workload("offline", model=model, batch=1, duration_s=1.0, device="cpu", threads=1, trace=str(tmp_path / "t"))
    owner.close()
    assert on.device == off.device == "cpu" and on.iterations >= 1 and off.iterations >= 1
    rows = _markers(tmp_path / "t")
    kinds = [r[0] for r in rows]
    assert kinds.count("request_start") == kinds.count("request_end") == on.iterations
    assert kinds.count("step_start") == kinds.count("step_done") == off.iterations
    assert kinds.count("workload_start") == kinds.count("workload_exit") == 2
    assert {r[4] for r in rows} == {"workload"}
    starts = {r[1]: r for r in rows if r[0] == "request_start"}
    for seq, kind, ts, value, *_ in [(r[1], r[0], r[2], r[3]) for r in rows if r[0] == "request_end"]:
        assert value == ts - starts[seq][2]  # latency = end - scheduled time
    # open loop at 10/s: request k is due 100 ms after request k-1
    due = sorted(r[2] for r in starts.values())
    assert all(b - a == 100_000_000 for a, b in zip(due, due[1:]))
    assert f"role=online model={model} device=cpu policy=none rate_hz=10" in [r[5] for r in rows if r[0] == "workload_start"]


def test_aliases_and_api_checks():
    assert WorkloadOptions("online", model="cnn").check() is None
    with pytest.raises(GptError, match="torch sees no GPU"):
        api.workload("online", device="cuda", max_iterations=1)
    with pytest.raises(GptError, match="needs --controller-socket"):
        api.workload("online", preempt_policy="per-request", device="cpu")
    with pytest.raises(GptError, match="applies to the online role"):
        api.workload("offline", preempt_policy="burst", controller_socket="/x", device="cpu")


@pytest.mark.parametrize("args, msg", [
    (["--duration", "-1"], "'--duration': -1.0 is not in the range 0<x<=10000000"),
    (["--duration", "0"], "'--duration': 0.0 is not in the range 0<x<=10000000"),
    (["--rate", "-5"], "'--rate': -5.0 is not in the range 0<=x<=1000000.0"),
    (["--batch", "0"], "'--batch': 0 is not in the range 1<=x<=1024"),
    (["--iterations", "0"], "'--iterations': 0 is not in the range 1<=x<=9223372036854775807"),
    (["--burst-gap-ms", "-1"], "'--burst-gap-ms': -1.0 is not in the range 0<=x<=3600000"),
])
def test_bad_numbers_are_usage_errors(args, msg):
    res = CliRunner().invoke(main, ["workload", "online", *args])
    assert res.exit_code == 2 and msg in res.output


def test_trace_must_exist():
    res = CliRunner().invoke(main, ["workload", "online", "--trace", "/nonexistent/trace", "--iterations", "1", "--device", "cpu"])
    assert res.exit_code == 1 and "is not a directory" in res.output


@pytest.mark.parametrize("model", ["mlp", "gemm"])
def test_numpy_backend_runs_both_roles_and_writes_the_same_markers(tmp_path, model):
    owner = trace.TraceWriter.create(tmp_path / "t")
    on = api.workload("online", model=model, backend="numpy", batch=1, rate_hz=10, duration_s=0.5, trace=str(tmp_path / "t"))
    off = api.workload("offline", model=model, backend="numpy", batch=1, duration_s=0.5, trace=str(tmp_path / "t"))
    owner.close()
    assert on.device == off.device == "cpu-numpy" and on.iterations >= 1 and off.iterations >= 1
    kinds = [r[0] for r in _markers(tmp_path / "t")]
    assert kinds.count("request_end") == on.iterations and kinds.count("step_done") == off.iterations
    with pytest.raises(GptError, match="--backend numpy runs mlp, gemm, not resnet"):
        api.workload("online", model="resnet", backend="numpy")


def test_a_signal_while_a_marker_is_written_completes_the_marker_then_stops(tmp_path, monkeypatch):
    """SIGTERM that lands inside the marker writer (the lab once saw 'Operation on closed file' from
    this) is held until the marker is written, then ends the loop: every marker is readable, the
    interrupted step_done is there, workload_exit is last."""
    import os
    import signal

    from gpreempt_trace.trace import markers

    real_add = markers.MarkerWriter.add

    def add(self, kind, ts_ns=None, **cols):
        if kind == "step_done" and cols.get("seq") == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside this call
        real_add(self, kind, ts_ns, **cols)

    monkeypatch.setattr(markers.MarkerWriter, "add", add)
    before = signal.getsignal(signal.SIGTERM)
    owner = trace.TraceWriter.create(tmp_path / "t")
    res = api.workload("offline", model="gemm", backend="numpy", batch=1, duration_s=60, trace=str(tmp_path / "t"))
    owner.close()
    assert res.stopped_by == "SIGTERM" and res.iterations == 3
    rows = _markers(tmp_path / "t")
    kinds = [r[0] for r in rows]
    assert kinds.count("step_done") == 3 and kinds[-1] == "workload_exit"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_while_the_exit_marker_is_written_is_held(tmp_path, monkeypatch):
    """Ctrl-C reaches the workload and `experiment`, which then sends SIGTERM: landing while workload_exit
    is written, it must neither reach the caller's handler (the default one kills the process before the
    marker is written; seen in CI) nor cut the marker: the handlers are restored after the last marker."""
    import os
    import signal

    from gpreempt_trace.trace import markers

    real_add = markers.MarkerWriter.add
    delivered = []

    def add(self, kind, ts_ns=None, **cols):
        if (kind == "step_done" and cols.get("seq") == 1) or kind == "workload_exit":
            os.kill(os.getpid(), signal.SIGTERM)
        real_add(self, kind, ts_ns, **cols)

    monkeypatch.setattr(markers.MarkerWriter, "add", add)
    def stand_in(signum, _frame):  # stands for the default action (kill)
        delivered.append(signum)

    caller = signal.signal(signal.SIGTERM, stand_in)
    try:
        owner = trace.TraceWriter.create(tmp_path / "t")
        res = api.workload("offline", model="gemm", backend="numpy", batch=1, duration_s=60, trace=str(tmp_path / "t"))
        owner.close()
        assert signal.getsignal(signal.SIGTERM) is stand_in  # restored at the end
    finally:
        signal.signal(signal.SIGTERM, caller)
    assert res.stopped_by == "SIGTERM" and res.iterations == 2
    assert delivered == []  # the second SIGTERM was held, not passed on mid-write
    kinds = [r[0] for r in _markers(tmp_path / "t")]
    assert kinds[-1] == "workload_exit" and kinds.count("step_done") == 2
