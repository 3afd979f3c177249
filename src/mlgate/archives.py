"""Uploaded archives (gzipped tars) read as hostile input: one streamed walk that checks every member as its
header is read and stops at the first breach.

The walk inflates the gzip stream itself, a bounded piece at a time, so that at every read it knows how many
bytes came out for how many went in; tarfile reads the tar stream from it in streaming mode (`r|`), one
member after the other, never seeking back and never holding the archive whole. Checked as it goes:

- every member: a relative path that stays inside the destination (no absolute path, no `..`), a regular
  file or a folder (no links, devices, fifos or sparse files), no name given twice or used both as a file
  and as a folder, names the file system can hold;
- the caps an `ArchiveCaps` gives: members, unpacked bytes (the declared sizes at each header; `extract`
  also counts the bytes as it writes them), and the compression ratio (bytes inflated over compressed
  bytes consumed so far), from the first `RATIO_GRACE_BYTES` inflated on;
- a member's header (its name and PAX records) at most `MAX_HEADER_BYTES`, so a forged one is never read
  into memory whole.

A breach, malformed gzip or tar, or a truncated stream is a ValidationError naming the problem, and the
cap and its value where a cap was passed; nothing else escapes. `extract` unpacks in the same walk into a
fresh folder, removed whole if any member is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mlgate.errors import ValidationError

MIB = 1024 * 1024
# Compressed bytes read from the upload at a time, and content bytes handed on at a time.
READ_BYTES = 64 * 1024
# An archive that inflates to less than this is cheap to read whatever its ratio, and small archives of
# near-empty files (tar headers and padding) compress far better than their contents ever do.
RATIO_GRACE_BYTES = 8 * MIB
# A real member's header with its PAX records (a long path, a few attributes) is a few KiB at most.
MAX_HEADER_BYTES = MIB
# Linux's PATH_MAX and NAME_MAX: a longer name cannot be written, so it is refused before anything is.
MAX_NAME_BYTES = 4096
MAX_PART_BYTES = 255
# A member read into memory rather than unpacked is a configuration file (a project's mlgate.yaml).
MAX_READ_BYTES = MIB
_FOREIGN_ERRORS = (tarfile.TarError, zlib.error, EOFError, ValueError, RecursionError)


@dataclass(frozen=True)
class ArchiveCaps:
    """What one archive may hold: members (files and folders), unpacked bytes, and inflated bytes per
    compressed byte consumed."""

    members: int
    unpacked_bytes: int
    ratio: int


@dataclass(frozen=True)
class Unpacked:
    """A regular file `extract` wrote: its path relative to the destination, size and sha256."""

    name: str
    size: int
    sha256: str


def _shown(name: str) -> str:
    """A member's name as messages quote it: valid text, and short."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if len(text) <= 200 else text[:200] + "..."


def _breach(what: str, cap: str, limit: int, message: str) -> ValidationError:
    return ValidationError(f"refused {what}: {message}", details={"cap": cap, "limit": limit})


def _too_big(what: str, limit: int) -> ValidationError:
    return _breach(what, "unpacked_bytes", limit, f"it unpacks to more than {limit / MIB:g} MiB (the cap on its size)")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """tarfile's and zlib's failures on a malformed archive, as one ValidationError."""
    try:
        yield
    except _FOREIGN_ERRORS as exc:
        reason = "its headers nest too deep" if isinstance(exc, RecursionError) else str(exc) or type(exc).__name__
        raise ValidationError(f"not a valid {what} (a gzipped tar): {reason}") from exc


