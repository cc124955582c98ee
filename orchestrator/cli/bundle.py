"""`dlbench verify | sign | pack | report | compare | rerun`: what a reader does with a bundle.

A bundle is a results directory (results/<timestamp>-<suite>/) or its .tar.gz;
every command here takes either, but `sign` and `pack`, which need the directory.
DlbenchError raised here is printed by the cli package as one line (exit 2); a bundle that
does not verify exits 1, naming each file (`verify --signers`: its signature too).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from orchestrator.cli.common import say
from orchestrator.errors import DlbenchError
from orchestrator.paths import results_root
from orchestrator.results import bundle, lock, signing
from orchestrator.results.output import check_place, write_output

VERIFY_FAILED = 1


def bundle_problems(directory: Path) -> list[str]:
    """Everything `dlbench verify` checks, one line each: each file against the manifest and
    its schema (results.bundle), a signature file's form (results.signing, without checking
    who signed), then the files against each other (analysis.consistency)."""
    from orchestrator.analysis import consistency

    found = bundle.located_problems(directory)
    found += [problem for problem in signing.form_problems(directory) if problem not in found]
    if not found:  # the cross-file checks read the documents, so only documents that verify
        found = consistency.located_problems(directory)
    return [line for _, line in found]


def verified_line(path: Path, signers: Path | None = None) -> tuple[int, list[str]]:
    """(exit code, lines to print) for `dlbench verify` and the end of `dlbench run`. With
    `signers` (an allowed-signers file), a signature that is missing or does not verify
    against it is one more problem; without, a signature present is one line, unchecked."""
    if signers is not None:
        signing.require_signers_file(signers)  # before the work of verifying
    with bundle.opened(path) as directory:
        problems = bundle_problems(directory)
        signature = signing.check(directory, signers) if signers is not None else signing.present(directory)
    if signature.verified is False and signature.message not in problems:
        problems.append(signature.message)
    said = [signature.message] if signature.signed and signature.verified is not False else []
    if problems:
        return VERIFY_FAILED, [*(f"  {p}" for p in problems), *said,
                               f"Bundle does NOT verify: {path} ({len(problems)} problem(s))"]
    return 0, [*said, f"Bundle verified: {path}"]


def cmd_verify(args) -> int:
    code, lines = verified_line(Path(args.bundle), Path(args.signers) if args.signers else None)
    for line in lines:
        say(line)
    return code


def cmd_sign(args) -> int:
    """Sign a results directory's manifest, as its one writer; only a bundle that verifies."""
    source = Path(args.bundle)
    if bundle.is_archive(source) and source.is_file():
        raise DlbenchError(f"{source}: a packed bundle; sign its results directory, then pack it "
                           f"(dlbench sign DIR --key KEY && dlbench pack DIR)")
    with bundle.opened(source) as directory, lock.hold(directory, say):
        problems = bundle_problems(directory)
        if problems:
            raise DlbenchError(f"{source}: does not verify ({problems[0]}); only a bundle that verifies "
                               "is signed (`dlbench verify` lists every problem)")
        before = signing.present(directory)
        signed = signing.sign(directory, Path(args.key))
    if before.signed:
        say(f"Replaced the previous signature ({before.key or 'unreadable'}).")
    say(signed.message)
    say(f"Check it: dlbench verify {source} --signers ALLOWED_SIGNERS "
        "(lines 'PRINCIPAL KEYTYPE BASE64KEY': the signer's name, then its .pub file's content)")
    return 0


def cmd_pack(args) -> int:
    source = Path(args.bundle)
    with bundle.opened(source) as directory:
        if directory != source:
            raise DlbenchError(f"{source}: already packed; give the results directory")
        problems = bundle_problems(directory)
        if problems:
            raise DlbenchError(f"{source}: does not verify ({problems[0]}); "
                                      "`dlbench verify` lists every problem")
        out = bundle.pack(directory, Path(args.output) if args.output else None)
    say(f"Packed: {out} ({out.stat().st_size:,} bytes)")
    return 0


def cmd_report(args) -> int:
    """Re-render offline. A sealed bundle is never modified: the page goes beside it. Into
    an unsealed results directory it is written as that directory's one writer (its lock)."""
    source = Path(args.bundle)
    if args.output:
        check_place(args.output)  # before the work of rendering
    into_directory = source.is_dir() and not (source / bundle.MANIFEST).exists() and \
        (not args.output or _inside(Path(args.output), source))
    with lock.hold(source, say) if into_directory else contextlib.nullcontext():
        return _report(args, source)


