"""An auditor's bundle is untrusted input: a member that inflates to hundreds of MiB is refused at its
cap, naming the member, within a fraction of a second of CPU and without being inflated whole."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlgate.services.audit_bundle import (
    CHECKPOINTS,
    EVENTS,
    FORMAT,
    MANIFEST,
    MAX_EVENT_LINE,
    MAX_SMALL_MEMBER,
    PUBLIC_KEY,
    BundleMalformed,
    verify_bundle,
)

BOMB_BYTES = 96 << 20  # inflated (past every cap); about 100 KiB deflated
CHUNK = b"0" * (1 << 20)


def _bundle(*, events_bomb: bool, manifest_bomb: bool) -> io.BytesIO:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        with bundle.open(MANIFEST, "w") as member:
            member.write(json.dumps({"format": FORMAT, "sha256": {}}).encode())
            for _ in range(BOMB_BYTES // len(CHUNK) if manifest_bomb else 0):
                member.write(b" " * len(CHUNK))  # JSON allows trailing spaces: only the size refuses it
        bundle.writestr(PUBLIC_KEY, key)
        bundle.writestr(CHECKPOINTS, b"")
        with bundle.open(EVENTS, "w") as member:
            for _ in range(BOMB_BYTES // len(CHUNK) if events_bomb else 0):
                member.write(CHUNK)  # one line, never ending
    out.seek(0)
    return out


@pytest.mark.parametrize(
    ("events_bomb", "manifest_bomb", "refusal"),
    [
        (True, False, f"{EVENTS}: a line is longer than {MAX_EVENT_LINE} bytes"),
        (False, True, f"{MANIFEST} is larger than {MAX_SMALL_MEMBER} bytes"),
    ],
)
def test_a_bundle_member_inflating_past_its_cap_is_refused_at_the_cap(
    events_bomb: bool, manifest_bomb: bool, refusal: str
) -> None:
    bundle = _bundle(events_bomb=events_bomb, manifest_bomb=manifest_bomb)
    assert len(bundle.getvalue()) < 2 << 20  # small on disk
    started = time.process_time()
    with pytest.raises(BundleMalformed, match=refusal):
        verify_bundle(bundle)
    assert time.process_time() - started < 1.0  # CPU, not wall time: read up to the cap, not to the end
