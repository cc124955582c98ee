"""`dlbench plan | run | status | check`: what a user does with a suite."""
from __future__ import annotations

import json
from pathlib import Path

from orchestrator.cli.common import ALLOW_LARGE_HELP, SYNTHETIC_ONLY_HELP, add_backend_options, say, warn
from orchestrator.errors import DlbenchError
from orchestrator.paths import results_root


def cmd_plan(args) -> int:
    """The plan for this host by default, as `run` would check it: every backend runs here
    today, so a plan that passes must not fail on `run`. --other-host turns what this host
    lacks (cpus, cpuset) into warning lines, for a suite meant for another machine."""
    from orchestrator.execution.runner import unsupported
    from orchestrator.plan.rules import Target
    from orchestrator.plan.suite import format_plan, load_suite

    suite = load_suite(args.suite, target=Target.this_host(runs_here=not args.other_host),
                       allow_large=args.allow_large)
    if args.synthetic_only:
        suite = suite.synthetic_only()
    for line in suite.warnings:
        warn(line)
    say(format_plan(suite))
    for run in suite.runs:  # recorded as such by `run`, never started (contract.registry)
        reason = unsupported(run)
        if reason:
            say(f"{run.run_id}: unsupported, will not run: {reason}")
    if args.json:
        say(json.dumps([run.to_dict() for run in suite.runs], indent=2))
    return 0


def cmd_run(args) -> int:
    from orchestrator.cli.bundle import verified_line
    from orchestrator.execution.backends import runs_on_this_host, select_backend, use_existing_environments
    from orchestrator.execution.resume import load_plan, recorded_outcome, resume_suite
    from orchestrator.execution.runner import run_suite
    from orchestrator.plan.rules import Target
    from orchestrator.plan.suite import load_suite
    from orchestrator.results.directory import ResultsDir

    if bool(args.suite) == bool(args.resume):
        raise DlbenchError("run: give either a suite file or --resume RESULTS_DIR")
    if args.resume:
        suite, planned_backend = load_plan(Path(args.resume))
        if args.backend not in ("auto", planned_backend):
            raise DlbenchError(f"--backend {args.backend}: {args.resume} was run with the "
                               f"{planned_backend} backend; resume it with that one")
        backend = select_backend(planned_backend, say=say, build=not args.no_build)
    else:
        suite = load_suite(args.suite, allow_large=args.allow_large,
                           target=Target.this_host(runs_here=runs_on_this_host(args.backend)))
        if args.synthetic_only:
            suite = suite.synthetic_only()
        for line in suite.warnings:
            warn(line)
        backend = select_backend(args.backend, say=say, build=not args.no_build)
    if args.no_build:
        use_existing_environments(backend)
    if args.detach:
        detach(backend)
    if args.registry:
        use_registry(suite, backend, args.registry)
    if args.resume:
        results = resume_suite(ResultsDir(Path(args.resume)), suite, backend, say=say)
    else:
        results = run_suite(suite, backend, Path(args.results) if args.results else results_root(),
                            say=say)
    if args.detach:
        return 0  # nothing gathered yet: `dlbench status`, then `--resume`, make the report
    say(f"Report: {results.path / 'report.html'}")
    verify_code, verify_lines = verified_line(results.path)
    outcomes = [recorded_outcome(results, run.run_id) for run in suite.runs]
    # a policy a framework cannot do is a finding of the suite, not a failure of it
    skipped = outcomes.count("unsupported")
    bad = [o for o in outcomes if o not in ("ok", "unsupported")]
    if skipped:
        say(f"{skipped} of {len(outcomes)} run(s) unsupported by their framework (reasons in the report).")
    if bad:
        say(f"{len(bad)} of {len(outcomes)} run(s) did not finish ok (see the report).")
    for line in verify_lines:  # last: the path a user publishes, and whether it is intact
        say(line)
    return 1 if bad or verify_code else 0


def detach(backend) -> None:
    from orchestrator.execution.backends import BACKENDS, backend_class, one_of
    from orchestrator.execution.backends.base import ScheduledBackend

    if not isinstance(backend, ScheduledBackend):
        able = [name for name in BACKENDS if issubclass(backend_class(name), ScheduledBackend)]
        raise DlbenchError(f"--detach applies to the {one_of(able)} backend only: the "
                           f"{backend.name} backend runs each run itself, here")
    backend.detach = True


def use_registry(suite, backend, address: str) -> None:
    """--registry: images reach the slurm backend's nodes through this registry (recorded
    in plan.json's slurm block, so a resume uses it too)."""
    from orchestrator.images.registry import REGISTRY_RE

    if backend.name != "slurm":
        raise DlbenchError(f"--registry applies to the slurm backend only: the {backend.name} backend "
                           "runs the images where they are built")
    if not REGISTRY_RE.fullmatch(address):
        raise DlbenchError(f"--registry: {address!r} is not HOST[:PORT][/PREFIX] (e.g. registry.lab:5000)")
    suite.slurm = {**(suite.slurm or {}), "registry": address}


# What `dlbench status` calls a scheduler's job state.
_WAITING = {"PENDING": "queued", "REQUEUED": "queued", "CONFIGURING": "starting",
            "RUNNING": "running", "COMPLETING": "ending", "SUSPENDED": "suspended"}


