"""`dlbench data …`: list, fetch, import and verify the datasets runs mount as /data.

The lead's cli.py calls add_data_commands(subparsers) and dispatches on
args.func; DlbenchError raised here is printed by cli.py as one line (exit 2).
"""
from __future__ import annotations

import argparse
import os
import sys

from orchestrator import datasets
from orchestrator.cli.common import printable, say
from orchestrator.errors import DlbenchError


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Register `data` and its sub-commands on the top-level subparsers."""
    parser = subparsers.add_parser(
        "data", help="prepare datasets on the host (containers never download)",
        description="Datasets are fetched or imported once into the host cache, checked "
                    "against published checksums, and mounted read-only into runs.")
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True,
                                help="list, fetch, import or verify")
    names = datasets.names()
    archives = sorted(datasets.ARCHIVES.values(), key=lambda a: a.name)

    p = sub.add_parser("list", help="known datasets, where they are, which splits")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("fetch", help="download a dataset into the cache (needs internet)")
    p.add_argument("name", choices=names, metavar="NAME", help=" | ".join(names))
    p.add_argument("--mirror", action="append", metavar="URL",
                   help="base URL holding the files as published (repeatable; default: "
                        "$DLBENCH_DATA_MIRROR or the public mirrors)")
    p.add_argument("--split", action="append", choices=datasets.SPLITS,
                   help="only this split (repeatable; default: all; an archive dataset is "
                        "downloaded and converted whole)")
    p.add_argument("--force", action="store_true",
                   help="download into the cache even if the dataset is available elsewhere")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("import", help="copy a dataset you already have into the cache")
    p.add_argument("name", choices=names, metavar="NAME", help=" | ".join(names))
    p.add_argument("directory", metavar="DIR|FILE",
                   help=f"{', '.join(sorted(datasets.DATASETS))}: the directory holding the IDX files "
                        "(.gz as published, or uncompressed); "
                        + ", ".join(f"{a.name}: {a.filename}" for a in archives)
                        + " (the archive as published; checked, then converted to .npy once)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("verify", help="check every file of a dataset against its checksums "
                                      "(converted datasets: against their manifest.json)")
    p.add_argument("name", choices=names, metavar="NAME", help=" | ".join(names))
    p.add_argument("--dir", metavar="DIR", help="verify this directory instead of the located one")
    p.set_defaults(func=cmd_verify)
    return parser


def _splits(splits) -> str:
    return "+".join(splits) if splits else "-"


def cmd_list(args) -> int:
    for name, loc, splits in datasets.status():
        ds = datasets.get(name)
        if loc is None:
            say(f"{name:<14} not prepared   {ds.how_to_get()}")
            continue
        missing = [s for s in ds.splits if s not in splits]
        note = f"   ({' and '.join(missing)} missing)" if missing else ""
        say(f"{name:<14} {_splits(splits):<12} {loc.directory}  [{loc.source}]{note}")
    return 0


class _Progress:
    """One updating line on a terminal; silence otherwise (logs stay readable)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr     # looked up now, not when the module was imported
        self.tty = self.stream.isatty()

    def __call__(self, filename: str, done: int, total: int | None) -> None:
        if not self.tty:
            return
        size = f"{done / 1e6:6.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:6.1f} MB"
        end = "\n" if total and done >= total else ""
        self.stream.write(f"\r  {printable(filename):<28} {size}{end}")  # our \r, theirs escaped
        self.stream.flush()


def cmd_fetch(args) -> int:
    ds = datasets.get(args.name)
    splits = tuple(dict.fromkeys(args.split)) if args.split else ds.splits
    loc = datasets.locate(ds.name, splits)
    if not args.force and loc is not None and loc.has(splits) and loc.source != "cache":
        say(f"{ds.name}: {_splits(splits)} already available in {loc.directory} [{loc.source}]; "
              "nothing downloaded (--force to download into the cache anyway)")
        return 0
    result = datasets.fetch(ds.name, progress=_Progress(), mirrors=args.mirror, splits=splits)
    for failure in result.failures:
        print(printable(f"  mirror failed, used the next one: {failure}"), file=sys.stderr)
    for filename, url in result.downloaded:
        say(f"  downloaded {filename} from {url}")
    if result.already:
        say(f"  already in the cache: {', '.join(result.already)}")
    say(f"{ds.name}: {_splits(result.splits)} ready in {result.directory}")
    return 0


def cmd_import(args) -> int:
    result = datasets.import_dir(args.name, args.directory)
    for path, how in result.files:
        say(f"  imported {os.path.basename(path)} (verified: {how})")
    line = f"{result.name}: imported {_splits(result.imported)} into {result.directory}"
    if result.missing:
        line += (f"; {' and '.join(result.missing)} still missing "
                 f"({datasets.get(result.name).how_to_get()})")
    say(line)
    return 0


def cmd_verify(args) -> int:
    ds = datasets.get(args.name)
    if args.dir:
        directory = args.dir
    else:
        loc = datasets.locate(ds.name)
        if loc is None:
            raise DlbenchError(f"dataset {ds.name} is not prepared on this host; {ds.how_to_get()}")
        directory = loc.directory
    check = datasets.verify_dir(ds.name, directory)
    for c in check.files:
        if c.path is None:
            say(f"  missing  {c.filename}")
        elif c.ok:
            say(f"  ok       {c.path.name}  ({c.method})")
        else:
            say(f"  BAD      {c.path.name}  {c.problem}")
    if check.bad:
        first = check.bad[0]
        raise DlbenchError(f"{first.path}: {first.problem}; {ds.how_to_repair()}")
    if not check.splits:
        raise DlbenchError(f"{check.directory}: no complete {ds.name} split; {ds.how_to_get()}")
    say(f"{ds.name}: {_splits(check.splits)} verified in {check.directory}")
    return 0
