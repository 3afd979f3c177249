"""An audit bundle: the whole log, its checkpoints and the public key, verified offline by an auditor.

The bundle is a zip of `events.jsonl` (every event, every column, the payload included), the checkpoint
file's lines `checkpoints.jsonl`, `public-key.pem` and `manifest.json` (format, when, counts, the
SHA-256 of each member). `verify_bundle` needs neither the server nor any secret: it recomputes each
payload's digest, each event's hash and every link, then holds the chain to the signed checkpoints. The
MACs travel in the bundle but only the server can check them; what the bundle proves is that the log
agrees with every checkpoint, so events after the last checkpoint are vouched for by nothing yet (the
report says how many). Pass the public key obtained from the server's operator (`--public-key`) rather
than trusting the bundle's own.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import AuditHead
from mlgate.config import Settings
from mlgate.domain import audit_checkpoints as checkpoints
from mlgate.domain.audit import ChainedEvent, VerifyResult, canonical_time, verify_chain
from mlgate.domain.audit_checkpoints import MalformedCheckpoint
from mlgate.services.audit_integrity import IntegrityReport, all_events, held_to_checkpoints, read_checkpoints
from mlgate.services.audit_keys import AuditKeys

FORMAT = "mlgate-audit-bundle/1"
EVENTS, CHECKPOINTS, PUBLIC_KEY, MANIFEST = "events.jsonl", "checkpoints.jsonl", "public-key.pem", "manifest.json"
MAX_EVENT_LINE = 1 << 20  # an event's payload is bounded well below this when it is recorded
MAX_SMALL_MEMBER = 1 << 26  # the manifest, the key and the checkpoints
EVENT_FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "environment",
    "subject",
    "payload",
    "payload_digest",
    "prev_hash",
    "hash",
    "mac",
)


class BundleMalformed(ValueError):
    """Not an audit bundle, or one whose parts cannot be read; the message names the part."""


def _event_line(event: ChainedEvent) -> str:
    row: dict[str, Any] = {name: getattr(event, name) for name in EVENT_FIELDS}
    row["at"] = canonical_time(event.at)
    return json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)


def export_bundle(
    db: Database, settings: Settings, keys: AuditKeys, out: IO[bytes], *, now: datetime
) -> dict[str, Any]:
    """Write the bundle to `out` (a zip); returns its manifest."""
    digests: dict[str, str] = {}
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        with db.read() as session, bundle.open(EVENTS, "w") as member:
            head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
            head_seq, head_hash = head.seq, head.hash
            digest = hashlib.sha256()
            for event in all_events(session):
                line = (_event_line(event) + "\n").encode()
                digest.update(line)
                member.write(line)
                count += 1
            digests[EVENTS] = digest.hexdigest()
        found = read_checkpoints(settings.audit_checkpoint_file)
        small = {
            CHECKPOINTS: "".join(cp.line() + "\n" for cp in found).encode(),
            PUBLIC_KEY: keys.public_pem(),
        }
        for name, data in small.items():
            bundle.writestr(name, data)
            digests[name] = hashlib.sha256(data).hexdigest()
        manifest = {
            "format": FORMAT,
            "exported_at": canonical_time(now),
            "events": count,
            "head": {"seq": head_seq, "hash": head_hash},
            "checkpoints": len(found),
            "key_id": checkpoints.key_id(keys.public_key()),
            "sha256": digests,
        }
        bundle.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


@dataclass(frozen=True)
class BundleReport:
    report: IntegrityReport
    manifest: dict[str, Any]
    key_source: str  # "given" (--public-key) or "bundle"


def verify_bundle(data: IO[bytes], *, public_key_pem: bytes | None = None) -> BundleReport:
    """Check a bundle offline; `BundleMalformed` when it cannot be read as one."""
    try:
        bundle = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleMalformed(f"not a zip archive: {exc}") from None
    with bundle:
        manifest = _manifest(bundle)
        key_pem = public_key_pem if public_key_pem is not None else _small(bundle, PUBLIC_KEY)
        public_key = _public_key(key_pem)
        try:
            found = checkpoints.parse_lines(_small(bundle, CHECKPOINTS).decode("utf-8").splitlines())
        except (MalformedCheckpoint, UnicodeDecodeError) as exc:
            raise BundleMalformed(f"{CHECKPOINTS}: {exc}") from None
        hashes: dict[int, str] = {}
        with bundle.open(EVENTS) as member:
            digest = hashlib.sha256()
            chain = verify_chain(_events(member, digest, hashes), head_seq=None, head_hash=None)
        if chain.ok and digest.hexdigest() != manifest["sha256"].get(EVENTS):
            chain = VerifyResult(False, chain.events, None, f"{EVENTS} does not match the manifest's digest")
    report = held_to_checkpoints(chain, found, hashes=hashes, public_key=public_key)
    return BundleReport(report, manifest, "given" if public_key_pem is not None else "bundle")


def _member(bundle: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    try:
        return bundle.getinfo(name)
    except KeyError:
        raise BundleMalformed(f"the bundle has no {name}") from None


def _small(bundle: zipfile.ZipFile, name: str) -> bytes:
    info = _member(bundle, name)
    with bundle.open(info) as member:
        data = member.read(MAX_SMALL_MEMBER + 1)
    if len(data) > MAX_SMALL_MEMBER:
        raise BundleMalformed(f"{name} is larger than {MAX_SMALL_MEMBER} bytes")
    return data


def _manifest(bundle: zipfile.ZipFile) -> dict[str, Any]:
    try:
        manifest = json.loads(_small(bundle, MANIFEST))
    except ValueError as exc:
        raise BundleMalformed(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleMalformed(f"{MANIFEST} does not name the format {FORMAT}")
    if not isinstance(manifest.get("sha256"), dict):
        raise BundleMalformed(f"{MANIFEST} has no sha256 table")
    _member(bundle, EVENTS)
    return manifest


def _public_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise BundleMalformed(f"the public key is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleMalformed("the public key is not an Ed25519 key")
    return key


def _events(member: IO[bytes], digest: Any, hashes: dict[int, str]) -> Iterator[ChainedEvent]:
    for number, raw in enumerate(_lines(member), start=1):
        digest.update(raw)
        event = _parse_event(raw, number)
        hashes[event.seq] = event.hash
        yield event


def _lines(member: IO[bytes]) -> Iterator[bytes]:
    while True:
        raw = member.readline(MAX_EVENT_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_EVENT_LINE:
            raise BundleMalformed(f"{EVENTS}: a line is longer than {MAX_EVENT_LINE} bytes")
        yield raw


def _parse_event(raw: bytes, number: int) -> ChainedEvent:
    try:
        row = json.loads(raw)
        if not isinstance(row, dict) or set(row) != set(EVENT_FIELDS):
            raise ValueError(f"expected exactly the fields {', '.join(EVENT_FIELDS)}")
        if not isinstance(row["seq"], int) or not isinstance(row["at"], str):
            raise ValueError("seq must be an integer and at a time")
        return ChainedEvent(**{**row, "at": datetime.fromisoformat(row["at"])})
    except (ValueError, TypeError) as exc:
        raise BundleMalformed(f"{EVENTS} line {number}: {exc}") from None
