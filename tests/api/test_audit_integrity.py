"""Audit integrity that does not rest on the database, attacked as someone who can write it would.

One private server; events through the CLI; signed checkpoints taken; then the control database is
rewritten with plain sqlite3: the whole chain renumbered and rehashed with correct (unkeyed) hashes and
its head moved, the tail deleted with the head moved back, one event's payload edited. Each is found by
`mlgate audit verify` on the server, and by `mlgate audit verify --bundle` offline on a bundle exported
after the tampering, held to the server's public key.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from mlgate.domain.audit import GENESIS
from tests.api.test_audit_chain import ControlDb, cli, rehash
from tests.support.project import LiveServer, Project, start_server, stop_server


@pytest.fixture
def server(project: Project) -> Iterator[LiveServer]:
    running = start_server(project)
    yield running
    stop_server(running)


def public_key_file(server: LiveServer, folder: Path) -> Path:
    """The server's public key, as its operator would hand it to an auditor."""
    private = load_pem_private_key((server.project.settings.home / "secrets" / "audit-signing.key").read_bytes(), None)
    path = folder / "audit-public.pem"
    path.write_bytes(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def rewrite_chain(db: ControlDb, *, drop: int, actor: str) -> None:
    """Delete event `drop`, renumber and relabel what follows, rehash and relink every event, move the head:
    a chain that verifies without the key."""
    rows = [db.event(seq) for seq in range(1, db.head()[0] + 1) if seq != drop]
    prev = GENESIS
    for seq, row in enumerate(rows, start=1):
        row |= {"seq": seq, "actor": actor if seq >= drop else row["actor"], "prev_hash": prev}
        row["hash"] = prev = rehash(row)
    db.restore([tuple(r.values()) for r in rows], (len(rows), prev))


def delete_tail(db: ControlDb, *, keep: int) -> None:
    with_rows = [db.event(seq) for seq in range(1, keep + 1)]
    db.restore([tuple(r.values()) for r in with_rows], (keep, with_rows[-1]["hash"]))


def verify_online(server: LiveServer) -> dict[str, Any]:
    result = server.project.run("audit", "verify", "--json", token=server.project.tokens["admin"], url=server.url)
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1), result.stderr
    return report


def verify_offline(server: LiveServer, bundle: Path, key: Path) -> dict[str, Any]:
    cli(server, "audit", "export", "--out", str(bundle))
    result = server.project.run("audit", "verify", "--bundle", str(bundle), "--public-key", str(key), "--json")
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1), result.stderr
    return report


def test_a_log_rewritten_in_the_database_is_found_online_and_in_an_offline_bundle(
    server: LiveServer, tmp_path: Path, subtests: pytest.Subtests
) -> None:
    db = ControlDb(server.project.settings.home / "control.db")
    key = public_key_file(server, tmp_path)
    cli(server, "user", "create", "audit-ann", "--role", "data-scientist", "--env", "dev")
    cli(server, "user", "grant", "audit-ann", "--role", "viewer", "--env", "staging")
    taken = json.loads(cli(server, "audit", "checkpoint", "--json").stdout)
    middle = taken["seq"] - 1
    cli(server, "token", "create", "--name", "laptop", who="dana")
    cli(server, "user", "grant", "audit-ann", "--role", "viewer", "--env", "production")
    good = verify_offline(server, tmp_path / "good.zip", key)  # the export checkpoints the head first
    assert good["ok"] and good["checkpoints"] >= 2 and good["last_checkpoint_seq"] == db.head()[0], good
    assert verify_online(server)["ok"]
    original, head = db.events(), db.head()
    file = server.project.settings.audit_checkpoint_file
    taken_at = [json.loads(line)["seq"] for line in file.read_text().splitlines()]
    vouching, beyond = min(s for s in taken_at if s >= middle), min(s for s in taken_at if s > middle)

    payload_sql = "UPDATE audit_events SET payload = ? WHERE seq = ?"
    # (what, the tampering, the event found online, its MAC or link; found offline, a checkpoint's)
    cases: list[tuple[str, Callable[[], None], tuple[int, str], tuple[int, str]]] = [
        (
            "the whole chain renumbered, relabeled and rehashed",
            lambda: rewrite_chain(db, drop=middle, actor="mallory"),
            (middle, "MAC does not match"),
            (vouching, "the chain was rewritten"),
        ),
        (
            "the tail deleted and the head moved back",
            lambda: delete_tail(db, keep=middle),
            (beyond, "events were deleted"),
            (beyond, "events were deleted"),
        ),
        (
            "one event's payload edited",
            lambda: db.change(payload_sql, (json.dumps({"passed": True}), middle)),
            (middle, "payload does not match its digest"),
            (middle, "payload does not match its digest"),
        ),
    ]
    for name, tamper, (online_seq, online_reason), (offline_seq, offline_reason) in cases:
        with subtests.test(msg=name):
            tamper()
            try:
                online = verify_online(server)
                assert (online["ok"], online["broken_seq"]) == (False, online_seq), online
                assert online_reason in online["reason"], online
                offline = verify_offline(server, tmp_path / "tampered.zip", key)
                assert (offline["ok"], offline["broken_seq"]) == (False, offline_seq), offline
                assert offline_reason in offline["reason"], offline
            finally:
                db.restore(original, head)
    assert verify_online(server)["ok"]
    assert verify_offline(server, tmp_path / "again.zip", key)["ok"]
    bundle_is_named_when_malformed(server, tmp_path, tmp_path / "again.zip")


def bundle_is_named_when_malformed(server: LiveServer, tmp_path: Path, bundle: Path) -> None:
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"PK\x03\x04 truncated")
    result = server.project.run("audit", "verify", "--bundle", str(not_zip))
    assert result.returncode == 2 and "not a zip archive" in result.stderr, result.stderr
    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(stripped, "w") as copy:
        for item in source.namelist():
            if item != "manifest.json":
                copy.writestr(item, source.read(item))
    result = server.project.run("audit", "verify", "--bundle", str(stripped))
    assert result.returncode == 2 and "no manifest.json" in result.stderr, result.stderr
    # Held to a key that is not the server's, every checkpoint's signature fails.
    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    result = server.project.run("audit", "verify", "--bundle", str(bundle), "--public-key", str(other))
    assert result.returncode == 1 and "signature does not hold" in result.stderr, result.stderr
