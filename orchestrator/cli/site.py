"""`dlbench site BUNDLE... -o DIR`: one static, offline results site over many bundles.

Each bundle (a results directory or its .tar.gz) is opened safely and verified; the site
(orchestrator.report.site) ranks the verified ones per workload across machines, sets
machine against machine, and marks those that do not verify. A bundle that cannot be
opened safely, or a DIR that holds anything but an earlier site, is a one-line error.
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.cli.common import say


def cmd_site(args) -> int:
    from orchestrator.report import site

    made = site.build([Path(b) for b in args.bundles], Path(args.output),
                      signers=Path(args.signers) if args.signers else None, say=say)
    untrusted = sum(not b.trusted for b in made.bundles)
    say(f"Site: {made.path}/index.html ({len(made.bundles)} bundle(s), {len(made.machines)} machine(s), "
        f"{len(made.leaderboards)} workload(s)"
        + (f"; {untrusted} bundle(s) do NOT verify: shown apart, not ranked)" if untrusted else ")"))
    return 0


def add_site_command(subparsers) -> None:
    p = subparsers.add_parser("site", help="one static, offline site over many bundles: machines, "
                                           "leaderboards per workload, machine against machine")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="results directory or its .tar.gz")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="the site's directory: new, empty, or an earlier site (replaced whole)")
    p.add_argument("--signers", metavar="FILE",
                   help="check each bundle's MANIFEST.sha256.sig against this OpenSSH allowed-signers "
                        "file and name the signer; a bundle unsigned or not signed by one of them is "
                        "shown as not verifying (as `dlbench verify --signers` fails it)")
    p.set_defaults(func=cmd_site)
