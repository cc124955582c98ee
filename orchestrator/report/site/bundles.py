"""One bundle as the results site sees it: verified or not, who signed it, the machine it
ran on, its report re-rendered, and its groups of repeats as leaderboard entries.

Reads a bundle only through orchestrator.results.bundle.opened (a .tar.gz is checked member
by member before anything is extracted) and orchestrator.results.nofollow (no link is ever
followed). Nothing read here depends on where the bundle lies or when the site is made:
paths are shown by the bundle's name, never by its location or a temporary directory.
A bundle's own report.html is never copied: its page is rendered again from its files, so
no HTML a bundle carries reaches the site.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import report
from orchestrator.analysis import consistency, stats
from orchestrator.analysis.groups import Group
from orchestrator.errors import DlbenchError
from orchestrator.results import bundle, nofollow
from orchestrator.results.metrics import Metric, metric_named

# The leaderboard's figures, rows of orchestrator.results.metrics: the first ranks.
LEADERBOARD_METRICS = ("images_per_s", "steady_images_per_s")
SIGNING_MODULE = "orchestrator.results.signing"
UNSIGNED = {"signed": False, "verified": None, "signer": None, "message": "unsigned"}
UNRECORDED = "unrecorded"


def leaderboard_metrics() -> list[Metric]:
    return [metric_named(key) for key in LEADERBOARD_METRICS]


@dataclass(frozen=True)
class Machine:
    """A kind of host: CPU model and cores, GPUs and driver (from system.json). Two hosts
    alike in these are one machine; a driver upgrade makes another."""
    cpu: str
    cores: int | None
    gpus: tuple[tuple[str, int], ...]   # (name, how many), sorted
    driver: str | None

    @property
    def key(self) -> str:
        identity = json.dumps([self.cpu, self.cores, [list(g) for g in self.gpus], self.driver])
        return "m-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:10]

    @property
    def gpu_text(self) -> str:
        return ", ".join(f"{count}× {name}" for name, count in self.gpus) or "none"

    @property
    def label(self) -> str:
        """'2× NVIDIA H100 (driver 550.54) · AMD EPYC, 64 cores': GPUs first, they decide."""
        cores = f", {self.cores} cores" if self.cores else ""
        host = f"{self.cpu}{cores}"
        if not self.gpus:
            return host
        driver = f" (driver {self.driver})" if self.driver else ""
        return f"{self.gpu_text}{driver} · {host}"


def machine_of(system: Any) -> Machine:
    system = system if isinstance(system, dict) else {}
    cpu = system.get("cpu") if isinstance(system.get("cpu"), dict) else {}
    cores = cpu.get("logical_cores")
    gpus = [g for g in system.get("gpus") or [] if isinstance(g, dict)] \
        if isinstance(system.get("gpus"), list) else []
    names = Counter(str(g.get("name") or "unnamed GPU") for g in gpus)
    drivers = sorted({str(g["driver"]) for g in gpus if g.get("driver")})
    return Machine(cpu=str(cpu.get("model") or "unknown CPU"),
                   cores=cores if isinstance(cores, int) and not isinstance(cores, bool) else None,
                   gpus=tuple(sorted(names.items())), driver=", ".join(drivers) or None)


@dataclass
class Entry:
    """One group of repeats of one bundle: a row of its workload's leaderboard."""
    bundle: BundleRecord
    group: Group
    precision: str
    figures: dict[str, dict]   # metric key -> stats.describe() of its values over repeats

    @property
    def machine(self) -> Machine:
        return self.bundle.machine

    @property
    def options(self) -> str:
        return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(self.group.options.items()))

    @property
    def config(self) -> tuple:
        """What must agree for two machines' entries to be the same experiment."""
        g = self.group
        return (g.workload, g.framework, g.api, self.precision, g.device, g.batch_size or 0,
                g.dataset, g.synthetic, self.options, g.topology)

    def mean(self, metric: str) -> float | None:
        return self.figures[metric].get("mean")


@dataclass
class BundleRecord:
    name: str                   # the bundle's name (its directory, or archive without .tar.gz)
    digest: str                 # sha256 over its files and their contents
    machine: Machine
    suite: str
    backend: str
    started_at: str | None
    runs: int
    ok_runs: int
    problems: list[str]         # `dlbench verify`'s lines; [] when it verifies
    signature: dict             # signed, verified, signer, message
    report_html: str | None     # its report, rendered again from its files
    report_note: str            # why there is none, or whether it matches the bundle's own
    entries: list[Entry] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"{slugify(self.name)}-{self.digest[:10]}"

    @property
    def verified(self) -> bool:
        return not self.problems

    @property
    def signature_broken(self) -> bool:
        """A signature that does not verify: malformed, refused, or (with an allowed-signers
        file given) absent, as `dlbench verify --signers` fails it."""
        return self.signature.get("verified") is False

    @property
    def trusted(self) -> bool:
        """Its manifest, schemas and cross-file checks pass, and its signature, where there
        is one to check, verifies. Only trusted bundles are ranked and compared."""
        return self.verified and not self.signature_broken

    @property
    def signer_text(self) -> str:
        sig = self.signature
        if sig.get("verified"):
            return str(sig.get("signer") or sig.get("key") or "a trusted key")
        if sig.get("verified") is False:
            who = sig.get("signer") or ("a key" if sig.get("signed") else "no signature")
            return f"{who} (signature does NOT verify)" if sig.get("signed") else f"{who} (one was required)"
        return "signed, not checked (give --signers)" if sig.get("signed") else "unsigned"