def _report(args, source: Path) -> int:
    from orchestrator import report

    with bundle.opened(source) as directory:
        bundle.require_documents(directory, source)
        html = report.render(report.load(directory)).encode("utf-8")
        original = directory / "report.html"
        same = original.is_file() and original.read_bytes() == html
        had_original = original.is_file()
        sealed = (directory / bundle.MANIFEST).exists()
    if args.output:
        out = Path(args.output)
        if sealed and source.is_dir() and _inside(out, source):
            raise DlbenchError(f"{out}: inside the sealed bundle {source}, which must not change; "
                               "write the report outside it (the default is beside it)")
    elif source.is_dir() and not sealed:
        out = source / "report.html"
    else:
        out = source.with_name(f"{bundle.bundle_name(source)}.report.html")
    write_output(out, html)
    say(f"Report: {out}")
    if had_original:
        say("Byte-identical to the report in the bundle." if same else
             "Differs from the report in the bundle (rendered by another dlbench version).")
    return 0


def _inside(path: Path, directory: Path) -> bool:
    target, root = path.resolve(), directory.resolve()
    return target == root or root in target.parents


def cmd_compare(args) -> int:
    from orchestrator.report import compare

    if args.html:
        check_place(args.html)  # before the work of comparing
    result = compare.compare(Path(args.a), Path(args.b))
    say(compare.format_text(result))
    if args.html:
        out = write_output(Path(args.html), compare.render_html(result).encode("utf-8"))
        say(f"HTML: {out}")
    return 0


def cmd_rerun(args) -> int:
    from orchestrator.execution.rerun import rerun

    results = rerun(Path(args.bundle), args.run, Path(args.results) if args.results else results_root(),
                    say=say)
    say(f"Report: {results.path / 'report.html'}")
    code, lines = verified_line(results.path)
    for line in lines:
        say(line)
    return code


def add_bundle_commands(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check a bundle: its MANIFEST.sha256, schemas, and that its "
                                               "files agree (plan, runs, summary, images)")
    p.add_argument("bundle", help="results directory or its .tar.gz")
    p.add_argument("--signers", metavar="FILE",
                   help="also check MANIFEST.sha256.sig against this OpenSSH allowed-signers file "
                        "and name the signer (fails when unsigned or not signed by one of them)")
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser("sign", help="sign a results directory's MANIFEST.sha256 with an SSH key "
                                             "(into MANIFEST.sha256.sig; `verify --signers` checks it)")
    p.add_argument("bundle", help="results directory (sign before `dlbench pack`)")
    p.add_argument("--key", metavar="KEY", required=True,
                   help="SSH private key file (its passphrase is asked on the terminal), or a public "
                        "key file whose private key is in ssh-agent")
    p.set_defaults(func=cmd_sign)

    p = subparsers.add_parser("pack", help="BUNDLE -> BUNDLE.tar.gz, byte-reproducible")
    p.add_argument("bundle", help="results directory")
    p.add_argument("-o", "--output", help="archive path (default: BUNDLE.tar.gz beside it)")
    p.set_defaults(func=cmd_pack)

    p = subparsers.add_parser("report", help="re-render report.html offline from a bundle alone")
    p.add_argument("bundle", metavar="BUNDLE", help="results directory or its .tar.gz")
    p.add_argument("-o", "--output", help="write here (default: inside an unsealed directory, "
                                          "else BUNDLE.report.html beside the bundle)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("compare", help="compare the matching runs of two bundles")
    p.add_argument("a", metavar="A", help="baseline bundle (directory or .tar.gz)")
    p.add_argument("b", metavar="B", help="bundle compared with it")
    p.add_argument("--html", metavar="FILE", help="also write the comparison as an HTML page")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("rerun", help="rerun a bundle's runs on its recorded images (by ID)")
    p.add_argument("bundle", help="results directory or its .tar.gz")
    p.add_argument("--run", metavar="ID", help="only this run")
    p.add_argument("--results", help="results root (default: results/ or $DLBENCH_RESULTS)")
    p.set_defaults(func=cmd_rerun)

