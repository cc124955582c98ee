"""Signed bundles: who vouches for a bundle's MANIFEST.sha256, as an OpenSSH signature.

`dlbench verify` proves that a bundle's files match its manifest, but whoever edits a file
and rewrites its manifest line passes that. A signature over the manifest (`ssh-keygen -Y
sign`, namespace NAMESPACE) names who sealed what: checked against an allowed-signers file
(as git's gpg.ssh.allowedSignersFile), it names the signer, and any edit of a file with its
manifest line rewritten no longer verifies.

The signature is SIGNATURE beside the manifest: never listed in the manifest it signs
(bundle.NOT_RESULTS), packed and unpacked with the bundle like any file. Sealing again
(bundle.write_manifest) removes a signature of a manifest it replaces: a bundle re-sealed
after signing is unsigned, not signed with a signature that no longer verifies.

ssh-keygen runs with an argument list (never a shell) and a timeout. It never opens a path
of the bundle: the manifest reaches it on stdin and the signature as a private temporary
copy, both as read here without following a link, the signature at most
MAX_SIGNATURE_BYTES. A signature file is checked for its form (an armoured SSH signature of
NAMESPACE) before ssh-keygen sees it. Nothing here prints: the CLI says what it returns.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.results import bundle, nofollow

NAMESPACE = "dlbench-bundle"
SIGNATURE = bundle.SIGNATURE
MANIFEST = bundle.MANIFEST
# An armoured RSA-16384 signature is under 6 KiB: anything larger is no signature, and is
# never read whole.
MAX_SIGNATURE_BYTES = 16 * 1024
SIGN_TIMEOUT_S = 300     # a passphrase typed at ssh-keygen's prompt, or a security key touched
CHECK_TIMEOUT_S = 60
NO_SSH_KEYGEN = "ssh-keygen not found: signing and checking signatures need it (install openssh-client)"
_ARMOUR = re.compile(rb"\A-----BEGIN SSH SIGNATURE-----\r?\n([A-Za-z0-9+/=\r\n]+)"
                     rb"-----END SSH SIGNATURE-----\r?\n?\Z")
_PROMPT = re.compile(r"^(Enter passphrase[^:]*:\s*)+")
_KEY_TYPES = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA",
              "ecdsa-sha2-nistp256": "ECDSA", "ecdsa-sha2-nistp384": "ECDSA", "ecdsa-sha2-nistp521": "ECDSA",
              "sk-ssh-ed25519@openssh.com": "ED25519-SK", "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK"}


@dataclass(frozen=True)
class Status:
    """What is known of a bundle's signature. verified: True (checked against an
    allowed-signers file), False (absent when asked for, malformed, or refused), None (not
    checked). signer: the principal the allowed-signers file gives the key. key: 'ED25519
    key SHA256:…' as ssh-keygen names it. message: one line saying all that."""

    signed: bool
    verified: bool | None
    signer: str | None
    message: str
    key: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Signature:
    armoured: bytes
    namespace: str
    key: str


class _Malformed(Exception):
    """A signature file that is no armoured SSH signature: why, in a few words."""


# ---------------------------------------------------------------------------
# What other code calls
# ---------------------------------------------------------------------------

def signature_status(bundle_dir: str | Path, signers_file: str | Path | None = None) -> dict:
    """{"signed", "verified", "signer", "message", "key"} of a bundle (a directory or its
    .tar.gz), checked against `signers_file` when given. Never raises: what cannot be known
    (ssh-keygen missing, no such bundle) is verified None (or False) with the reason."""
    try:
        with bundle.opened(Path(bundle_dir)) as directory:
            status = check(directory, Path(signers_file)) if signers_file else present(directory)
    except DlbenchError as exc:
        return Status(signed=False, verified=None, signer=None, message=str(exc)).as_dict()
    return status.as_dict()


def present(directory: Path) -> Status:
    """The signature as found, not checked (no ssh-keygen, no allowed signers): its form
    only. verified is False for a signature file that is malformed, None otherwise."""
    found = _read(Path(directory))
    if isinstance(found, Status):
        return found
    if found is None:
        return Status(signed=False, verified=None, signer=None, message=f"{SIGNATURE}: absent (not signed)")
    return Status(signed=True, verified=None, signer=None, key=found.key,
                  message=f"Signature present, not checked: {SIGNATURE} ({found.key}); "
                          "give --signers FILE to check who signed")


def form_problems(directory: Path) -> list[tuple[str, str]]:
    """verify's problems with the signature file itself, without ssh-keygen: a signature
    file is an armoured SSH signature of NAMESPACE, or a problem ([] when absent)."""
    status = present(directory)
    return [(SIGNATURE, status.message)] if status.verified is False else []


