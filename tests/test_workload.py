"""Built-in torch workloads write request/step markers into a trace that another process owns."""
import pytest
from click.testing import CliRunner

from gpreempt_trace import api, trace
from gpreempt_trace.cli import main
from gpreempt_trace.errors import GptError

pytest.importorskip("torch")


def _markers(path):
    con = api.connect([str(path)])
    return con.sql("SELECT kind, seq, value_ns IS NOT NULL AS timed, source FROM markers ORDER BY ts_ns, kind").fetchall()


def test_online_markers_pair_by_seq(tmp_path):
    owner = trace.TraceWriter.create(tmp_path / "t")
    res = api.workload("online", model="mlp", batch=2, rate_hz=0, duration_s=60, max_iterations=3, device="cpu", trace=str(tmp_path / "t"))
    owner.close()
    assert res.iterations == 3 and len(res.latencies_ns) == 3 and res.device == "cpu"
    rows = _markers(tmp_path / "t")
    assert [r[0] for r in rows] == ["workload_start"] + ["request_start", "request_end"] * 3 + ["workload_exit"]
    assert [r[1] for r in rows if r[0] == "request_end"] == [0, 1, 2]
    assert all(r[2] for r in rows if r[0] == "request_end") and {r[3] for r in rows} == {"workload"}


def test_offline_steps(tmp_path):
    owner = trace.TraceWriter.create(tmp_path / "t")
    res = api.workload("offline", model="cnn", batch=2, duration_s=60, max_iterations=2, device="cpu", trace=str(tmp_path / "t"))
    owner.close()
    assert res.iterations == 2
    assert [r[0] for r in _markers(tmp_path / "t")] == ["workload_start", "step_done", "step_done", "workload_exit"]


def test_bad_input():
    with pytest.raises(GptError, match="torch sees no GPU"):
        api.workload("online", device="cuda", max_iterations=1)
    res = CliRunner().invoke(main, ["workload", "online", "--trace", "/nonexistent/trace", "--iterations", "1", "--device", "cpu"])
    assert res.exit_code == 1 and "is not a directory" in res.output
