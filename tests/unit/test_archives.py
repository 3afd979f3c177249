"""The archive reader as hostile input meets it: unsafe members and every cap refused, naming the member or
the cap, with nothing left where it would have unpacked; and random or mutated archives, whatever their
members' names and types, raise nothing but ValidationError and never write outside their folder."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlgate.archives import MAX_HEADER_BYTES, ArchiveCaps, extract, inspect, read_member
from mlgate.errors import ValidationError
from mlgate.snapshot import SNAPSHOT_CAPS

# Small enough that random archives reach them.
SMALL_CAPS = ArchiveCaps(members=6, unpacked_bytes=4096, ratio=200)


def _member(name: str, kind: str, content: bytes | str = b"") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    types = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    types |= {"fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE, "sparse": tarfile.GNUTYPE_SPARSE}
    if kind == "file":
        assert isinstance(content, bytes)
        info.size = len(content)
        return info, content
    info.type = types[kind]
    info.linkname = content if isinstance(content, str) else ""
    return info, None


def _archive(*members: tuple[str, str, bytes | str] | tuple[str, str], pax: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, *content in members:
            info, data = _member(name, kind, content[0] if content else b"")
            info.pax_headers = dict(pax or {})
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _extract(data: bytes, destination: Path, caps: ArchiveCaps = SNAPSHOT_CAPS) -> list[str]:
    return [f.name for f in extract(data, destination, what="code snapshot", caps=caps)]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (("../evil.py", "file", b"x"), "points outside"),
        (("src/../../evil.py", "file", b"x"), "points outside"),
        (("/etc/evil.py", "file", b"x"), "absolute path"),
        (("innocent.py", "symlink", "/etc/passwd"), "is a link"),
        (("inside.py", "symlink", "train.py"), "is a link"),
        (("hard.py", "hardlink", "train.py"), "is a link"),
        (("pipe", "fifo", b""), "is not a regular file or folder"),
        (("tty", "chardev", b""), "is not a regular file or folder"),
        (("train.py", "file", b"again"), "is in the archive twice"),
        (("train.py/inner.py", "file", b"x"), "is inside 'train.py', which is a file"),
        (("x" * 300 + ".py", "file", b"x"), "is not a file name this system can hold"),
        (("caf\udce9.py", "file", b"x"), "is not a UTF-8 name"),
    ],
)
def test_extract_refuses_unsafe_members_and_writes_nothing(
    tmp_path: Path, member: tuple[str, str, bytes | str], reason: str
) -> None:
    data = _archive(("train.py", "file", b"print(1)\n"), member)
    destination = tmp_path / "job" / "work"

    with pytest.raises(ValidationError) as refused:
        _extract(data, destination)

    assert reason in refused.value.message
    shown = member[0].encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # valid text, always
    assert shown[:200] in refused.value.message
    assert not destination.exists()
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "job" / "evil.py").exists()
    with pytest.raises(ValidationError, match=reason):  # refused at upload as at unpacking
        inspect(data, what="code snapshot", caps=SNAPSHOT_CAPS)


def test_a_tar_split_over_gzip_members_is_one_archive_and_a_cut_one_is_refused(tmp_path: Path) -> None:
    packed = _archive(("mlgate.yaml", "file", b"train: {}\n"), ("src", "dir"), ("src/a.py", "file", b"A = 1\n"))
    tar = zlib.decompress(packed, wbits=31)
    halves = b"".join(zlib.compress(part, wbits=31) for part in (tar[:700], tar[700:]))  # as `cat a.gz b.gz`

    assert _extract(halves, tmp_path / "halves") == ["mlgate.yaml", "src/a.py"]
    assert (tmp_path / "halves" / "src" / "a.py").read_bytes() == b"A = 1\n"
    assert read_member(halves, "src/a.py", what="code snapshot", caps=SNAPSHOT_CAPS) == b"A = 1\n"
    with pytest.raises(ValidationError, match=r"not a valid code snapshot .* its gzip stream ends early"):
        _extract(packed[:-30], tmp_path / "cut")
    assert not (tmp_path / "cut").exists()


def test_each_cap_stops_the_walk_naming_itself_and_its_value(tmp_path: Path) -> None:
    many = _archive(*((f"f{i}.py", "file", b"") for i in range(7)))
    with pytest.raises(ValidationError) as refused:
        inspect(many, what="code snapshot", caps=SMALL_CAPS)
    assert refused.value.message == "refused code snapshot: it holds more than 6 files and folders"
    assert refused.value.details == {"cap": "members", "limit": 6}

    big = _archive(("big.bin", "file", os.urandom(5000)))
    with pytest.raises(ValidationError) as refused:
        _extract(big, tmp_path / "big", SMALL_CAPS)
    assert "it unpacks to more than 0.00390625 MiB (the cap on its size)" in refused.value.message
    assert refused.value.details == {"cap": "unpacked_bytes", "limit": 4096}

    zeros = _archive(("zeros.bin", "file", bytes(16 * 1024 * 1024)))  # under the size cap, far over the ratio
    with pytest.raises(ValidationError) as refused:
        _extract(zeros, tmp_path / "zeros")
    assert "it inflates to more than 200 times its compressed size" in refused.value.message
    assert refused.value.details == {"cap": "compression_ratio", "limit": 200}

    forged = _archive(("a.py", "file", b"x"), pax={"comment": "x" * (2 * MAX_HEADER_BYTES)})
    with pytest.raises(ValidationError) as refused:
        inspect(forged, what="code snapshot", caps=SNAPSHOT_CAPS)
    assert refused.value.details == {"cap": "header_bytes", "limit": MAX_HEADER_BYTES}

    config = _archive(("mlgate.yaml", "file", b"#" * (2 * 1024 * 1024)))
    with pytest.raises(ValidationError, match=r"'mlgate\.yaml' is over 1 MiB"):
        inspect(config, what="code snapshot", caps=SNAPSHOT_CAPS, keep={"mlgate.yaml"})
    assert not any(tmp_path.iterdir())


# -- random and mutated archives ------------------------------------------------------------------------

ANY_NAME = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(["../x", "/abs", "a/../../b", ".", "./", "./a", "a//b", "C:x", "a/", "a/b/c.py"]),
)
ANY_KIND = st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "chardev", "sparse"])
PLAIN_NAME = st.from_regex(r"[ab.]{1,2}(/[ab.]{1,2}){0,2}", fullmatch=True)  # collisions likely
PLAIN_KIND = st.sampled_from(["file", "file", "dir"])


def _members(plain: bool) -> st.SearchStrategy[list[tuple[str, str, bytes]]]:
    names, kinds = (PLAIN_NAME, PLAIN_KIND) if plain else (ANY_NAME, ANY_KIND)
    return st.lists(st.tuples(names, kinds, st.binary(max_size=1500)), max_size=8)


def _built(members: list[tuple[str, str, bytes]], fmt: int) -> bytes | None:
    buffer = io.BytesIO()
    try:
        with tarfile.open(fileobj=buffer, mode="w:gz", format=fmt) as tar:
            for name, kind, content in members:
                info, data = _member(name, kind, content if kind == "file" else "target")
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
    except (ValueError, UnicodeError):  # a name this format cannot hold: nothing to attack with
        return None
    return buffer.getvalue()


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """A random archive, maybe mutated (bytes flipped, cut short or spliced in), or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=4000))
        return zlib.compress(raw, wbits=31) if draw(st.booleans()) else raw
    members = draw(_members(plain=draw(st.booleans())))
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
    data = _built(members, fmt) or _built([], fmt)
    assert data is not None
    inner = draw(st.booleans())  # mutate the tar inside, and compress it again: the gzip layer stays valid
    body = bytearray(zlib.decompress(data, wbits=31) if inner else data)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 4]))):
        where = draw(st.integers(0, max(len(body) - 1, 0)))
        action = draw(st.sampled_from(["flip", "cut", "splice"]))
        if action == "flip" and body:
            body[where] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del body[where:]
        else:
            body[where:where] = draw(st.binary(min_size=1, max_size=600))
    return zlib.compress(bytes(body), wbits=31) if inner else bytes(body)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile())
def test_nothing_but_a_validation_error_escapes_and_nothing_lands_outside(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        destination = root / "work"
        try:
            checked = inspect(data, what="code snapshot", caps=SMALL_CAPS)
        except ValidationError:
            checked = None
        try:
            written = _extract(data, destination, SMALL_CAPS)
        except ValidationError:
            assert not destination.exists()
            assert checked is None, "inspect passed an archive that extract refused"
            assert [p.name for p in root.iterdir()] == []
            return
        assert checked is not None and checked.files == len(written)
        found = sorted(destination.rglob("*"))
        assert all(not p.is_symlink() and (p.is_file() or p.is_dir()) for p in found)
        assert sorted(p.relative_to(destination).as_posix() for p in found if p.is_file()) == sorted(written)
        assert [p.name for p in root.iterdir()] == ["work"]
