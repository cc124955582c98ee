"""`dlbench`: plan | run | check | report | verify | pack | compare | rerun | images | data | sysinfo.

Every user-fixable problem surfaces as `dlbench: error: <one line>` and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .errors import DlbenchError
from .paths import results_root


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_plan(args) -> int:
    from .suite import format_plan, load_suite

    suite = load_suite(args.suite)
    if args.synthetic_only:
        suite = suite.synthetic_only()
    print(format_plan(suite))
    if args.json:
        print(json.dumps([run.to_dict() for run in suite.runs], indent=2))
    return 0


def cmd_run(args) -> int:
    from .backends import select_backend
    from .cli_bundle import verified_line
    from .resume import finished_ok, load_plan, resume_suite
    from .results import ResultsDir
    from .runner import run_suite
    from .suite import load_suite

    if bool(args.suite) == bool(args.resume):
        raise DlbenchError("run: give either a suite file or --resume RESULTS_DIR")
    if args.resume:
        suite, planned_backend = load_plan(Path(args.resume))
        if args.backend not in ("auto", planned_backend):
            raise DlbenchError(f"--backend {args.backend}: {args.resume} was run with the "
                               f"{planned_backend} backend; resume it with that one")
        backend = select_backend(planned_backend, say=_say)
    else:
        suite = load_suite(args.suite)
        if args.synthetic_only:
            suite = suite.synthetic_only()
        backend = select_backend(args.backend, say=_say)
    if args.no_build:
        if backend.name != "docker":
            raise DlbenchError("--no-build applies to the docker backend only")
        backend.build = False
    if args.resume:
        results = resume_suite(ResultsDir(Path(args.resume)), suite, backend, say=_say)
    else:
        results = run_suite(suite, backend, Path(args.results) if args.results else results_root(),
                            say=_say)
    _say(f"Report: {results.path / 'report.html'}")
    verify_code, verify_lines = verified_line(results.path)
    outcomes = ["ok" if finished_ok(results, run.run_id) else "not ok" for run in suite.runs]
    bad = [o for o in outcomes if o != "ok"]
    if bad:
        _say(f"{len(bad)} of {len(outcomes)} run(s) did not finish ok (see the report).")
    for line in verify_lines:  # last: the path a user publishes, and whether it is intact
        _say(line)
    return 1 if bad or verify_code else 0


def cmd_check(args) -> int:
    from . import equivalence
    from .backends import select_backend
    from .runner import run_suite

    if args.judge:
        results_path = Path(args.judge)
    else:
        suite = equivalence.build_check_suite(equivalence.select_rows(args.only), args.device,
                                              equivalence.select_workloads(args.workload))
        backend = select_backend(args.backend, say=_say)
        if args.no_build:
            if backend.name != "docker":
                raise DlbenchError("--no-build applies to the docker backend only")
            backend.build = False
        root = Path(args.results) if args.results else results_root()
        results_path = run_suite(suite, backend, root, say=_say).path
    verdicts = equivalence.judge_results(results_path)
    _say(equivalence.format_verdicts(verdicts))
    _say(f"Results: {results_path}")
    return 0 if verdicts and all(v.ok for v in verdicts) else 1


def _docker_client(purpose: str):
    from .backends.docker import connect

    client, problem = connect()
    if client is None:
        raise DlbenchError(f"{purpose} needs a Docker engine ({problem})")
    return client


def cmd_images_build(args) -> int:
    from . import images

    client = _docker_client("building images")
    names = args.frameworks or sorted(images.load_images())
    for name in names:
        images.get_spec(name, args.flavour)  # unknown names fail before anything is built
    options = images.BuildOptions.from_env()
    for name in names:
        _say(f"Building {name}/{args.flavour}")
        info = images.ensure_image(client, name, args.flavour, options,
                                   progress=lambda line: _say(f"    {line}"), rebuild=args.rebuild)
        _say(f"    {info.tag} {info.id}")
    return 0


def cmd_images_base(args) -> int:
    from . import images

    client = _docker_client("importing a base image")
    _say(images.make_base_image(client, tag=args.tag))
    return 0


def cmd_sysinfo(args) -> int:
    from . import sysinfo
    from .backends.docker import connect

    client, _ = connect()
    print(json.dumps(sysinfo.collect(client), indent=2))
    return 0


SYNTHETIC_ONLY_HELP = ("only the suite's runs on synthetic data (e.g. the speed half of an "
                       "input-bound suite on a machine without the dataset)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="print the runs a suite expands to, without running anything")
    p.add_argument("suite")
    p.add_argument("--json", action="store_true", help="also print the run specs as JSON")
    p.add_argument("--synthetic-only", action="store_true", help=SYNTHETIC_ONLY_HELP)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a suite and write results/<timestamp>-<suite>/")
    p.add_argument("suite", nargs="?")
    p.add_argument("--resume", metavar="RESULTS_DIR",
                   help="finish a suite that stopped early: re-run what did not end ok")
    p.add_argument("--backend", default=os.environ.get("BACKEND") or "auto",
                   help="auto (default; Docker if reachable, else local), docker or local")
    p.add_argument("--results", help="results root (default: results/ or $DLBENCH_RESULTS)")
    p.add_argument("--no-build", action="store_true", help="use existing images only")
    p.add_argument("--synthetic-only", action="store_true", help=SYNTHETIC_ONLY_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="equivalence check: every framework/API builds the same "
                                     "model (parameters, output shape, initial loss)")
    p.add_argument("--only", action="append", metavar="FRAMEWORK[/API]",
                   help="check these rows only (repeatable; default: every registered row)")
    p.add_argument("--workload", action="append", metavar="WORKLOAD",
                   help="check this workload only (repeatable; default: every workload: "
                        "mnist_cnn on Fashion-MNIST, the CIFAR CNNs and the IMDB LSTM on "
                        "synthetic data of their datasets' shapes)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--backend", default=os.environ.get("BACKEND") or "auto",
                   help="auto (default; Docker if reachable, else local), docker or local")
    p.add_argument("--results", help="results root (default: results/ or $DLBENCH_RESULTS)")
    p.add_argument("--no-build", action="store_true", help="use existing images only")
    p.add_argument("--judge", metavar="RESULTS_DIR",
                   help="judge an earlier check's results again instead of running")
    p.set_defaults(func=cmd_check)

    from .cli_bundle import add_bundle_commands

    add_bundle_commands(sub)  # verify | pack | report | compare | rerun

    p = sub.add_parser("images", help="build the framework images")
    isub = p.add_subparsers(dest="images_command", required=True)
    b = isub.add_parser("build", help="build (or reuse) framework images")
    b.add_argument("frameworks", nargs="*")
    b.add_argument("--flavour", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--rebuild", action="store_true")
    b.set_defaults(func=cmd_images_build)
    b = isub.add_parser("base", help="make a local Debian Python base image (no registry needed)")
    b.add_argument("--tag", default="local/bookworm-python:3.11")
    b.set_defaults(func=cmd_images_base)

    from .cli_data import add_data_commands

    add_data_commands(sub)

    p = sub.add_parser("sysinfo", help="print what system.json records about this host")
    p.set_defaults(func=cmd_sysinfo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DlbenchError as exc:
        # One line; a few errors carry detail below it (a build log's tail), shown on request.
        first, _, detail = str(exc).partition("\n")
        print(f"dlbench: error: {first}", file=sys.stderr)
        if detail and os.environ.get("DLBENCH_DEBUG"):
            print(detail, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dlbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dlbench plan ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit
        return 128 + 13  # as a process killed by SIGPIPE
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, details on request
        if os.environ.get("DLBENCH_DEBUG"):
            traceback.print_exc()
        print(f"dlbench: internal error: {type(exc).__name__}: {exc} "
              "(set DLBENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