class _Inflater:
    """The tar stream inside a gzip stream, inflated on demand and counted in and out. A read that would
    pass `ceiling` (what the walk allows before the next header ends) or the ratio cap is refused."""

    def __init__(self, source: IO[bytes], *, what: str, ratio: int) -> None:
        self._source, self._what, self._ratio = source, what, ratio
        self._zlib = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer (whose CRC is checked)
        self._input = b""  # read from the source, not yet inflated
        self.consumed = 0  # compressed bytes inflated
        self.inflated = 0
        self.ceiling = MAX_HEADER_BYTES

    def read(self, size: int = -1) -> bytes:
        allowed = max(self.ceiling - self.inflated + 1, 1)  # one byte past the ceiling is enough to know
        out = self._inflate(min(READ_BYTES if size < 0 else size, allowed))
        self.inflated += len(out)
        if self.inflated > self.ceiling:
            header = f"a member's header is over {MAX_HEADER_BYTES // 1024} KiB (the cap on a header)"
            raise _breach(self._what, "header_bytes", MAX_HEADER_BYTES, header)
        if self.inflated > RATIO_GRACE_BYTES and self.inflated > self._ratio * self.consumed:
            ratio = (
                f"it inflates to more than {self._ratio} times its compressed size (the cap on its compression ratio)"
            )
            raise _breach(self._what, "compression_ratio", self._ratio, ratio)
        return out

    def _inflate(self, size: int) -> bytes:
        """Up to `size` inflated bytes; b"" where the gzip stream ends with the source."""
        while True:
            if not self._input:
                self._input = self._source.read(READ_BYTES)
                if not self._input:
                    if self._zlib.eof:
                        return b""
                    raise ValidationError(f"not a valid {self._what} (a gzipped tar): its gzip stream ends early")
            if self._zlib.eof:  # another gzip member follows, as `cat a.gz b.gz` makes
                self._zlib = zlib.decompressobj(wbits=31)
            fed = self._input
            with _translated(self._what):
                out = self._zlib.decompress(fed, size)
            self._input = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            self.consumed += len(fed) - len(self._input)
            if out:
                return out

    def tell(self) -> int:
        return self.inflated

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("an archive being read is not written")

    def seek(self, offset: int) -> int:
        raise io.UnsupportedOperation("an archive is read as a stream")

    def close(self) -> None:
        """The source is the caller's to close."""


_Node = dict[str, "_Node | None"]  # a folder's entries: a folder, or None for a file


class _Names:
    """The names the members so far claimed, as a tree: a name given twice, or a file's name used as a
    folder, is refused, as unpacking would fail or overwrite. Linear in the names' length."""

    def __init__(self) -> None:
        self._root: _Node = {}

    def claim(self, parts: tuple[str, ...], *, folder: bool) -> str | None:
        node = self._root
        for depth, part in enumerate(parts[:-1], start=1):
            child = node.setdefault(part, {})
            if child is None:
                return f"is inside '{_shown('/'.join(parts[:depth]))}', which is a file"
            node = child
        if parts[-1] in node and not (folder and node[parts[-1]] is not None):
            return "is in the archive twice (as a file, or as a file and a folder)"
        node.setdefault(parts[-1], {} if folder else None)
        return None


def _parts(name: str) -> tuple[str, ...]:
    """A name's path segments, as PurePosixPath gives them for a relative name ('.' and empty ones left
    out), at a fraction of its cost: the walk splits every member's name."""
    return tuple(part for part in name.split("/") if part and part != ".")


def _refusal(member: tarfile.TarInfo, parts: tuple[str, ...]) -> str | None:
    """Why a member may not be unpacked, or None."""
    name = _shown(member.name)
    if not member.name or member.name.startswith("/") or re.match(r"^[A-Za-z]:", member.name):
        return f"'{name}' is an absolute path"
    if ".." in parts:
        return f"'{name}' points outside the archive's folder"
    if member.issym() or member.islnk():
        return f"'{name}' is a link (to '{_shown(member.linkname)}'); only regular files and folders are allowed"
    if member.issparse() or not (member.isfile() or member.isdir()):
        return f"'{name}' is not a regular file or folder"
    if member.size < 0:
        return f"'{name}' declares a negative size"
    try:  # names are shown and stored as text: bytes that are not UTF-8 would break every answer naming them
        raw = member.name.encode("utf-8")
    except UnicodeError:
        return f"'{name}' is not a UTF-8 name"
    if b"\0" in raw or len(raw) > MAX_NAME_BYTES or any(len(p.encode()) > MAX_PART_BYTES for p in parts):
        return f"'{name}' is not a file name this system can hold (at most {MAX_NAME_BYTES} bytes, no NUL)"
    if not parts and member.isfile():
        return f"'{name}' is not a file name"
    return None


@dataclass(frozen=True)
class Member:
    """A checked member: its header, its normalized relative path (`src/a.py`), and its bytes, readable
    once, in order, before the walk moves on."""

    info: tarfile.TarInfo
    name: str
    what: str  # what the archive is, for messages ("code snapshot")
    _handle: IO[bytes] | None

    def chunks(self) -> Iterator[bytes]:
        if self._handle is None:
            return
        with _translated(self.what):
            while chunk := self._handle.read(READ_BYTES):
                yield chunk