def cmd_status(args) -> int:
    """Per run: done (its outcome), queued, running (on which node), or ended and waiting
    to be gathered by --resume; from the results directory and, for a scheduler's jobs,
    the scheduler's own view."""
    from orchestrator.execution.backends import BACKENDS, backend_class
    from orchestrator.execution.backends.base import ScheduledBackend
    from orchestrator.execution.resume import load_plan, recorded_outcome
    from orchestrator.results.directory import ResultsDir

    path = Path(args.results_dir)
    suite, backend_name = load_plan(path)
    results = ResultsDir(path)
    jobs = {}
    if backend_name in BACKENDS and issubclass(backend_class(backend_name), ScheduledBackend):
        observer = backend_class(backend_name).observer()  # type: ignore[attr-defined]
        jobs = observer.status(path, [run.run_id for run in suite.runs])
    rows = [("run", "state", "node", "job", "detail")]
    counts: dict[str, int] = {}
    for run in suite.runs:
        outcome, job = recorded_outcome(results, run.run_id), jobs.get(run.run_id)
        if outcome is not None and (outcome != "error" or job is None or job.state not in _WAITING):
            state, kind = f"done: {outcome}", "done"
        elif job is not None:
            kind = _WAITING.get(job.state, "ended")
            state = kind if kind != "ended" else f"ended ({job.state}), not gathered"
        else:
            state = kind = "not started"
        counts[kind] = counts.get(kind, 0) + 1
        rows.append((run.run_id, state, (job.node if job else None) or "-",
                     job.job_id if job else "-", (job.detail if job else None) or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    say(f"{path}: suite {suite.name}, {len(suite.runs)} run(s) on the {backend_name} backend")
    for row in rows:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    say(", ".join(f"{count} {kind}" for kind, count in counts.items()))
    sealed = (path / "MANIFEST.sha256").exists()
    again = any(row[1] == "done: error" for row in rows)  # the orchestrator's trouble: resumed
    if again or counts.get("ended") or counts.get("not started") or (set(counts) == {"done"} and not sealed):
        say(f"Gather, submit what is left and seal the report: dlbench run --resume {path}")
    return 0


def cmd_check(args) -> int:
    from orchestrator.analysis import equivalence, parallel_check
    from orchestrator.execution.backends import select_backend, use_existing_environments
    from orchestrator.execution.runner import run_suite
    from orchestrator.results.directory import load_runs

    if args.judge:
        results_path = Path(args.judge)
    else:
        suite = equivalence.build_check_suite(equivalence.select_rows(args.only), args.device,
                                              equivalence.select_workloads(args.workload),
                                              parallel=not args.no_parallel)
        for line in suite.warnings:
            warn(line)
        backend = select_backend(args.backend, say=say, build=not args.no_build)
        if args.no_build:
            use_existing_environments(backend)
        root = Path(args.results) if args.results else results_root()
        results_path = run_suite(suite, backend, root, say=say).path
    verdicts = equivalence.judge_results(results_path)
    say(equivalence.format_verdicts(verdicts))
    pairs = parallel_check.judge_pairs(load_runs(results_path))
    for line in parallel_check.format_pairs(pairs):
        say(line)
    say(f"Results: {results_path}")
    return 0 if verdicts and all(v.ok for v in verdicts) and all(p.ok for p in pairs) else 1


def add_suite_commands(sub) -> None:
    p = sub.add_parser("plan", help="print the runs a suite expands to, without running anything")
    p.add_argument("suite", help="the suite file (YAML), e.g. suites/quick.yaml")
    p.add_argument("--json", action="store_true", help="also print the run specs as JSON")
    p.add_argument("--synthetic-only", action="store_true", help=SYNTHETIC_ONLY_HELP)
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    p.add_argument("--other-host", action="store_true",
                   help="the suite will run on another machine: CPU limits (cpus, cpuset) beyond "
                        "this host are a warning, not an error")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a suite and write results/<timestamp>-<suite>/")
    p.add_argument("suite", nargs="?", help="the suite file (YAML); or --resume RESULTS_DIR")
    p.add_argument("--resume", metavar="RESULTS_DIR",
                   help="finish a suite that stopped early: re-run what did not end ok")
    add_backend_options(p)
    p.add_argument("--synthetic-only", action="store_true", help=SYNTHETIC_ONLY_HELP)
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    p.add_argument("--registry", metavar="HOST[:PORT]",
                   help="slurm backend: push each image to this registry and have the nodes pull it "
                        "by digest (default: save it to a shared image store)")
    p.add_argument("--detach", action="store_true",
                   help="slurm backend: submit the jobs and return; `dlbench status RESULTS_DIR` "
                        "follows them, `dlbench run --resume RESULTS_DIR` gathers them")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="how far a suite's runs are: done, queued, running (and on "
                                      "which node), or ended and waiting for --resume")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="the directory `dlbench run` printed as Results:")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", help="equivalence check: every framework/API builds the same "
                                     "model (parameters, output shape, initial loss)")
    p.add_argument("--only", action="append", metavar="FRAMEWORK[/API]",
                   help="check these rows only (repeatable; default: every registered row)")
    p.add_argument("--workload", action="append", metavar="WORKLOAD",
                   help="check this workload only (repeatable; default: every workload: "
                        "mnist_cnn on Fashion-MNIST, the CIFAR CNNs and the IMDB LSTM on "
                        "synthetic data of their datasets' shapes)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="cpu (default) or gpu: the images' cuda flavour")
    p.add_argument("--no-parallel", action="store_true",
                   help="leave out the data-parallel pairs (2 workers against 1, same global "
                        "batch: the same losses), run by default for every row that trains data-parallel")
    add_backend_options(p)
    p.add_argument("--judge", metavar="RESULTS_DIR",
                   help="judge an earlier check's results again instead of running")
    p.set_defaults(func=cmd_check)
