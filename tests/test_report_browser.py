"""The HTML report as a person sees it: headless Chromium at 1400 px over the demo's kinds of traces
(experiment 1's debugfs capture, a synthetic scheme A / B pair). The page measures itself in the
browser (a copy of index.html with a script appended; --dump-dom prints what it wrote): nothing runs
off the right edge, every figure is a decoded image with ink on it, and the numbers each figure carries
(its data-* attributes) are the query modules' aggregates. A screenshot is written beside it
(GPT_REPORT_SCREENSHOT=FILE keeps a copy) to look at.

Chromium comes from `make setup` (apt package `chromium`); the test skips only where it cannot be
installed (not root and not installed)."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpreempt_trace import api, synthetic
from gpreempt_trace.debugfs import MI308X_SAMPLE

WIDTH = 1400
# appended to a copy of index.html: measures the page once it has loaded, into <pre id=measure>
PROBE = """<script>
window.addEventListener('load', () => {
  const right = e => Math.ceil(e.getBoundingClientRect().right);
  const ink = img => {  // fraction of pixels that are not (near) white: an empty plot has almost none
    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) n++;
    return n / (d.length / 4);
  };
  const figs = [...document.querySelectorAll('figure')].map(f => {
    const img = f.querySelector('img');
    return {id: f.id, data: {...f.dataset}, w: img ? img.naturalWidth : 0, h: img ? img.naturalHeight : 0,
            shown_w: img ? img.clientWidth : 0, right: img ? right(img) : 0, ink: img && img.naturalWidth ? ink(img) : 0};
  });
  const m = {innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
             bodyScrollWidth: document.body.scrollWidth, figs,
             tables: [...document.querySelectorAll('table')].map(right), h2: [...document.querySelectorAll('h2')].map(h => h.textContent)};
  const pre = document.createElement('pre'); pre.id = 'measure'; pre.textContent = JSON.stringify(m);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and this is not root (sudo make setup installs the apt package chromium)")
    pytest.fail("chromium is not installed although this is root: make setup installs it (apt package chromium)")


def _browse(page: Path, tmp: Path, *args: str) -> str:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", *args, page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    exp = tmp / "exp01"
    api.snapshot_import(str(exp), [str(p) for p in sorted(Path(MI308X_SAMPLE).iterdir())], {"model": "mi308x-sample"})
    a = synthetic.generate(tmp / "synthetic-A", "A", 4000, 1)
    b = synthetic.generate(tmp / "synthetic-B", "B", 4000, 2)
    traces = [str(exp), str(a), str(b)]
    index = api.report(traces, str(tmp / "report"))
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    dom = _browse(probe, tmp, f"--window-size={WIDTH},1000", "--dump-dom")
    m = re.search(r"<pre id=\"measure\">(.*?)</pre>", dom, re.S)
    assert m, "the page did not measure itself: " + dom[-500:]
    shot = tmp / "report-1400.png"
    _browse(index, tmp, f"--window-size={WIDTH},9000", f"--screenshot={shot}")
    if os.environ.get("GPT_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["GPT_REPORT_SCREENSHOT"])
    return traces, json.loads(html.unescape(m.group(1))), shot


def test_report_fits_1400px(report):
    _, m, shot = report
    assert m["innerWidth"] == WIDTH
    assert m["scrollWidth"] <= WIDTH and m["bodyScrollWidth"] <= WIDTH  # no horizontal scrolling
    assert m["tables"] and max(m["tables"]) <= WIDTH  # no table runs off the right edge (the A-vs-B one included)
    assert all(f["right"] <= WIDTH for f in m["figs"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_has_data_from_the_aggregates(report):
    traces, m, _ = report
    figs = {f["id"]: f for f in m["figs"]}
    assert sorted(figs) == ["collateral", "latency_cdf", "queue_counts", "timeline"]
    for f in figs.values():  # decoded, shown, and drawn on (a blank plot is ~all white)
        assert f["w"] > 300 and f["h"] > 200 and f["shown_w"] > 300 and f["ink"] > 0.05, f
    # the numbers behind each figure are the modules' aggregates
    summ = api.query("preempt.summary", traces).to_pylist()
    want = {f"{r['scheme']}:{r['metric']}": r["samples"] for r in summ if r["metric"] in ("preempt_latency_ns", "resume_latency_ns")}
    got = dict(kv.split("=") for kv in figs["latency_cdf"]["data"]["samples"].split())
    assert {k: int(v) for k, v in got.items()} == want and all(want.values())
    counts = api.query("queues.counts", traces).to_pylist()
    assert int(figs["queue_counts"]["data"]["queues"]) == sum(r["queues"] for r in counts) > 0
    coll = api.query("preempt.collateral", traces).to_pylist()
    assert int(figs["collateral"]["data"]["collateralUnmaps"]) == sum(1 for r in coll if r["collateral"]) > 0
    tl = figs["timeline"]["data"]
    assert int(tl["queues"]) > 0 and int(tl["unmaps"]) > 0 and int(tl["markers"]) == 4  # preempt/resume request and done
    # experiment 1 has its own section; the A-vs-B comparison is there
    assert "Experiment 1: queues per model, their ids, stability, MQD → HQD" in m["h2"]
