"""Seeded CLI fuzz (issue 24 item 5): every command and subcommand of the click group, each option fed
values its type must refuse (wrong types, negatives, NaN/inf, empty strings, huge numbers, unsuitable
paths), each required option left out, and the trace readers fed malformed traces
(testing/bad_traces.py). Fails on any `internal error`, any traceback, an exit 0 on bad input, or an
error of more than one line.

Commands that need root or run long (record, snapshot, preempt serve/run, workload, experiment ab,
demo, btf build) get only values their option types refuse at parse time; their library entry point is
replaced by a tripwire, so a bad value that got through fails the test instead of running.

GPT_FUZZ_SEED (default 24) and GPT_FUZZ_COUNT (default 300) pick and bound the sample; the seed is printed.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from testing import bad_traces as B
from testing.traces import two_runs

from gpreempt_trace.cli.main import main

SEED = int(os.environ.get("GPT_FUZZ_SEED", "24"))
COUNT = int(os.environ.get("GPT_FUZZ_COUNT", "300"))

# the arguments that make each command reach its options (placeholders: see _fill)
BASE: dict[tuple[str, ...], list[str]] = {
    ("record",): ["-o", "{new}"],
    ("snapshot",): ["-o", "{new}"],
    ("preempt", "serve"): ["--pid", "1", "--dry-run"],
    ("preempt", "run"): ["--pid", "1", "--hold", "0", "--dry-run"],
    ("preempt", "suspend"): ["--socket", "{nosock}"],
    ("preempt", "resume"): ["--socket", "{nosock}"],
    ("preempt", "status"): ["--socket", "{nosock}"],
    ("query",): ["events.overview", "{trace}"],
    ("report",): ["{trace}"],
    ("compare",): ["{trace}", "{trace2}"],
    ("export",): ["--hive", "{new}", "{trace}"],
    ("derive",): ["{trace}"],
    ("synth",): ["--scheme", "A", "--events", "1000", "-o", "{new}"],
    ("doctor",): [],
    ("btf", "build"): [],
    ("exp01",): ["{trace}"],
    ("workload",): ["online"],
    ("experiment", "ab"): ["-o", "{new}"],
    ("demo",): ["-o", "{new}"],
}
# root or long: only parse-time refusals, and the entry point is a tripwire
GUARDED = {("record",), ("snapshot",), ("preempt", "serve"), ("preempt", "run"), ("workload",), ("experiment", "ab"), ("demo",), ("btf", "build")}
TRIPWIRES = ["gpreempt_trace.api.record", "gpreempt_trace.api.snapshot", "gpreempt_trace.api.preempt_serve", "gpreempt_trace.api.preempt_run",
             "gpreempt_trace.api.workload", "gpreempt_trace.api.btf_build", "gpreempt_trace.experiment.demo.run",
             "gpreempt_trace.experiment.ab.run", "gpreempt_trace.experiment.lab.run"]
# the trace readers, for malformed traces
READERS = [["query", "events.overview", "{t}"], ["query", "queues.per_tgid", "{t}", "--format", "json"], ["report", "{t}"],
           ["report", "-o", "{new}", "{t}"], ["compare", "{t}", "{trace2}"], ["export", "--hive", "{new}", "{t}"],
           ["export", "--perfetto", "-o", "{new}.pftrace", "{t}"], ["exp01", "{t}"], ["derive", "{t}"]]


def leaf_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(main)
    out = []

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + (name,))
        else:
            out.append((path, cmd))

    walk(main, ())
    return out


def bad_values(p: click.Parameter, guarded: bool) -> list[str]:
    """Values the parameter must refuse. Guarded commands: only what its type refuses at parse time."""
    t = p.type
    if isinstance(t, click.Choice):
        return ["nope", "", f"{t.choices[0]}x"]
    if isinstance(t, click.IntRange) or t is click.INT:
        vals = ["abc", "1.5", "", "nan", "0x1g"]
        if t.min is not None:
            vals.append(str(t.min - 1))
        if t.max is not None:
            vals += [str(t.max + 1), "9" * 40]
        return vals
    if isinstance(t, click.FloatRange) or t is click.FLOAT:
        vals = ["nan", "inf", "-inf", "abc", "", "1e999"]
        if t.min is not None:
            vals.append(str(t.min) if t.min_open else str(t.min - 1))
        if t.max is not None:
            vals.append(str(t.max * 10 + 1))
        return vals
    if type(t).__name__ == "PowerOfTwo":
        return ["3", "0", "-2", "abc", "", str(t.max * 2)]
    if type(t).__name__ == "SocketPath":
        return ["", "/tmp/" + "s" * 200]
    if isinstance(t, click.Path):
        vals = []
        if not t.file_okay:
            vals.append("{file}")
        if not t.dir_okay:
            vals.append("{dir}")
        if t.exists:
            vals.append("{absent}")
        if not guarded:
            vals.append("")
        return vals
    if guarded:
        return []  # a free string: checked by the command itself, which must not run here
    return ["", "=", "nope nope", "-1"]


SKIP_VALUES = {
    # values that are fine for these options (a free string or path that does not have to exist)
    ("report", "--output"): {"{absent}"},
}


def cases(seed: int) -> list[tuple[str, list[str], str]]:
    """(what, argv template, expected) for every command: 'bad' (non-zero, one Error line) or a damage's
    expectation for the trace readers; plus, drawn with `seed`, pairs of bad values in one command line."""
    out = []
    singles: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for path, cmd in leaf_commands():
        base = BASE[path]
        guarded = path in GUARDED
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag or p.hidden:
                continue
            name = max(p.opts, key=len)
            for v in bad_values(p, guarded):
                if v in SKIP_VALUES.get((path[0], name), ()):
                    continue
                out.append((f"{' '.join(path)} {name} {v!r}", [*path, *base, name, v], "bad"))
                singles.setdefault(path, []).append((name, v))
        for p in cmd.params:  # positional arguments: a trace that is none (absent, a file, an empty folder, "")
            if isinstance(p, click.Argument) and p.name == "traces" and "{trace}" in base:
                for v in ("{absent}", "{file}", "{dir}", ""):
                    out.append((f"{' '.join(path)} {p.name}={v!r}", [*path, *[v if a == "{trace}" else a for a in base]], "bad"))
            if isinstance(p, click.Argument) and p.name == "name":
                for v in ("nope", "", "{file}", "{absent}.sql", "{badsql}"):
                    out.append((f"{' '.join(path)} {p.name}={v!r}", [*path, v, *base[1:]], "bad"))
        for p in cmd.params:
            if p.required and isinstance(p, click.Option):  # left out: one line naming it
                name = max(p.opts, key=len)
                drop = [a for i, a in enumerate(base) if a not in p.opts and (i == 0 or base[i - 1] not in p.opts)]
                out.append((f"{' '.join(path)} without {name}", [*path, *drop], "bad"))
    rng = random.Random(seed)
    for _ in range(len(out) // 4):
        path = rng.choice(sorted(singles))
        (n1, v1), (n2, v2) = rng.sample(singles[path], 2) if len(singles[path]) > 1 else singles[path] * 2
        out.append((f"{' '.join(path)} {n1} {v1!r} {n2} {v2!r}", [*path, *BASE[path], n1, v1, n2, v2], "bad"))
    for name, (_, expected) in B.DAMAGES.items():
        for r in READERS:
            out.append((f"{name}: {' '.join(r[:2])}", r, f"damage:{name}:{expected}"))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    trace, trace2 = two_runs(root / "runs")
    (root / "a_file").write_text("x")
    (root / "a_dir").mkdir()
    (root / "bad.sql").write_text("SELECT FROM WHERE;")
    return {"root": root, "trace": str(trace), "trace2": str(trace2), "nosock": str(root / "no.sock"),
            "file": str(root / "a_file"), "badsql": str(root / "bad.sql"), "dir": str(root / "a_dir"), "absent": str(root / "absent" / "x")}


def _fill(argv: list[str], world: dict, work: Path, t: Path | None) -> list[str]:
    vals = dict(world, new=str(work / "new"), t=str(t) if t else "")
    out = []
    for a in argv:
        for k, v in vals.items():
            a = a.replace("{" + k + "}", str(v))
        out.append(a)
    return out


def _check(what: str, argv: list[str], expected: str, res) -> str | None:
    """Why this result breaks the rule, or None."""
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return f"raised {res.exception!r}"
    if "TRIPWIRE" in out:
        return "the bad value was not refused at parse time: it reached the command's work"
    if "Traceback" in out or "internal error" in out:
        return "internal error / traceback"
    kind = expected.rsplit(":", 1)[-1]
    if kind == "ok":
        return None
    if kind == "warn":
        if res.exit_code == 0 and "warning: skipping segment" not in out:
            return "exit 0 without a warning naming the skipped segment"
        return None
    if res.exit_code == 0:
        return "exit 0 on bad input"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"not one Error line at the end ({len(errors)} Error lines)"
    if any(not (ln.startswith(("warning: ", "Error: "))) for ln in lines):
        return "lines besides warnings and the error"
    return None


def test_every_command_has_base_arguments():
    assert sorted(p for p, _ in leaf_commands()) == sorted(BASE)


def test_cli_fuzz(world, tmp_path, monkeypatch, capsys):
    import importlib

    def tripwire(*a, **k):
        raise AssertionError("TRIPWIRE: a bad value reached the command's work")

    for dotted in TRIPWIRES:
        mod, _, attr = dotted.rpartition(".")
        monkeypatch.setattr(importlib.import_module(mod), attr, tripwire)
    all_cases = cases(SEED)
    rng = random.Random(SEED)
    picked = rng.sample(all_cases, min(COUNT, len(all_cases)))
    with capsys.disabled():
        print(f"\ncli fuzz: seed {SEED} (GPT_FUZZ_SEED), {len(picked)} of {len(all_cases)} cases")
    failures = []
    for i, (what, argv, expected) in enumerate(picked):
        work = tmp_path / f"c{i}"
        work.mkdir()
        t = None
        if expected.startswith("damage:"):
            t = work / "t"
            shutil.copytree(world["trace"], t)
            B.DAMAGES[expected.split(":")[1]][0](t)
        args = _fill(argv, world, work, t)
        res = CliRunner().invoke(main, args, prog_name="gpreempt-trace")
        why = _check(what, args, expected, res)
        if why:
            failures.append(f"{what}: {why}\n    gpreempt-trace {' '.join(repr(a) if not a or ' ' in a else a for a in args)}\n    "
                            + "\n    ".join(res.output.splitlines()[-3:]))
    assert not failures, f"seed {SEED}: {len(failures)} of {len(picked)} cases break the rule:\n" + "\n".join(failures)
