"""`dlbench doctor [SUITE]`: the first command on a new machine. A table of what this host
has (orchestrator/doctor.py checks it), with what to do for each line that is not ok.
Exit 0 when nothing blocks (the suite, or without one: any run at all), 1 when a FAIL line
does; a suite file that does not load is the usual one-line error (exit 2).
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.cli.common import say

COLUMNS = ("check", "status", "detail")


def cmd_doctor(args) -> int:
    from orchestrator import doctor

    needs, suite_row = (_suite_needs(args.suite) if args.suite else (doctor.Needs(), None))
    rows = doctor.run_checks(needs, doctor.Host.probe(), Path(args.results) if args.results else None)
    if suite_row is not None:
        rows.insert(0, suite_row)
    say(f"dlbench doctor: {'suite ' + args.suite if args.suite else 'this host'}")
    for line in format_table(rows):
        say(line)
    blocking = [row.name for row in rows if row.status == doctor.FAIL]
    if blocking:
        what = f"suite {needs.suite}" if needs.suite else "any run"
        say(f"{len(blocking)} problem(s) block {what} here: {', '.join(blocking)}")
        return 1
    say("nothing blocks " + (f"suite {needs.suite}" if needs.suite else "runs") + " here")
    return 0


def _suite_needs(path: str):
    """What the suite needs, and a line for the suite itself: a plan this host cannot run
    (more CPUs than it has...) is a FAIL line, a malformed file an error."""
    from orchestrator import doctor
    from orchestrator.errors import DlbenchError
    from orchestrator.plan.rules import Target
    from orchestrator.plan.suite import load_suite

    try:
        suite = load_suite(path, allow_large=True)
    except DlbenchError as exc:
        suite = load_suite(path, target=Target.this_host(runs_here=False), allow_large=True)
        return doctor.Needs.of_suite(suite), doctor.Check(
            "suite", doctor.FAIL, str(exc), f"dlbench plan {path} --other-host shows the plan; "
                                            "change what this host lacks")
    devices = ", ".join(sorted(suite.devices))
    row = doctor.Check("suite", doctor.OK, f"{suite.name}: {len(suite.runs)} run(s) on {devices}")
    if suite.warnings:
        row = doctor.Check("suite", doctor.WARN, f"{row.detail}; {suite.warnings[0]}",
                           f"dlbench plan {path} shows every warning")
    return doctor.Needs.of_suite(suite), row


def format_table(rows) -> list[str]:
    """check | status | detail, aligned; under a line that is not ok, what to do. `say`
    escapes what came from outside (GPU names, engine errors, paths)."""
    width = max(len(COLUMNS[0]), *(len(row.name) for row in rows))
    lines = [f"  {COLUMNS[0]:<{width}}  {COLUMNS[1]:<6}  {COLUMNS[2]}"]
    for row in rows:
        lines.append(f"  {row.name:<{width}}  {row.status:<6}  {row.detail}")
        if row.status != "ok" and row.fix:
            lines.append(f"  {'':<{width}}  {'':<6}  -> {row.fix}")
    return lines


def add_doctor_command(sub) -> None:
    p = sub.add_parser("doctor", help="check what this host can run (first thing on a new machine)",
                       description="Checks the Docker engine, the local backend, the NVIDIA runtime, "
                                   "driver and GPU architectures against the cuda images, datasets, "
                                   "free disk, the base image and the framework images; each line "
                                   "that is not ok says what to do. Exit 1 when something blocks "
                                   "SUITE (without one: when nothing could run at all).")
    p.add_argument("suite", nargs="?", help="a suite file: judge what it needs (default: the host alone)")
    p.add_argument("--results", help="results root to check for space (default: results/ or $DLBENCH_RESULTS)")
    p.set_defaults(func=cmd_doctor)
