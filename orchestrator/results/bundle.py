"""A results directory as a publishable bundle: seal, verify, open, pack.

The bundle IS results/<timestamp>-<suite>/. Sealing (the runner's last step)
adds summary.csv and MANIFEST.sha256 (sha256sum format, sorted relative paths,
every file but itself and its signature). `verify` re-hashes everything and checks each
JSON document against its schema; `pack` makes a byte-reproducible .tar.gz; `opened`
lets every command read a directory and a .tar.gz alike. MANIFEST.sha256.sig, when there,
is the manifest's signature (orchestrator.results.signing): sealing again removes it unless
the manifest it writes is the one signed.

A bundle holds regular files and directories only: none of these ever follows a link or
opens a FIFO or device (orchestrator.results.nofollow); each such entry is one problem
line. An archive is checked member by member before anything is extracted (regular files
and directories only, names inside its one top-level directory, at most
MAX_ARCHIVE_MEMBERS members and MAX_ARCHIVE_BYTES in all), and the temporary directory it
is unpacked into is removed on SIGTERM as on Ctrl-C. Whether the files agree with each
other (plan, runs, summary, images) is orchestrator.analysis.consistency's job.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import shutil
import signal
import tarfile
import tempfile
import threading
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.results import lock, nofollow
from orchestrator.results.directory import schema_error
from orchestrator.results.metrics import column_metrics
from orchestrator.results.output import write_output

MANIFEST = "MANIFEST.sha256"
# The manifest's OpenSSH signature (orchestrator.results.signing): it signs the manifest, so
# the manifest cannot list it.
SIGNATURE = "MANIFEST.sha256.sig"
NOT_RESULTS = (MANIFEST, SIGNATURE, lock.LOCK_FILE)  # what the manifest never lists (the lock: not a result)
NEVER_SEALED = f"{MANIFEST}: missing (the bundle was never sealed; a suite run writes it last)"
SUMMARY_CSV = "summary.csv"
# What `dlbench run --resume` writes anew whatever was there: never adopted, so not checked
# (and MANIFEST.sha256, rewritten too, but what the kept files are checked against).
RERENDERED = ("summary.json", SUMMARY_CSV, "report.html")
PACK_MTIME = 0            # fixed mtimes/owners: the same bundle packs to the same bytes
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
# Bundle-level documents and the schema each must match (results.VALIDATORS names).
TOP_LEVEL_SCHEMAS = {"plan.json": "plan", "system.json": "system", "images.json": "images",
                     "summary.json": "summary"}
RUN_SCHEMAS = {"spec.json": "spec", "run.json": "run", "metrics.json": "metrics"}
# summary.csv: these columns, the `column` metrics of orchestrator.results.metrics between
# them; any other scalar a summary entry carries follows, sorted.
CSV_LEADING = ("run_id", "outcome", "backend", "framework", "api", "framework_version")
CSV_TRAILING = ("message",)
# What a bundle archive may expand to: far above any real bundle (a suite of a thousand runs
# is a few tens of MB in a few thousand files), far below what would fill a disk.
MAX_ARCHIVE_BYTES = 2 * 2**30
MAX_ARCHIVE_MEMBERS = 100_000


def is_archive(path: Path) -> bool:
    return str(path).endswith((".tar.gz", ".tgz"))


def bundle_name(path: Path) -> str:
    name = Path(path).name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------------
# Sealing (written last by the runner)
# ---------------------------------------------------------------------------

def seal(path: Path) -> str | None:
    """summary.csv from summary.json, then MANIFEST.sha256 over every file. Refuses (one
    line) a directory holding a link, FIFO, socket or device: none is followed or hashed.
    Returns write_manifest's line about a signature it removed, if it removed one."""
    path = Path(path)
    _refuse_to(path, "seal")
    summary = _load_json(path, "summary.json")
    if summary is not None:
        write_atomic(path / SUMMARY_CSV, summary_csv(summary).encode("utf-8"))
    return write_manifest(path)


def csv_columns() -> list[str]:
    """summary.csv's leading columns, before those only some entries carry."""
    return [*CSV_LEADING, *(m.key for m in column_metrics()), *CSV_TRAILING]


def summary_csv(summary: dict) -> str:
    entries = summary.get("runs") or []
    leading = csv_columns()
    nested = {k for e in entries for k, v in e.items() if isinstance(v, (dict, list))}
    extra = sorted({k for e in entries for k in e if k not in leading and k not in nested})
    columns = [*leading, *extra]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow({k: ("" if entry.get(k) is None else entry.get(k)) for k in columns})
    return out.getvalue()