def check(directory: Path, signers: Path) -> Status:
    """The signature checked against the allowed-signers file `signers`: verified True and the
    signer named, or False with the reason in one line. A DlbenchError (one line) when it
    cannot be checked here: ssh-keygen missing, the allowed-signers file unreadable."""
    directory = Path(directory)
    found = _read(directory)
    if isinstance(found, Status):
        return found
    if found is None:
        return Status(signed=False, verified=False, signer=None,
                      message=f"{SIGNATURE}: missing (the bundle is not signed: `dlbench sign BUNDLE --key KEY`)")
    try:
        manifest = nofollow.read_bytes(directory, MANIFEST)
    except (FileNotFoundError, nofollow.RefusedEntry) as exc:
        what = "missing" if isinstance(exc, FileNotFoundError) else str(exc)
        return Status(signed=True, verified=False, signer=None, key=found.key,
                      message=f"{SIGNATURE}: signs no manifest ({MANIFEST}: {what})")
    require_signers_file(signers)
    with tempfile.TemporaryDirectory(prefix="dlbench-signature-") as tmp:
        signature_path = _private_copy(Path(tmp), found.armoured)
        principal, why = _find_principal(signers, signature_path)
        if principal is None:
            return Status(signed=True, verified=False, signer=None, key=found.key,
                          message=f"{SIGNATURE}: signed with {found.key}, which {signers} does not list "
                                  f"as a signer of {NAMESPACE}{why}")
        result = ssh_keygen(["-Y", "verify", "-f", str(signers), "-I", principal, "-n", NAMESPACE,
                             "-s", str(signature_path)], stdin=manifest, timeout=CHECK_TIMEOUT_S)
    if result.returncode != 0:
        said = _last_line(result.stderr)
        why = (f"does not match {MANIFEST} (the manifest was rewritten after signing: re-sealed, or "
               "edited)" if not said or "incorrect signature" in said else f"refused by ssh-keygen ({said})")
        return Status(signed=True, verified=False, signer=None, key=found.key,
                      message=f"{SIGNATURE}: {why}; signed with {found.key} ({principal} in {signers})")
    return Status(signed=True, verified=True, signer=principal, key=found.key,
                  message=f"Signed by {principal} ({found.key}, listed in {signers})")


def sign(directory: Path, key: Path) -> Status:
    """Sign `directory`'s MANIFEST.sha256 with `key` (a private key file, or a public key
    file whose private key is in ssh-agent) into SIGNATURE, replacing any signature there.
    ssh-keygen asks for a passphrase on the terminal itself. The signature written is checked
    against the manifest bytes first. One-line DlbenchError on every failure."""
    directory, key = Path(directory), Path(key)
    if not key.is_file():
        raise DlbenchError(f"{key}: no such key file (give a private key, or a public key whose "
                           "private key is in ssh-agent)")
    try:
        manifest = nofollow.read_bytes(directory, MANIFEST)
    except FileNotFoundError:
        raise DlbenchError(f"{directory}: {bundle.NEVER_SEALED}; only a sealed bundle is signed") from None
    result = ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE], stdin=manifest,
                        timeout=SIGN_TIMEOUT_S)
    if result.returncode != 0:
        said = _last_line(result.stderr) or f"exit {result.returncode}"
        hint = ("; a key with a passphrase needs a terminal to type it in, or ssh-agent: `ssh-add KEY`, "
                "then --key KEY.pub") if "passphrase" in said else ""
        raise DlbenchError(f"{key}: ssh-keygen could not sign with it ({said}){hint}")
    try:
        signature = _parse(result.stdout)
    except _Malformed as exc:
        raise DlbenchError(f"ssh-keygen -Y sign wrote no SSH signature ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="dlbench-signature-") as tmp:
        made = ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s",
                           str(_private_copy(Path(tmp), signature.armoured))],
                          stdin=manifest, timeout=CHECK_TIMEOUT_S)
    if made.returncode != 0:  # e.g. a passphrase read from stdin, where no terminal was
        raise DlbenchError(f"{key}: the signature ssh-keygen made does not verify against {MANIFEST} "
                           f"({_last_line(made.stderr) or 'no reason given'}); nothing was written")
    bundle.write_atomic(directory / SIGNATURE, signature.armoured)
    return Status(signed=True, verified=None, signer=None, key=signature.key,
                  message=f"Signed: {directory / SIGNATURE} ({signature.key})")


def require_signers_file(signers: Path) -> None:
    if not Path(signers).is_file():
        raise DlbenchError(f"{signers}: no such allowed-signers file (one line per signer: "
                           "'PRINCIPAL KEYTYPE BASE64KEY', as git's gpg.ssh.allowedSignersFile)")


# ---------------------------------------------------------------------------
# Reading the signature file (never following a link, never more than it may be)
# ---------------------------------------------------------------------------

