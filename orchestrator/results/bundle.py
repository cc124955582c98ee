"""A results directory as a publishable bundle: seal, verify, open, pack.

The bundle IS results/<timestamp>-<suite>/. Sealing (the runner's last step)
adds summary.csv and MANIFEST.sha256 (sha256sum format, sorted relative paths,
every file but itself). `verify` re-hashes everything and checks each JSON
document against its schema; `pack` makes a byte-reproducible .tar.gz; `opened`
lets every command read a directory and a .tar.gz alike.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.results.directory import schema_error
from orchestrator.results.metrics import column_metrics

MANIFEST = "MANIFEST.sha256"
SUMMARY_CSV = "summary.csv"
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

def seal(path: Path) -> None:
    """summary.csv from summary.json, then MANIFEST.sha256 over every file."""
    path = Path(path)
    summary = _load_json(path / "summary.json")
    if summary is not None:
        _write_atomic(path / SUMMARY_CSV, summary_csv(summary).encode("utf-8"))
    write_manifest(path)


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
    """Every regular file under the bundle as a sorted relative POSIX path (manifest excluded)."""
    path = Path(path)
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            rel = (Path(root) / name).relative_to(path).as_posix()
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def write_manifest(path: Path) -> None:
    path = Path(path)
    lines = [f"{sha256_file(path / rel)}  {rel}\n" for rel in bundle_files(path)]
    _write_atomic(path / MANIFEST, "".join(lines).encode("utf-8"))


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------

def verify(path: Path) -> list[str]:
    """Every problem of a bundle directory as one line naming the file; [] when intact."""
    path = Path(path)
    problems = _manifest_problems(path)
    problems += _schema_problems(path)
    return problems


def _read_manifest(path: Path) -> tuple[dict[str, str], list[str]]:
    try:
        text = (path / MANIFEST).read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}, [f"{MANIFEST}: missing (the bundle was never sealed; "
                    "a suite run writes it last)"]
    except UnicodeDecodeError:
        return {}, [f"{MANIFEST}: not UTF-8 text, so not a sha256sum manifest"]
    recorded, problems = {}, []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MANIFEST_LINE.match(line)
        if not match:
            problems.append(f"{MANIFEST}: line {number} is not '<sha256>  <path>'")
            continue
        recorded[match.group(2)] = match.group(1)
    if not text.endswith("\n") or list(recorded) != sorted(recorded):
        problems.append(f"{MANIFEST}: not as written by dlbench (sorted lines, final newline)")
    return recorded, problems


def _manifest_problems(path: Path) -> list[str]:
    recorded, problems = _read_manifest(path)
    if problems and not recorded:
        return problems
    present = set(bundle_files(path))
    for rel in sorted(set(recorded) | present):
        if rel not in present:
            problems.append(f"{rel}: missing (listed in {MANIFEST})")
        elif rel not in recorded:
            problems.append(f"{rel}: added (not listed in {MANIFEST})")
        elif sha256_file(path / rel) != recorded[rel]:
            problems.append(f"{rel}: changed (its sha256 differs from the one {MANIFEST} "
                            "records: the file or that line of the manifest was edited)")
    return problems


def _schema_problems(path: Path) -> list[str]:
    problems = []
    for name, kind in TOP_LEVEL_SCHEMAS.items():
        if (path / name).exists():
            problems += _document_problem(path / name, name, kind)
    runs = path / "runs"
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        record = _load_json(run_dir / "run.json")
        for name, kind in RUN_SCHEMAS.items():
            rel = f"runs/{run_dir.name}/{name}"
            if not (run_dir / name).exists():
                continue
            if name == "metrics.json" and isinstance(record, dict) and \
                    record.get("metrics_valid") is False:
                continue  # the run record already says the workload left bad metrics
            problems += _document_problem(run_dir / name, rel, kind)
        monitor = run_dir / "monitor.jsonl"
        if monitor.exists():
            problems += _jsonl_problem(monitor, f"runs/{run_dir.name}/monitor.jsonl")
    return problems


def _document_problem(file: Path, rel: str, kind: str) -> list[str]:
    try:
        document = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{rel}: not valid JSON ({exc})"]
    problem = schema_error(kind, document)
    return [f"{rel}: does not match the {kind} schema: {problem}"] if problem else []


def _jsonl_problem(file: Path, rel: str) -> list[str]:
    try:
        lines = file.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return [f"{rel}: not UTF-8 text"]
    for number, line in enumerate(lines, start=1):
        try:
            if line.strip() and not isinstance(json.loads(line), dict):
                raise ValueError("not an object")
        except ValueError:
            return [f"{rel}: line {number} is not a JSON object"]
    return []


def _load_json(file: Path):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
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
    with tempfile.TemporaryDirectory(prefix="dlbench-bundle-") as tmp:
        yield _unpack(bundle, Path(tmp))


def _unpack(archive: Path, into: Path) -> Path:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            tops = {Path(m.name).parts[0] for m in members if m.name not in ("", ".")}
            if len(tops) != 1:
                raise DlbenchError(f"{archive}: a bundle archive holds exactly one top-level "
                                   f"directory (found {len(tops)}); make it with `dlbench pack`")
            tar.extractall(into, filter="data")  # refuses absolute paths, .. and odd members
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DlbenchError(f"{archive}: unreadable archive ({exc})") from None
    top = into / tops.pop()
    if not top.is_dir():
        raise DlbenchError(f"{archive}: its top-level entry is not a directory")
    return top


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------

def pack(bundle: Path, output: Path | None = None) -> Path:
    """BUNDLE -> BUNDLE.tar.gz, byte-reproducible: sorted entries, fixed mtime/owner/mode."""
    bundle = Path(bundle)
    output = Path(output) if output else bundle.with_name(bundle.name + ".tar.gz")
    top = bundle.name
    files = [*bundle_files(bundle), *([MANIFEST] if (bundle / MANIFEST).exists() else [])]
    directories = {"/".join(Path(rel).parts[:i]) for rel in files
                   for i in range(1, len(Path(rel).parts))}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_tar_info(top, directory=True))
        for rel in sorted([*directories, *files], key=lambda r: Path(r).parts):
            if rel in directories:
                tar.addfile(_tar_info(f"{top}/{rel}", directory=True))
                continue
            data = (bundle / rel).read_bytes()
            tar.addfile(_tar_info(f"{top}/{rel}", size=len(data)), io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=PACK_MTIME) as gz:
        gz.write(raw.getvalue())
    _write_atomic(output, compressed.getvalue())
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
