"""The service's wire format, one place for both ends: one JSON object per line each way.

The hot requests (preempt/resume/status with no arguments) have one fixed spelling, which the client
sends pre-encoded and the service recognises without a JSON parse; any other spelling of the same
request is parsed as JSON and means the same. A preempt/resume answer is formatted directly (no
dict walk in the JSON encoder); every other answer goes through json.dumps. Both are compact JSON.
The service's fast path (owner.Controller.quick) keeps one template per distinct result
(call_template): only the two timestamps and seq are formatted per call.
"""
from __future__ import annotations

import json

_dumps = json.JSONEncoder(separators=(",", ":")).encode

# op -> the line a client sends for it without arguments (and the service's shortcut for it)
PLAIN = {op: json.dumps({"op": op}).encode() + b"\n" for op in ("preempt", "resume", "status")}
_KNOWN = {line[:-1]: op for op, line in PLAIN.items()}

# the keys of a preempt/resume answer (schemes.CallResult.as_dict + seq), in order
CALL_KEYS = ("op", "ok", "label", "errno", "ret", "queue_ids", "queues", "ts_request_ns", "ts_done_ns", "issued", "seq")
_CALL = ('{"op":%s,"ok":%s,"label":%s,"errno":%d,"ret":%s,"queue_ids":[%s],"queues":[%s],'
         '"ts_request_ns":%d,"ts_done_ns":%d,"issued":%s,"seq":%d}\n')
_BOOL = {True: "true", False: "false"}


def request(op: str, kw: dict) -> bytes:
    """The line for request `op` with arguments `kw` (None values left out)."""
    kw = {k: v for k, v in kw.items() if v is not None}
    if not kw and op in PLAIN:
        return PLAIN[op]
    return _dumps({"op": op, **kw}).encode() + b"\n"


def parse_request(line: bytes) -> tuple[str, dict]:
    """(op, arguments) of one request line (no newline); ValueError when it is not a JSON object with "op"."""
    op = _KNOWN.get(line)
    if op is not None:
        return op, {}
    try:
        req = json.loads(line)
        return req.pop("op"), req
    except (ValueError, KeyError, AttributeError, TypeError):
        raise ValueError("bad request: one JSON object with \"op\" per line") from None


_scan = json.JSONDecoder().scan_once  # json.loads' own scanner, without its whitespace handling


def parse_answer(line: bytes):
    """The JSON value of one answer line (no newline), as json.loads gives it; None when it is not JSON."""
    try:
        text = line.decode()
        obj, end = _scan(text, 0)
        if end == len(text):
            return obj
    except (ValueError, StopIteration):  # not UTF-8, not JSON at 0: json.loads decides
        pass
    try:
        return json.loads(line.decode())
    except ValueError:  # not UTF-8 (UnicodeDecodeError) or not JSON
        return None


_QUOTED: dict = {}  # label / op / queue result string -> its JSON (a few dozen distinct ones)


def _s(x) -> str:
    q = _QUOTED.get(x)
    if q is None:
        q = json.dumps(x)
        if isinstance(x, str) and len(_QUOTED) < 256:
            _QUOTED[x] = q
    return q


def answer(ans: dict) -> bytes:
    """One answer line."""
    if len(ans) == len(CALL_KEYS) and "queues" in ans and "seq" in ans:
        try:
            ret = ans["ret"]
            return (_CALL % (_s(ans["op"]), _BOOL[ans["ok"]], _s(ans["label"]), ans["errno"],
                             "null" if ret is None else "%d" % ret,
                             ",".join(["%d" % q for q in ans["queue_ids"]]),
                             ",".join(["[%d,%s,%d]" % (q, _s(r), w) for q, r, w in ans["queues"]]),
                             ans["ts_request_ns"], ans["ts_done_ns"], _BOOL[ans["issued"]], ans["seq"])).encode()
        except (KeyError, TypeError, ValueError):
            pass  # not the shape it looked like: the general encoder
    return _dumps(ans).encode() + b"\n"


_HOLES = (-7_000_000_000_000_000_001, -7_000_000_000_000_000_002, -7_000_000_000_000_000_003)  # no real value


def call_template(ans: dict) -> bytes | None:
    """answer(ans) as a bytes template whose `%d`s are ts_request_ns, ts_done_ns and seq, in that order:
    `call_template(ans) % (t0, t1, seq) == answer({**ans, "ts_request_ns": t0, "ts_done_ns": t1, "seq": seq})`.
    None when those three do not come in that order."""
    line = answer({**ans, "ts_request_ns": _HOLES[0], "ts_done_ns": _HOLES[1], "seq": _HOLES[2]}).replace(b"%", b"%%")
    marks = [b"%d" % h for h in _HOLES]
    if [line.count(m) for m in marks] != [1, 1, 1] or not line.index(marks[0]) < line.index(marks[1]) < line.index(marks[2]):
        return None
    for m in marks:
        line = line.replace(m, b"%d")
    return line