def bundle_files(path: Path) -> list[str]:
    """Every regular file under the bundle as a sorted relative POSIX path (manifest excluded);
    links and other entries are not files of the bundle (nofollow.scan names them)."""
    return [rel for rel in nofollow.scan(Path(path))[0] if rel not in NOT_RESULTS]


def write_manifest(path: Path) -> str | None:
    """MANIFEST.sha256 over every file. A signature of another manifest than the one written
    (re-sealed after signing: a re-render, a resume) is removed first, so that a bundle is
    signed only by signatures that verify: returns one line saying so, None otherwise."""
    path = Path(path)
    _refuse_to(path, "seal")
    lines = [f"{nofollow.sha256(path, rel)}  {rel}\n" for rel in bundle_files(path)]
    payload = "".join(lines).encode("utf-8")
    removed = None
    if os.path.lexists(path / SIGNATURE) and _manifest_bytes(path) != payload:
        os.unlink(path / SIGNATURE)  # unlink never follows (_refuse_to let no link through anyway)
        removed = (f"{path / SIGNATURE}: removed: it signed the manifest this seal replaced; "
                   "sign the bundle again (dlbench sign)")
    write_atomic(path / MANIFEST, payload)
    return removed


def _manifest_bytes(path: Path) -> bytes | None:
    try:
        return nofollow.read_bytes(path, MANIFEST)
    except (FileNotFoundError, DlbenchError):
        return None


def _refuse_to(path: Path, action: str) -> None:
    _, others = nofollow.scan(path)
    if others:
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        raise DlbenchError(f"{path}: cannot {action}: {others[0][1]}{more}")


def write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover (or planted link) is replaced, never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------

def verify(path: Path) -> list[str]:
    """Every problem of a bundle directory as one line naming the file; [] when intact."""
    return [line for _, line in located_problems(path)]


def kept_problems(path: Path, emptied_runs: list[str], rerendered: bool) -> list[str]:
    """verify()'s problems about what `dlbench run --resume` keeps: everything but what is
    inside the run directories it empties and, when it re-renders, RERENDERED. A directory
    never sealed has no manifest to check against: its kept files meet their schemas only.
    A link, FIFO or device is a problem wherever it is, but inside a run directory emptied."""
    emptied = tuple(f"runs/{run_id}/" for run_id in emptied_runs)
    _, others = nofollow.scan(Path(path))
    refused = {rel for rel, _ in others}
    rewritten = {rel for rel in RERENDERED if rerendered and rel not in refused}
    return [line for rel, line in located_problems(path)
            if line != NEVER_SEALED and not rel.startswith(emptied) and rel not in rewritten]


def located_problems(path: Path) -> list[tuple[str, str]]:
    """verify()'s problems as (the relative path each is about, its line): entries that are
    no regular file or directory, the manifest against the files, each JSON file against its
    schema. A problem about a path inside an entry already named is not repeated."""
    path = Path(path)
    files, others = nofollow.scan(path)
    refused = [rel for rel, _ in others]
    found = list(others)
    if MANIFEST not in refused:
        found += _manifest_problems(path, files, refused)
    found += _schema_problems(path, files)
    return [(rel, line) for rel, line in found
            if (rel, line) in others or not any(_within(rel, r) for r in refused)]


def require_documents(path: Path, shown: Path | None = None) -> None:
    """What `report` and `compare` read, they trust the shape of: a JSON document of the
    bundle that is not valid JSON, or not of its schema, is a one-line DlbenchError naming it
    (`shown`: the bundle as the user gave it, for a .tar.gz unpacked at `path`)."""
    path = Path(path)
    try:
        problems = _schema_problems(path, nofollow.scan(path)[0])
    except RecursionError:  # json's parser recurses: nesting no dlbench file has
        problems = [("", "a JSON document is nested too deeply to read")]
    if problems:
        more = f" (and {len(problems) - 1} more: `dlbench verify` lists them)" if len(problems) > 1 else ""
        raise DlbenchError(f"{shown or path}: {problems[0][1]}{more}")


def _within(rel: str, top: str) -> bool:
    return rel == top or rel.startswith(f"{top}/") or top == "."


