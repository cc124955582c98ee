"""Slurm's own commands (sbatch, squeue, scontrol, scancel, sinfo; sacct and sacctmgr where
the cluster keeps accounting), run and parsed for the slurm backend.

Why the commands and not a library: submitit (the well-kept one) pickles a Python function
for the node to unpickle and run; dlbench's jobs run a container from a recorded image,
which is a command, and its users' clusters always have the commands (they are Slurm's
interface), while a client library would be one more dependency to pin on every node.
Every call has a time limit and one-line errors; the follow loop asks squeue once per poll
for all of a suite's jobs, never once per job.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.errors import DlbenchError

COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
CALL_TIMEOUT_S = 60
# Job states after which nothing more happens to a job (squeue/scontrol/sacct spell them so).
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"})
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/.]*)=")
_GPU_GRES = re.compile(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)")


class SlurmError(DlbenchError):
    """A Slurm command failed; the message is its first line of complaint."""


def missing_commands() -> list[str]:
    return [name for name in COMMANDS if shutil.which(name) is None]


def call(args: list[str], timeout: float = CALL_TIMEOUT_S, stdin: str | None = None) -> str:
    """stdout of a Slurm command; SlurmError with its first line of stderr when it fails."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=stdin)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]}: not found on the PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(args[:2])}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise SlurmError(first_line(done.stderr or done.stdout) or f"{args[0]} exited {done.returncode}")
    return done.stdout


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def parse_record(line: str) -> dict[str, str]:
    """One `scontrol show ... -o` line as a dict (values may hold spaces: a key starts a
    field only after whitespace)."""
    found = list(_KEY.finditer(line))
    record = {}
    for here, after in zip(found, [*found[1:], None]):
        end = after.start() if after is not None else len(line)
        record[here.group(1)] = line[here.end():end].strip()
    return record


def munge_problem() -> str | None:
    """Why munge cannot authenticate this host's requests, or None (or no munge here)."""
    if shutil.which("munge") is None:
        return None
    done = subprocess.run(["munge", "-n"], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else first_line(done.stderr) or "munge -n failed"


def controller_problem() -> str | None:
    """None when the controller answers `scontrol ping`, else what it said."""
    try:
        out = call(["scontrol", "ping"], timeout=30)
    except SlurmError as exc:
        return str(exc)
    return None if " is UP" in out else first_line(out)


def auth_type() -> str:
    """AuthType of the local slurm.conf (auth/munge unless it says otherwise)."""
    try:
        out = call(["scontrol", "show", "config"], timeout=30)
    except SlurmError:
        return "auth/munge"
    match = re.search(r"^AuthType\s*=\s*(\S+)", out, re.M)
    return match.group(1) if match else "auth/munge"


def partitions() -> dict[str, dict[str, str]]:
    out = call(["scontrol", "show", "partition", "-o"])
    return {rec["PartitionName"]: rec for rec in map(parse_record, out.splitlines())
            if "PartitionName" in rec}


def default_partition(known: dict[str, dict[str, str]]) -> str | None:
    return next((name for name, rec in known.items() if rec.get("Default") == "YES"), None)


def nodes() -> dict[str, dict[str, str]]:
    out = call(["scontrol", "show", "node", "-o"])
    return {rec["NodeName"]: rec for rec in map(parse_record, out.splitlines()) if "NodeName" in rec}


def hostnames(hostlist: str) -> list[str]:
    """A Slurm hostlist (gpu[01-04],cpu7) expanded by Slurm itself."""
    return call(["scontrol", "show", "hostnames", hostlist]).split()


def gpus_of(node: dict[str, str]) -> int:
    """GPUs a node offers (its Gres: gpu:4, gpu:a100:4(S:0-1), ...)."""
    return sum(int(count) for count in _GPU_GRES.findall(node.get("Gres", "")))


def accounting() -> bool:
    """The cluster keeps accounting (slurmdbd): sacct and sacctmgr answer."""
    if shutil.which("sacctmgr") is None:
        return False
    try:
        call(["sacctmgr", "-n", "-P", "show", "cluster", "format=Cluster"], timeout=30)
    except SlurmError:
        return False
    return True


def known_names(kind: str) -> set[str]:
    """Accounts or QOS names the accounting database knows (kind: account or qos)."""
    field = "Account" if kind == "account" else "Name"
    out = call(["sacctmgr", "-n", "-P", "show", kind, f"format={field}"], timeout=30)
    return {line.strip() for line in out.splitlines() if line.strip()}


def test_only(options: list[str]) -> str | None:
    """What sbatch --test-only says against these options (nothing is submitted), or None."""
    try:
        call(["sbatch", "--test-only", *options, "--wrap", "true"], timeout=30)
    except SlurmError as exc:
        return str(exc).removeprefix("sbatch: error: ")
    return None


def submit(options: list[str], script: str, arguments: list[str]) -> str:
    """The job ID (of the array) sbatch --parsable prints."""
    out = call(["sbatch", "--parsable", *options, script, *arguments])
    return out.strip().split(";")[0]


@dataclass(frozen=True)
class QueueEntry:
    job_id: str     # 12 or, for an array's task, 12_3
    state: str
    node: str
    reason: str
    elapsed: str


def queue(array_ids: Iterable[str]) -> dict[str, QueueEntry]:
    """Every job and array task of these job IDs the controller still holds, finished ones
    included (while MinJobAge keeps them): one squeue call."""
    ids = sorted(set(array_ids))
    if not ids:
        return {}
    try:
        out = call(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids),
                    "-o", "%i|%T|%N|%r|%M"])
    except SlurmError as exc:
        if "Invalid job id" in str(exc):  # none of them is known any more
            return {}
        raise
    entries = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5:
            entries[parts[0]] = QueueEntry(*parts)
    return entries


def job_record(job_id: str) -> dict[str, str] | None:
    """scontrol's record of a job (an array task as 12_3), None once it is forgotten."""
    try:
        out = call(["scontrol", "show", "job", "-o", job_id])
    except SlurmError as exc:
        if "Invalid job id" in str(exc):
            return None
        raise
    line = next((line for line in out.splitlines() if line.startswith("JobId=")), None)
    return parse_record(line) if line else None


def accounting_record(job_id: str) -> dict[str, str] | None:
    """sacct's record of a job's allocation (where accounting is kept), with the batch
    step's MaxRSS; None where it has none."""
    if shutil.which("sacct") is None:
        return None
    fields = ["JobID", "State", "ExitCode", "NodeList", "Elapsed", "MaxRSS", "Partition"]
    try:
        out = call(["sacct", "-n", "-P", "-j", job_id, f"--format={','.join(fields)}"], timeout=30)
    except SlurmError:
        return None
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
    if not rows:
        return None
    record = rows[0]
    record["State"] = record["State"].split()[0]  # "CANCELLED by 0"
    record["MaxRSS"] = next((row["MaxRSS"] for row in rows if row["MaxRSS"]), "")
    return record


def cancel(job_ids: Iterable[str]) -> None:
    ids = sorted(set(job_ids))
    if ids:
        call(["scancel", *ids])


def job_ids_named(name: str) -> list[str]:
    """The array job IDs of jobs with this name (a submission whose ID was never recorded)."""
    out = call(["squeue", "-h", "-t", "all", "-n", name, "-o", "%A"])
    return sorted({line.strip() for line in out.splitlines() if line.strip()})