def slugify(text: str) -> str:
    """A file name from any text: lower-case letters, digits and dashes, at most 48."""
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    slug = "-".join(part for part in slug.split("-") if part)[:48].strip("-")
    return slug or "x"


def verification_problems(directory: Path) -> list[str]:
    """Everything `dlbench verify` checks: each file against the manifest and its schema,
    then (only when those pass) the files against each other. (The signature file's form,
    which `dlbench verify` checks too, is signature_status's: a malformed one is verified False.)"""
    found = bundle.located_problems(directory)
    if not found:
        found = consistency.located_problems(directory)
    return [line for _, line in found]


def _signing():
    """orchestrator.results.signing, or None in a dlbench without it (adapter: the site
    works either way, every bundle then unsigned)."""
    try:
        return importlib.import_module(SIGNING_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != SIGNING_MODULE:
            raise
        return None


def require_signers(signers: Path) -> None:
    """Before any work: an allowed-signers file that exists, and the means to check it."""
    signing = _signing()
    if signing is None:
        raise DlbenchError(f"{signers}: this dlbench cannot check signatures (no {SIGNING_MODULE})")
    signing.require_signers_file(signers)
    if shutil.which("ssh-keygen") is None:
        raise DlbenchError(signing.NO_SSH_KEYGEN)


def signature_status(directory: Path, signers: Path | None) -> dict:
    """signing.signature_status's verdict (signed, verified, signer, message), else unsigned."""
    signing = _signing()
    if signing is None:
        return dict(UNSIGNED)
    status = signing.signature_status(directory, signers_file=signers)
    return {**UNSIGNED, **{key: value for key, value in status.items() if value is not None}}


def content_digest(directory: Path) -> str:
    """sha256 over every file's relative path and sha256 (the manifest's lines, made again)."""
    digest = hashlib.sha256()
    for rel in bundle.bundle_files(directory):
        digest.update(f"{nofollow.sha256(directory, rel)}  {rel}\n".encode())
    return digest.hexdigest()


def precision_of(group: Group) -> str:
    """The precision policy the runs applied (metrics), else asked for (spec)."""
    for row in group.rows:
        metrics, spec = row.get("metrics") or {}, row.get("spec") or {}
        policy = (metrics.get("precision") or {}).get("policy") \
            or (metrics.get("hyperparameters") or {}).get("precision") or spec.get("precision")
        if policy:
            return str(policy)
    return UNRECORDED


def read(source: Path, signers: Path | None = None) -> BundleRecord:
    """The bundle at `source` (a directory or .tar.gz). A bundle that cannot be opened safely
    is a one-line DlbenchError; one that opens but does not verify is recorded as such."""
    name = bundle.bundle_name(Path(source))
    with bundle.opened(source) as directory:
        problems = verification_problems(directory)
        signature = _shown(signature_status(directory, signers), directory, name)
        system = _json(directory, "system.json")
        plan = _json(directory, "plan.json")
        context, why = _context(directory, name, verified=not problems)
        html = report.render(context) if context else None
        note = _shown(why, directory, name) if why else _same_as_own(directory, html)
        record = BundleRecord(
            name=name, digest=content_digest(directory), machine=machine_of(system),
            suite=str((plan if isinstance(plan, dict) else {}).get("suite") or name),
            backend=str((plan if isinstance(plan, dict) else {}).get("backend") or "unknown"),
            started_at=_started_at(context), runs=len(context["runs"]) if context else 0,
            ok_runs=sum(len(g.rows) for g in context["groups"]) if context else 0,
            problems=[_shown(p, directory, name) for p in problems], signature=signature,
            report_html=html, report_note=note)
    if context:
        record.entries = [Entry(record, g, precision_of(g),
                                {m.key: stats.describe(g.values(m.key)) for m in leaderboard_metrics()})
                          for g in context["groups"]]
    return record


def _context(directory: Path, name: str, verified: bool) -> tuple[dict | None, str | None]:
    """report.load's context, or None and why not: a bundle whose documents are not of
    their schemas, or that holds a link, is not read further."""
    try:
        bundle.require_documents(directory, Path(name))
        return report.load(directory), None
    except DlbenchError as exc:
        return None, f"not rendered: {exc}"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if verified:
            raise  # a bundle that verifies and cannot be read: a bug here, not the bundle's
        return None, f"not rendered: its files do not fit together ({type(exc).__name__})"


def _started_at(context: dict | None) -> str | None:
    if not context:
        return None
    started = sorted(str(r["record"]["started_at"]) for r in context["runs"]
                     if isinstance(r.get("record"), dict) and r["record"].get("started_at"))
    return started[0] if started else None


def _same_as_own(directory: Path, html: str | None) -> str:
    try:
        own = nofollow.read_bytes(directory, "report.html")
    except (FileNotFoundError, DlbenchError):
        return "rendered again from the bundle's files (the bundle has no readable report.html)"
    if html is not None and own == html.encode("utf-8"):
        return "byte-identical to the bundle's own report.html"
    return "rendered again from the bundle's files (its own report.html differs: another dlbench version)"


def _json(directory: Path, rel: str):
    try:
        return nofollow.read_json_or_none(directory, rel)
    except DlbenchError:
        return None


def _shown(value, directory: Path, name: str):
    """Messages name the bundle, never the (temporary) directory it was read from."""
    if isinstance(value, dict):
        return {k: _shown(v, directory, name) for k, v in value.items()}
    if isinstance(value, str):
        return value.replace(str(directory), name)
    return value
