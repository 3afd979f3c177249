"""Content digests: a file's sha256, and a tree's sha256 over its canonical listing.

A tree's digest covers each relative path and its file's digest, sorted, so the same bytes give the
same digest wherever and however they are stored (folder, tarball, object store). A symlink is listed
as itself (`symlink:` and the digest of its target's text), never followed: pointing it at another file changes the
digest. Symlinks that leave a model folder are refused before digesting (`domain.model_files`).
"""

from __future__ import annotations

import hashlib
import os
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


def symlink_entry(path: Path) -> str:
    """A symlink's listing entry: `symlink:` and the sha256 of its target as written; never a file's digest."""
    return "symlink:" + hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest()


def tree_listing(root: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every regular file and symlink under root (symlinked folders not entered)."""
    return sorted(
        (path.relative_to(root).as_posix(), symlink_entry(path) if path.is_symlink() else file_sha256(path))
        for path in root.rglob("*")
        if path.is_symlink() or path.is_file()
    )


def tree_digest(root: Path) -> str:
    return listing_digest(tree_listing(root))


def tree_stat(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(relative path, size, mtime in ns, inode) of every regular file and symlink under root: what changes
    when any file is written, replaced, added or removed, or a symlink re-pointed; a stat walk, no file read."""
    found = []
    for path in root.rglob("*"):
        if path.is_symlink() or path.is_file():
            st = path.lstat()
            found.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(found))
