"""Signed bundles (`dlbench sign`, `dlbench verify --signers`) with the real ssh-keygen.

The key case: a forger who edits a run's throughput, re-derives summary.json, summary.csv and
the report from it and rewrites their manifest lines passes `dlbench verify`, but not
`dlbench verify --signers`. Keys are made here (ed25519, no passphrase); everything starts
from a copy of tests/fixtures/bundle-small.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from orchestrator import cli, report
from orchestrator.analysis.summary import summarize
from orchestrator.paths import REPO_ROOT
from orchestrator.results import bundle, signing
from orchestrator.results.signing import SIGNATURE, signature_status

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "bundle-small"
PT = "01-pytorch-eager"

# Real OpenSSH signatures: ssh-keygen must be here (.ci/run installs openssh-client); a
# machine without it fails these tests rather than skipping them.


def dlbench(*args, capsys) -> tuple[int, list[str], str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.rstrip("\n").splitlines(), err.strip()


def keygen(where: Path, name: str) -> Path:
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, timeout=60)
    return key


def fingerprint(key: Path) -> str:
    line = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    return f"ED25519 key {line.split()[1]}"


def allowed_signers(path: Path, **principals: Path) -> Path:
    path.write_text("".join(f"{name} {Path(f'{key}.pub').read_text()}" for name, key in principals.items()))
    return path


@pytest.fixture()
def keys(tmp_path):
    where = tmp_path / "keys"
    where.mkdir()
    alice, bob = keygen(where, "alice"), keygen(where, "bob")
    return alice, bob, allowed_signers(where / "allowed_signers", **{"alice@example.org": alice})


@pytest.fixture()
def signed(tmp_path, keys, capsys) -> Path:
    copy = tmp_path / "20261122-000000-small"
    shutil.copytree(FIXTURE, copy)
    code, lines, err = dlbench("sign", copy, "--key", keys[0], capsys=capsys)
    assert code == 0, err
    assert lines[0] == f"Signed: {copy / SIGNATURE} ({fingerprint(keys[0])})"
    return copy


def rehash(path: Path, *rels: str) -> None:
    """What a forger does after editing files: rewrite their manifest lines (sha256sum style)."""
    manifest = path / bundle.MANIFEST
    lines = dict(reversed(line.split("  ", 1)) for line in manifest.read_text().splitlines())
    for rel in rels:
        lines[rel] = hashlib.sha256((path / rel).read_bytes()).hexdigest()
    manifest.write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(lines.items())))


def test_a_signed_bundle_verifies_naming_its_signer(signed, keys, capsys):
    alice, _, signers = keys
    assert SIGNATURE not in (signed / bundle.MANIFEST).read_text()  # the manifest never lists it
    code, lines, err = dlbench("verify", signed, "--signers", signers, capsys=capsys)
    assert (code, err) == (0, "")
    assert lines == [f"Signed by alice@example.org ({fingerprint(alice)}, listed in {signers})",
                     f"Bundle verified: {signed}"]
    code, lines, _ = dlbench("verify", signed, capsys=capsys)  # without --signers: one line, unchecked
    assert code == 0 and lines == [
        f"Signature present, not checked: {SIGNATURE} ({fingerprint(alice)}); give --signers FILE to check "
        "who signed", f"Bundle verified: {signed}"]
    assert signature_status(signed, signers) == {
        "signed": True, "verified": True, "signer": "alice@example.org", "key": fingerprint(alice),
        "message": f"Signed by alice@example.org ({fingerprint(alice)}, listed in {signers})"}
    assert signature_status(signed) | {"message": ""} == {
        "signed": True, "verified": None, "signer": None, "key": fingerprint(alice), "message": ""}


def test_an_edit_with_its_manifest_lines_rewritten_passes_verify_but_not_signers(signed, keys, capsys):
    """The issue's case: throughput edited, everything derived from it re-derived, the manifest
    lines rewritten. Hashes, schemas and consistency all agree; the signature does not."""
    metrics = json.loads((signed / "runs" / PT / "metrics.json").read_text())
    metrics["timing"]["images_per_s"] *= 10
    (signed / "runs" / PT / "metrics.json").write_text(json.dumps(metrics, indent=2))
    context = report.load(signed)
    summary = summarize(context["runs"], analyses=context)
    (signed / "summary.json").write_text(json.dumps(summary, indent=2))
    (signed / "summary.csv").write_text(bundle.summary_csv(summary))
    (signed / "report.html").write_text(report.render(report.load(signed)))
    rehash(signed, f"runs/{PT}/metrics.json", "summary.json", "summary.csv", "report.html")

    code, lines, _ = dlbench("verify", signed, capsys=capsys)
    assert code == 0 and lines[-1] == f"Bundle verified: {signed}"
    code, lines, err = dlbench("verify", signed, "--signers", keys[2], capsys=capsys)
    assert code == 1 and err == ""
    assert lines == [f"  {SIGNATURE}: does not match {bundle.MANIFEST} (the manifest was rewritten after "
                     f"signing: re-sealed, or edited); signed with {fingerprint(keys[0])} "
                     f"(alice@example.org in {keys[2]})",
                     f"Bundle does NOT verify: {signed} (1 problem(s))"]
    status = signature_status(signed, keys[2])
    assert (status["signed"], status["verified"], status["signer"]) == (True, False, None)


def test_a_signer_not_in_the_file_fails_in_one_line(signed, keys, capsys):
    _, bob, _ = keys
    only_bob = allowed_signers(signed.parent / "only_bob", **{"bob@example.org": bob})
    code, lines, _ = dlbench("verify", signed, "--signers", only_bob, capsys=capsys)
    assert code == 1 and lines == [
        f"  {SIGNATURE}: signed with {fingerprint(keys[0])}, which {only_bob} does not list as a signer "
        "of dlbench-bundle", f"Bundle does NOT verify: {signed} (1 problem(s))"]
    code, lines, err = dlbench("sign", signed, "--key", bob, capsys=capsys)  # re-signed by bob
    assert code == 0 and lines[0] == f"Replaced the previous signature ({fingerprint(keys[0])})."
    assert dlbench("verify", signed, "--signers", only_bob, capsys=capsys)[1][0].startswith(
        "Signed by bob@example.org")


def test_a_missing_signature_fails_with_signers_and_is_silent_without(tmp_path, keys, capsys):
    copy = tmp_path / "unsigned"
    shutil.copytree(FIXTURE, copy)
    code, lines, _ = dlbench("verify", copy, capsys=capsys)
    assert code == 0 and lines == [f"Bundle verified: {copy}"]  # as before signing existed
    code, lines, _ = dlbench("verify", copy, "--signers", keys[2], capsys=capsys)
    assert code == 1 and lines == [
        f"  {SIGNATURE}: missing (the bundle is not signed: `dlbench sign BUNDLE --key KEY`)",
        f"Bundle does NOT verify: {copy} (1 problem(s))"]
    assert signature_status(copy)["signed"] is False


def test_usage_errors_are_one_line(signed, keys, capsys, monkeypatch):
    archive = bundle.pack(signed)
    code, _, err = dlbench("sign", archive, "--key", keys[0], capsys=capsys)
    assert code == 2 and err == (f"dlbench: error: {archive}: a packed bundle; sign its results directory, "
                                 "then pack it (dlbench sign DIR --key KEY && dlbench pack DIR)")
    code, _, err = dlbench("verify", signed, "--signers", signed.parent / "nope", capsys=capsys)
    assert code == 2 and err.startswith(f"dlbench: error: {signed.parent / 'nope'}: no such allowed-signers file")
    code, _, err = dlbench("sign", signed, "--key", signed.parent / "nokey", capsys=capsys)
    assert code == 2 and "no such key file" in err and "\n" not in err
    (signed / "notes.txt").write_text("added after sealing")
    code, _, err = dlbench("sign", signed, "--key", keys[0], capsys=capsys)
    assert code == 2 and "does not verify (notes.txt: added" in err
    (signed / "notes.txt").unlink()
    monkeypatch.setenv("PATH", str(signed.parent / "empty"))  # no ssh-keygen anywhere
    code, _, err = dlbench("verify", signed, "--signers", keys[2], capsys=capsys)
    assert code == 2 and err == f"dlbench: error: {signing.NO_SSH_KEYGEN}"
    assert "install openssh-client" in signature_status(signed, keys[2])["message"]


def test_a_packed_bundle_keeps_its_signature(signed, keys, capsys):
    archive = bundle.pack(signed, signed.parent / "packed.tar.gz")
    with tarfile.open(archive) as tar:
        assert f"{signed.name}/{SIGNATURE}" in tar.getnames()
    assert bundle.pack(signed, signed.parent / "again.tar.gz").read_bytes() == archive.read_bytes()
    code, lines, _ = dlbench("verify", archive, "--signers", keys[2], capsys=capsys)
    assert code == 0 and lines[0].startswith("Signed by alice@example.org")
    assert signature_status(archive, keys[2])["signer"] == "alice@example.org"


def test_sealing_again_removes_a_signature_of_another_manifest(signed, keys):
    bundle.seal(signed)  # as this version seals it (summary.csv's columns follow the metrics table)
    signing.sign(signed, keys[0])
    assert bundle.seal(signed) is None  # the same manifest: the signature still holds, and is kept
    assert signature_status(signed, keys[2])["verified"] is True
    (signed / "report.html").write_text("re-rendered by another version")
    said = bundle.seal(signed)
    assert said == (f"{signed / SIGNATURE}: removed: it signed the manifest this seal replaced; "
                    "sign the bundle again (dlbench sign)")
    assert not (signed / SIGNATURE).exists() and bundle.verify(signed) == []


@pytest.mark.parametrize("plant, expected", [
    (lambda p, host: p.symlink_to(host), f"{SIGNATURE}: a symbolic link (a bundle holds only regular files"),
    (lambda p, host: os.mkfifo(p), f"{SIGNATURE}: a FIFO (named pipe)"),
    (lambda p, host: p.mkdir(), f"{SIGNATURE}: a directory where a file belongs"),
    (lambda p, host: p.write_bytes(os.urandom(4096)), f"{SIGNATURE}: not an SSH signature (no '-----BEGIN"),
    (lambda p, host: p.write_bytes(b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n"),
     f"{SIGNATURE}: not an SSH signature (truncated)"),
    (lambda p, host: p.write_bytes(b"\0" * (signing.MAX_SIGNATURE_BYTES + 1)),
     f"{SIGNATURE}: 16,385 bytes, more than an SSH signature ever is (16 KiB); not read"),
    (lambda p, host: p.write_bytes(subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(host.parent / "keys" / "alice"), "-n", "git"],
        input=b"x", capture_output=True, check=True, timeout=60).stdout),
     f"{SIGNATURE}: a signature for 'git', not for 'dlbench-bundle'"),
])
def test_a_hostile_signature_file_is_one_problem_never_followed(tmp_path, keys, capsys, plant, expected):
    copy = tmp_path / "hostile"
    shutil.copytree(FIXTURE, copy)
    host = tmp_path / "secret"
    host.write_bytes((FIXTURE / SIGNATURE.replace(".sig", "")).read_bytes())  # a readable target
    plant(copy / SIGNATURE, host)
    for signers in ((), ("--signers", keys[2])):
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "verify", str(copy), *signers],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)  # a FIFO: no hang
        assert proc.returncode == 1 and proc.stderr == "" and "Traceback" not in proc.stdout
        problems = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
        assert len(problems) == 1 and problems[0].startswith(f"  {expected}"), proc.stdout
    status = signature_status(copy, keys[2])
    assert (status["signed"], status["verified"]) == (True, False)
    code, _, err = dlbench("pack", copy, "-o", tmp_path / "out.tar.gz", capsys=capsys)
    assert code == 2 and SIGNATURE in err and not (tmp_path / "out.tar.gz").exists()