def _read(directory: Path) -> _Signature | Status | None:
    """The signature file parsed; None when absent; a Status (verified False) naming what is
    wrong with it."""
    try:
        fd = nofollow.open_regular(directory, SIGNATURE)
    except FileNotFoundError:
        return None
    except nofollow.RefusedEntry as exc:
        return Status(signed=True, verified=False, signer=None, message=str(exc))
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(MAX_SIGNATURE_BYTES + 1) if size <= MAX_SIGNATURE_BYTES else b""
    if size > MAX_SIGNATURE_BYTES or len(data) > MAX_SIGNATURE_BYTES:
        return Status(signed=True, verified=False, signer=None,
                      message=f"{SIGNATURE}: {max(size, len(data)):,} bytes, more than an SSH signature "
                              f"ever is ({MAX_SIGNATURE_BYTES // 1024} KiB); not read")
    try:
        signature = _parse(data)
    except _Malformed as exc:
        return Status(signed=True, verified=False, signer=None,
                      message=f"{SIGNATURE}: not an SSH signature ({exc})")
    if signature.namespace != NAMESPACE:
        return Status(signed=True, verified=False, signer=None, key=signature.key,
                      message=f"{SIGNATURE}: a signature for {signature.namespace!r}, not for "
                              f"{NAMESPACE!r} (made by another tool, not `dlbench sign`)")
    return signature


def _parse(armoured: bytes) -> _Signature:
    """The namespace and key of an armoured SSHSIG (OpenSSH's PROTOCOL.sshsig): magic,
    version 1, then strings: public key, namespace, reserved, hash algorithm, signature."""
    match = _ARMOUR.match(armoured)
    if not match:
        raise _Malformed("no '-----BEGIN SSH SIGNATURE-----' armour around base64")
    try:
        blob = base64.b64decode(re.sub(rb"\s", b"", match.group(1)), validate=True)
    except ValueError:
        raise _Malformed("its base64 does not decode") from None
    if not blob.startswith(b"SSHSIG") or len(blob) < 10 or struct.unpack(">I", blob[6:10])[0] != 1:
        raise _Malformed("not an SSHSIG blob of version 1")
    fields, offset = [], 10
    for _ in range(5):
        if offset + 4 > len(blob):
            raise _Malformed("truncated")
        (length,) = struct.unpack(">I", blob[offset:offset + 4])
        if offset + 4 + length > len(blob):
            raise _Malformed("truncated")
        fields.append(blob[offset + 4:offset + 4 + length])
        offset += 4 + length
    public_key, namespace = fields[0], fields[1]
    try:
        return _Signature(armoured, namespace.decode("ascii"), _describe_key(public_key))
    except UnicodeDecodeError:
        raise _Malformed("its namespace is not ASCII") from None


def _describe_key(public_key: bytes) -> str:
    """'ED25519 key SHA256:…', the fingerprint as ssh-keygen -l shows it."""
    fingerprint = base64.b64encode(hashlib.sha256(public_key).digest()).decode("ascii").rstrip("=")
    key_type = ""
    if len(public_key) >= 4:
        (length,) = struct.unpack(">I", public_key[:4])
        key_type = public_key[4:4 + length].decode("ascii", "replace")
    shown = _KEY_TYPES.get(key_type) or (key_type if re.fullmatch(r"[\w@.-]{1,64}", key_type) else "unknown")
    return f"{shown} key SHA256:{fingerprint}"


def _private_copy(tmp: Path, data: bytes) -> Path:
    """The signature bytes as read here, in a file of our own that ssh-keygen may open."""
    path = tmp / SIGNATURE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


# ---------------------------------------------------------------------------
# Running ssh-keygen
# ---------------------------------------------------------------------------

def _find_principal(signers: Path, signature_path: Path) -> tuple[str | None, str]:
    """(the first principal `signers` gives the signature's key for NAMESPACE, or None;
    ssh-keygen's reason when it says more than that none matched, as ' (…)')."""
    result = ssh_keygen(["-Y", "find-principals", "-f", str(signers), "-n", NAMESPACE,
                         "-s", str(signature_path)], stdin=None, timeout=CHECK_TIMEOUT_S)
    principals = [line.strip() for line in result.stdout.decode("utf-8", "replace").splitlines()
                  if line.strip()]
    if result.returncode == 0 and principals:
        return principals[0], ""
    said = _last_line(result.stderr)
    return None, (f" (ssh-keygen: {said})" if said and "No principal matched" not in said else "")


def ssh_keygen(args: list[str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
    """ssh-keygen ARGS: stdin the given bytes (or nothing), stdout and stderr captured; its
    terminal prompts (a passphrase) go to /dev/tty as ever. Stopped after `timeout` s, with
    SIGTERM first so that a prompt restores the terminal's echo."""
    program = shutil.which("ssh-keygen")
    if program is None:
        raise DlbenchError(NO_SSH_KEYGEN)
    try:
        process = subprocess.Popen([program, *args], stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise DlbenchError(f"{program}: cannot run ({exc.strerror or exc}); install openssh-client") from None
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise DlbenchError(f"ssh-keygen {' '.join(args[:2])} did not finish within {timeout:g} s; "
                           "stopped") from None
    except BaseException:  # Ctrl-C at a prompt: never leave it behind
        _stop(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _last_line(stderr: bytes) -> str:
    """ssh-keygen's last word on stderr, without its chatter and a prompt's text before it."""
    lines = [_PROMPT.sub("", line).strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and line != "Signing data on standard input"]
    return lines[-1][:300] if lines else ""
