"""Hostile uploads against a running server: a decompression bomb and an archive of 300,000 empty files sent
as code snapshots, a bomb and a non-data member sent as data, and an announced upload over the limit. Each
is refused with its reason, costs the server's process under a second of CPU, and leaves nothing in the
snapshot or data store."""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.project import LiveServer, bearer
from tests.support.tarballs import tgz

MIB = 1024 * 1024
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no time, best compression


def _server_cpu(server: LiveServer) -> float:
    """Seconds of CPU the server's process (every thread of it) has used: utime + stime."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(server: LiveServer, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    before = _server_cpu(server)
    reply = send()
    return reply, _server_cpu(server) - before


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _zeros_crc(crc: int, mib: int) -> int:
    """zlib.crc32 of `mib` MiB of zeros following `crc`, without reading them: appending zeros is an affine
    map of the CRC (its 32 columns and a constant), squared once per bit of `mib`."""
    block = bytes(MIB)
    constant = zlib.crc32(block, 0)
    step = ([zlib.crc32(block, 1 << bit) ^ constant for bit in range(32)], constant)

    def apply(step: tuple[list[int], int], value: int) -> int:
        columns, out = step
        for bit in range(32):
            if value >> bit & 1:
                out ^= columns[bit]
        return out

    while mib:
        if mib & 1:
            crc = apply(step, crc)
        columns, constant = step
        step = ([apply(step, column) ^ constant for column in columns], apply(step, constant))
        mib >>= 1
    return crc


def _zeros_bomb(name: str, *, mib: int) -> bytes:
    """A valid tar.gz whose one member is `mib` MiB of zeros, made in milliseconds: after a full flush
    deflate compresses every MiB of zeros to the same bytes, so the stream is one block repeated."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime = mib * MIB, 0
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    tail = bytes(2 * tarfile.BLOCKSIZE)  # the end of the archive
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.compress(tail) + deflate.flush()
    crc = zlib.crc32(tail, _zeros_crc(zlib.crc32(header), mib))
    size = len(header) + mib * MIB + len(tail)
    return GZIP_HEADER + head + block * mib + end + crc.to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")


def _empty_files(count: int) -> bytes:
    """A tar.gz of `count` empty files. Their names ('000000999999', '000001999998', ...) all have the same
    byte sum, so every header has the same checksum and is the first one with its name changed."""
    info = tarfile.TarInfo("000000999999")
    info.mtime = 0
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    at = header.index(b"000000999999")
    before, after = header[:at], header[at + 12 :]
    tar = b"".join(before + f"{i:06d}{999999 - i:06d}".encode() + after for i in range(count))
    return zlib.compress(tar + bytes(2 * tarfile.BLOCKSIZE), 1, wbits=31)


def _post_snapshot(server: LiveServer, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/environments/dev/snapshots",
        content=data,
        headers=bearer(server.project.tokens["dana"]),
        timeout=120,
    )


def _put_data(server: LiveServer, name: str, data: bytes) -> httpx.Response:
    return httpx.put(
        f"{server.url}/api/v1/environments/dev/data/{name}",
        content=data,
        headers=bearer(server.project.tokens["dana"]) | {"Content-Type": "application/gzip"},
        timeout=120,
    )


def test_the_bomb_generator_makes_valid_archives() -> None:
    small = zlib.decompress(_zeros_bomb("zeros.bin", mib=3), wbits=31)  # checks the CRC and length too
    with tarfile.open(fileobj=io.BytesIO(small), mode="r:") as tar:
        [member] = tar.getmembers()
        assert (member.name, member.size) == ("zeros.bin", 3 * MIB)
    with tarfile.open(fileobj=io.BytesIO(_empty_files(50)), mode="r:gz") as tar:
        assert len({m.name for m in tar.getmembers() if m.isfile() and m.size == 0}) == 50


def test_snapshot_bombs_are_refused_naming_the_cap_in_under_a_second_of_cpu(live_server: LiveServer) -> None:
    snapshots = live_server.project.settings.home / "snapshots"
    kept = _files(snapshots) if snapshots.exists() else []
    bomb = _zeros_bomb("weights.bin", mib=20 * 1024)  # 20 GiB of zeros in 21 MB
    assert len(bomb) < 25 * MIB

    refused, cpu = _measured(live_server, lambda: _post_snapshot(live_server, bomb))

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["message"] == "refused code snapshot: it unpacks to more than 1024 MiB (the cap on its size)"
    assert error["details"] == {"cap": "unpacked_bytes", "limit": 1024 * MIB}
    assert cpu < 1.0, f"the server spent {cpu:.2f} s of CPU on the bomb"

    many = _empty_files(300_000)
    refused, cpu = _measured(live_server, lambda: _post_snapshot(live_server, many))

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["message"] == "refused code snapshot: it holds more than 5000 files and folders"
    assert error["details"] == {"cap": "members", "limit": 5000}
    assert cpu < 1.0, f"the server spent {cpu:.2f} s of CPU on 300,000 empty files"
    assert (_files(snapshots) if snapshots.exists() else []) == kept


def test_hostile_data_uploads_are_refused_and_leave_the_data_store_as_it_was(live_server: LiveServer) -> None:
    store = live_server.project.settings.environment("dev").data_dir
    before = _files(store)

    bomb = _zeros_bomb("visits.csv", mib=20 * 1024)  # a CSV by its name: unpacking starts, the ratio stops it
    refused, cpu = _measured(live_server, lambda: _put_data(live_server, "bomb", bomb))
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["message"] == (
        "refused data upload: it inflates to more than 200 times its compressed size (the cap on its compression ratio)"
    )
    assert error["details"] == {"cap": "compression_ratio", "limit": 200}
    assert cpu < 1.0, f"the server spent {cpu:.2f} s of CPU on the bomb"

    # A CSV unpacked, then a member that is not data: refused naming it, and the CSV is not kept either.
    mixed = tgz(
        {"a.csv": b"PatientID\n" + os.urandom(8).hex().encode() + b"\n", "notes.txt": b"a,b\n", "b.csv": b"x\n1\n"}
    )
    refused = _put_data(live_server, "mixed", mixed)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"] == "'notes.txt' is neither CSV nor Parquet (.csv, .parquet)"
    assert refused.json()["error"]["details"] == {"file": "notes.txt"}

    assert _files(store) == before
    assert not any((store / "incoming").iterdir())
    listed = httpx.get(
        f"{live_server.url}/api/v1/environments/dev/data", headers=bearer(live_server.project.tokens["dana"])
    )
    assert {"bomb", "mixed"}.isdisjoint(a["name"] for a in listed.json()["data"])


def test_a_data_upload_announced_over_the_limit_is_refused_before_it_is_read(live_server: LiveServer) -> None:
    address = httpx.URL(live_server.url)
    connection = http.client.HTTPConnection(address.host, address.port, timeout=30)
    try:
        connection.putrequest("PUT", "/api/v1/environments/dev/data/huge")
        connection.putheader("Authorization", f"Bearer {live_server.project.tokens['dana']}")
        connection.putheader("Content-Length", str(2 * 1024 * MIB))
        connection.endheaders()  # and not a byte of the body
        reply = connection.getresponse()
        assert reply.status == 413
        assert json.loads(reply.read())["error"]["message"] == "the data upload is over the 1024 MiB limit"
    finally:
        connection.close()