def _read_manifest(path: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    try:
        text = nofollow.read_bytes(path, MANIFEST).decode("utf-8")
    except FileNotFoundError:
        return {}, [(MANIFEST, NEVER_SEALED)]
    except nofollow.RefusedEntry as exc:
        return {}, [(MANIFEST, str(exc))]
    except UnicodeDecodeError:
        return {}, [(MANIFEST, f"{MANIFEST}: not UTF-8 text, so not a sha256sum manifest")]
    recorded: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MANIFEST_LINE.match(line)
        if not match:
            problems.append((MANIFEST, f"{MANIFEST}: line {number} is not '<sha256>  <path>'"))
            continue
        if not nofollow.inside(match.group(2)):  # never hashed: it would be read from outside
            problems.append((MANIFEST, f"{MANIFEST}: line {number} names a path outside the bundle "
                                       f"({match.group(2)!r}: absolute, or with `..`)"))
            continue
        recorded[match.group(2)] = match.group(1)
    if not text.endswith("\n") or list(recorded) != sorted(recorded):
        problems.append((MANIFEST, f"{MANIFEST}: not as written by dlbench (sorted lines, final newline)"))
    return recorded, problems


def _manifest_problems(path: Path, files: list[str], refused: list[str]) -> list[tuple[str, str]]:
    recorded, problems = _read_manifest(path)
    if problems and not recorded:
        return problems
    present = set(files) - set(NOT_RESULTS)
    for rel in sorted(set(recorded) | present):
        if any(_within(rel, r) for r in refused):
            continue  # already named as what it is
        if rel not in present:
            problems.append((rel, f"{rel}: missing (listed in {MANIFEST})"))
        elif rel not in recorded:
            problems.append((rel, f"{rel}: added (not listed in {MANIFEST})"))
        else:
            try:
                digest = nofollow.sha256(path, rel)
            except (OSError, DlbenchError) as exc:
                problems.append((rel, str(exc) if isinstance(exc, DlbenchError)
                                 else f"{rel}: unreadable ({exc.strerror or exc})"))
                continue
            if digest != recorded[rel]:
                problems.append((rel, f"{rel}: changed (its sha256 differs from the one {MANIFEST} "
                                      "records: the file or that line of the manifest was edited)"))
    return problems


def _schema_problems(path: Path, files: list[str]) -> list[tuple[str, str]]:
    present = set(files)
    problems = []
    for name, kind in TOP_LEVEL_SCHEMAS.items():
        if name in present:
            problems += _document_problem(path, name, kind)
    run_ids = sorted({rel.split("/")[1] for rel in present
                      if rel.startswith("runs/") and rel.count("/") >= 2})
    for run_id in run_ids:
        record = _load_json(path, f"runs/{run_id}/run.json")
        for name, kind in RUN_SCHEMAS.items():
            rel = f"runs/{run_id}/{name}"
            if rel not in present:
                continue
            if name == "metrics.json" and isinstance(record, dict) and \
                    record.get("metrics_valid") is False:
                continue  # the run record already says the workload left bad metrics
            problems += _document_problem(path, rel, kind)
        if f"runs/{run_id}/monitor.jsonl" in present:
            problems += _jsonl_problem(path, f"runs/{run_id}/monitor.jsonl")
    return problems


def _document_problem(path: Path, rel: str, kind: str) -> list[tuple[str, str]]:
    try:
        document = json.loads(nofollow.read_bytes(path, rel).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # too deeply nested
        return [(rel, f"{rel}: not valid JSON ({exc})")]
    except (OSError, DlbenchError):
        return []  # gone or refused since the scan: the manifest check names it
    problem = schema_error(kind, document)
    return [(rel, f"{rel}: does not match the {kind} schema: {problem}")] if problem else []


def _jsonl_problem(path: Path, rel: str) -> list[tuple[str, str]]:
    try:
        lines = nofollow.read_bytes(path, rel).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return [(rel, f"{rel}: not UTF-8 text")]
    except (OSError, DlbenchError):
        return []
    for number, line in enumerate(lines, start=1):
        try:
            if line.strip() and not isinstance(json.loads(line), dict):
                raise ValueError("not an object")
        except ValueError:
            return [(rel, f"{rel}: line {number} is not a JSON object")]
    return []


def _load_json(path: Path, rel: str):
    try:
        return nofollow.read_json_or_none(path, rel)
    except DlbenchError:
        return None


# ---------------------------------------------------------------------------
# Opening a directory or a .tar.gz alike
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def opened(bundle: str | Path):
    """The bundle as a directory: itself, or a .tar.gz unpacked into a temporary one."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise DlbenchError(f"{bundle}: no such bundle (give a results directory or its .tar.gz)")
    if bundle.is_dir():
        if not (bundle / "runs").is_dir() and not (bundle / MANIFEST).exists():
            raise DlbenchError(f"{bundle}: not a dlbench results directory (no runs/ inside)")
        yield bundle
        return
    if not is_archive(bundle):
        raise DlbenchError(f"{bundle}: not a bundle (a results directory or a .tar.gz of one)")
    with _temporary_directory() as tmp:
        yield _unpack(bundle, tmp)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _temporary_directory():
    """A temporary directory that is removed however dlbench is stopped: SIGTERM is turned
    into the KeyboardInterrupt Ctrl-C raises, and neither can cut the removal short."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
    try:
        tmp = tempfile.mkdtemp(prefix="dlbench-bundle-")
        try:
            yield Path(tmp)
        finally:
            stops = {signal.SIGINT, signal.SIGTERM}
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, stops) if main else None
            try:
                shutil.rmtree(tmp, ignore_errors=True)
            finally:
                if mask is not None:  # a stop that came meanwhile is delivered now
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _unpack(archive: Path, into: Path) -> Path:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _checked_members(archive, tar)
            tops = {m.name.split("/")[0] for m in members}
            if len(tops) != 1:
                raise DlbenchError(f"{archive}: a bundle archive holds exactly one top-level "
                                   f"directory (found {len(tops)}); make it with `dlbench pack`")
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DlbenchError(f"{archive}: unreadable archive ({exc})") from None
    top = into / tops.pop()
    if top.is_symlink() or not top.is_dir():
        raise DlbenchError(f"{archive}: its top-level entry is not a directory")
    return top


def _checked_members(archive: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, each checked as its header is read, before anything is extracted."""
    members: list[tarfile.TarInfo] = []
    names: set[str] = set()
    total = 0
    for member in tar:
        if len(members) == MAX_ARCHIVE_MEMBERS:
            raise DlbenchError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS:,} members, more than a "
                               "bundle archive may hold; nothing was extracted")
        problem = _member_problem(member, names)
        if problem:
            raise DlbenchError(f"{archive}: member {member.name!r}: {problem}; nothing was extracted")
        total += member.size
        if total > MAX_ARCHIVE_BYTES:
            raise DlbenchError(f"{archive}: expands to more than {MAX_ARCHIVE_BYTES / 2**30:g} GiB "
                               "(the most a bundle archive may); nothing was extracted")
        member.mode = 0o755 if member.isdir() else 0o644  # as pack writes them
        names.add(member.name)
        members.append(member)
    return members


def _member_problem(member: tarfile.TarInfo, names: set[str]) -> str | None:
    if member.name.startswith("/") or not nofollow.inside(member.name):
        return "a name outside the archive's directory (absolute, or with `..`)"
    if not (member.isdir() or member.type in (tarfile.REGTYPE, tarfile.AREGTYPE)):
        what = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a FIFO" if member.isfifo() else "a device" if member.isdev()
                else "a sparse file" if member.issparse() else f"of tar type {member.type!r}")
        return f"{what} (a bundle archive holds only regular files and directories)"
    if member.name in names:
        return "appears twice (a later copy would replace the first)"
    return None


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------

def pack(bundle: Path, output: Path | None = None) -> Path:
    """BUNDLE -> BUNDLE.tar.gz, byte-reproducible: sorted entries, fixed mtime/owner/mode.
    Only regular files and directories are packed: a bundle holding anything else (a link,
    a FIFO) is refused, as is an output path inside the bundle."""
    bundle = Path(bundle)
    output = Path(output) if output else bundle.with_name(bundle.name + ".tar.gz")
    root, target = bundle.resolve(), output.resolve()
    if target == root or root in target.parents:
        raise DlbenchError(f"{output}: inside the bundle {bundle}, which packing must not change; "
                           "write the archive outside it (the default is beside it)")
    _refuse_to(bundle, "pack")
    top = bundle.name
    files = [rel for rel in nofollow.scan(bundle)[0] if rel != lock.LOCK_FILE]
    directories = {"/".join(Path(rel).parts[:i]) for rel in files
                   for i in range(1, len(Path(rel).parts))}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_tar_info(top, directory=True))
        for rel in sorted([*directories, *files], key=lambda r: Path(r).parts):
            if rel in directories:
                tar.addfile(_tar_info(f"{top}/{rel}", directory=True))
                continue
            data = nofollow.read_bytes(bundle, rel)
            tar.addfile(_tar_info(f"{top}/{rel}", size=len(data)), io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=PACK_MTIME) as gz:
        gz.write(raw.getvalue())
    write_output(output, compressed.getvalue())
    return output


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = PACK_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