def walk(source: bytes | IO[bytes], *, what: str, caps: ArchiveCaps) -> Iterator[Member]:
    """The archive's members in order, each checked as its header is read (see the module's docstring);
    the archive's own folder (`./`) is left out."""
    inflater = _Inflater(io.BytesIO(source) if isinstance(source, bytes) else source, what=what, ratio=caps.ratio)
    names, count, declared = _Names(), 0, 0
    with _translated(what), tarfile.open(fileobj=inflater, mode="r|") as tar:
        while (info := tar.next()) is not None:
            count += 1
            if count > caps.members:
                raise _breach(what, "members", caps.members, f"it holds more than {caps.members} files and folders")
            parts = _parts(info.name)
            problem = _refusal(info, parts)
            if problem is None and parts:
                claimed = names.claim(parts, folder=info.isdir())
                problem = f"'{_shown(info.name)}' {claimed}" if claimed else None
            if problem:
                raise ValidationError(f"refused {what}: {problem}", details={"member": _shown(info.name)})
            declared += info.size if info.isfile() else 0
            if declared > caps.unpacked_bytes:
                raise _too_big(what, caps.unpacked_bytes)
            # This member's bytes (a file's, padded to whole blocks), then at most one header more.
            data = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE if info.isfile() else 0
            inflater.ceiling = info.offset_data + data + MAX_HEADER_BYTES
            if parts:
                yield Member(info, "/".join(parts), what, tar.extractfile(info) if info.isfile() else None)


@dataclass(frozen=True)
class Listing:
    """What `inspect` found: the number of regular files, and the bytes of those it was asked to keep."""

    files: int
    kept: dict[str, bytes]


def inspect(source: bytes | IO[bytes], *, what: str, caps: ArchiveCaps, keep: Collection[str] = ()) -> Listing:
    """Walk the whole archive as `extract` would, writing nothing; `keep` names files (paths as
    `Member.name` gives them) whose bytes to return."""
    files, kept = 0, {}
    for member in walk(source, what=what, caps=caps):
        if member.info.isfile():
            files += 1
            if member.name in keep:
                kept[member.name] = _whole(member)
    return Listing(files=files, kept=kept)


def read_member(source: bytes | IO[bytes], name: str, *, what: str, caps: ArchiveCaps) -> bytes | None:
    """One regular file's bytes, or None when the archive holds no such file; the walk stops there."""
    for member in walk(source, what=what, caps=caps):
        if member.name == name and member.info.isfile():
            return _whole(member)
    return None


def _whole(member: Member) -> bytes:
    if member.info.size > MAX_READ_BYTES:
        problem = f"'{_shown(member.name)}' is over {MAX_READ_BYTES // MIB} MiB, more than a configuration file holds"
        raise ValidationError(f"refused {member.what}: {problem}", details={"member": _shown(member.name)})
    return b"".join(member.chunks())


def extract(
    source: bytes | IO[bytes],
    destination: Path,
    *,
    what: str,
    caps: ArchiveCaps,
    admit: Callable[[str], None] | None = None,
) -> list[Unpacked]:
    """Unpack into `destination` (a folder not there yet, or empty) in the same walk that checks the
    members, counting the bytes against the size cap as they are written. `admit(name)` may refuse a file,
    by raising ValidationError, before any of its bytes are written. Any refusal removes the folder.
    Returns the regular files written, in the archive's order."""
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise ValueError(f"{destination} is not empty: an archive is unpacked into a fresh folder")
    try:
        return _unpack(walk(source, what=what, caps=caps), destination, what=what, caps=caps, admit=admit)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def _unpack(
    members: Iterator[Member], destination: Path, *, what: str, caps: ArchiveCaps, admit: Callable[[str], None] | None
) -> list[Unpacked]:
    """Each member written as the walk reaches it; a file's bytes hashed and counted as they are written."""
    written: list[Unpacked] = []
    total = 0
    for member in members:
        target = destination.joinpath(*member.name.split("/"))
        try:
            if member.info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if admit is not None:
                admit(member.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            mode = 0o755 if member.info.mode & 0o100 else 0o644  # narrowed by the server's umask
            with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "wb") as out:
                for chunk in member.chunks():
                    size += len(chunk)
                    if total + size > caps.unpacked_bytes:
                        raise _too_big(what, caps.unpacked_bytes)
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:  # the file system's refusal: named by the member, not by the server's path
            problem = f"'{_shown(member.name)}': {exc.strerror or type(exc).__name__}"
            raise ValidationError(
                f"cannot unpack the {what}: {problem}", details={"member": _shown(member.name)}
            ) from exc
        total += size
        written.append(Unpacked(member.name, size, digest.hexdigest()))
    return written
