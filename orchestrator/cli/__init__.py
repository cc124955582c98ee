"""`dlbench`: plan | run | status | check | report | verify | sign | pack | compare | site | rerun |
images | data | sysinfo.

Every user-fixable problem surfaces as `dlbench: error: <one line>` and exit 2.
One module per command group (suite, bundle, images, data); this one builds the
parser from them and turns exceptions into one line and an exit code.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from orchestrator.cli.common import printable
from orchestrator.errors import DlbenchError


class _Parser(argparse.ArgumentParser):
    """argparse's own lines (usage, its errors) go through `printable` too: they repeat
    what was typed, which may hold control characters."""

    def _print_message(self, message, file=None):
        super()._print_message(printable(message) if message else message, file)


def build_parser() -> argparse.ArgumentParser:
    from orchestrator.cli.bundle import add_bundle_commands
    from orchestrator.cli.data import add_data_commands
    from orchestrator.cli.doctor import add_doctor_command
    from orchestrator.cli.images import add_image_commands, add_sysinfo_command
    from orchestrator.cli.site import add_site_command
    from orchestrator.cli.suite import add_suite_commands
    from orchestrator.images.context import dlbench_version

    parser = _Parser(prog="dlbench", description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--version", action="version", version=f"%(prog)s {dlbench_version()}",
                        help="print dlbench's version and exit")
    sub = parser.add_subparsers(dest="command", required=True,
                                help="what to do (`dlbench COMMAND --help`: its options)")
    add_suite_commands(sub)     # plan | run | status | check
    add_bundle_commands(sub)    # verify | sign | pack | report | compare | rerun
    add_image_commands(sub)     # images build | base
    add_data_commands(sub)      # data list | fetch | import | verify
    add_sysinfo_command(sub)
    add_doctor_command(sub)     # doctor [SUITE]
    add_site_command(sub)       # site BUNDLE... -o DIR
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DlbenchError as exc:
        # One line; a few errors carry detail below it (a build log's tail), shown on request.
        first, _, detail = str(exc).partition("\n")
        print(f"dlbench: error: {printable(first)}", file=sys.stderr)
        if detail and os.environ.get("DLBENCH_DEBUG"):
            print(printable(detail), file=sys.stderr)
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
        message = printable(str(exc)).replace("\n", " ")
        print(f"dlbench: internal error: {type(exc).__name__}: {message} "
              "(set DLBENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
