"""Content digests: a file's sha256, and a tree's sha256 over its canonical listing.

A tree's digest covers each relative path and its file's digest, sorted, so the same bytes give the
same digest wherever and however they are stored (folder, tarball, object store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listing_digest(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 over 'path<TAB>sha256<LF>' lines of (relative POSIX path, file digest), sorted by path."""
    lines = "".join(f"{path}\t{sha}\n" for path, sha in sorted(entries))
    return hashlib.sha256(lines.encode()).hexdigest()


def tree_listing(root: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every regular file under root."""
    return sorted(
        (path.relative_to(root).as_posix(), file_sha256(path))
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


def tree_digest(root: Path) -> str:
    return listing_digest(tree_listing(root))


def tree_stat(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(relative path, size, mtime in ns, inode) of every regular file under root: what changes when any
    file is written, replaced, added or removed; a stat walk, no file read."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            found.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(found))
