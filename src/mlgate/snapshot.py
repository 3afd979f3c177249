"""Code snapshots: a project's files packed reproducibly (same files, same bytes, same sha256).

The CLI packs what git would commit (tracked and untracked files, minus what .gitignore excludes) and
records the commit; without git it reads the .gitignore files itself. The server reads what it is sent
with `mlgate.archives`, within `SNAPSHOT_CAPS`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from mlgate.archives import ArchiveCaps
from mlgate.errors import ValidationError

MAX_SNAPSHOT_BYTES = 50 * 1024 * 1024
SNAPSHOT_CAPS = ArchiveCaps(
    # A project's code is hundreds of files, a large one a few thousand; walking a member's header costs
    # the server some 70 microseconds of CPU, so 5,000 of them stay under half a second.
    members=5_000,
    # Far above any real project's code, far below what a decompression bomb unpacks to.
    unpacked_bytes=1024 * 1024 * 1024,
    # Code and text compress 3 to 10 times, tar headers of small files some 20 times; gzip itself stops
    # near 1,030 times, which a stream of zeros reaches.
    ratio=200,
)
ALWAYS_EXCLUDED = (".git", ".mlgate", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")


@dataclass(frozen=True)
class Snapshot:
    data: bytes
    sha256: str
    files: int
    git_commit: str | None
    git_dirty: bool


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _always_excluded(relative: str) -> bool:
    return any(part in ALWAYS_EXCLUDED for part in relative.split("/"))


# -- .gitignore without git ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One .gitignore line: its folder (relative to the root), its pattern, and how it applies."""

    base: str
    pattern: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool  # a '/' before the end: matched against the path from `base`, not the name alone


def _glob(pattern: str) -> str:
    """A gitignore glob as a regular expression: '*' and '?' stay inside one segment, '**' crosses them."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            members = pattern[i + 1 : end]
            out.append("[" + ("^" + members[1:] if members.startswith("!") else members).replace("\\", "\\\\") + "]")
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _rules(gitignore: Path, base: str) -> list[_Rule]:
    try:
        text = gitignore.read_text(errors="replace")
    except OSError:
        return []
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        rules.append(_Rule(base, re.compile(_glob(line.lstrip("/"))), negate, dir_only, anchored))
    return rules


def _gitignored(rules: list[_Rule], relative: str, *, is_dir: bool) -> bool:
    """git's rule: the last matching pattern decides, and a '!' pattern re-includes."""
    ignored = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.base:
            if not relative.startswith(rule.base + "/"):
                continue
            path = relative[len(rule.base) + 1 :]
        else:
            path = relative
        if rule.pattern.fullmatch(path if rule.anchored else path.rsplit("/", 1)[-1]):
            ignored = not rule.negate
    return ignored


def _walk(root: Path) -> list[str]:
    """Files under root that the .gitignore files (at every level) do not exclude; no symlinks."""
    found: list[str] = []
    inherited: dict[str, list[_Rule]] = {"": _rules(root / ".gitignore", "")}
    for folder, dirs, names in os.walk(root):
        relative_folder = Path(folder).relative_to(root).as_posix()
        here = "" if relative_folder == "." else relative_folder
        rules = inherited.pop(here)
        kept = []
        for name in sorted(dirs):
            relative = f"{here}/{name}" if here else name
            path = Path(folder) / name
            if path.is_symlink() or _always_excluded(relative) or _gitignored(rules, relative, is_dir=True):
                continue
            kept.append(name)
            inherited[relative] = rules + _rules(path / ".gitignore", relative)
        dirs[:] = kept
        for name in names:
            relative = f"{here}/{name}" if here else name
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file() or _always_excluded(relative):
                continue
            if not _gitignored(rules, relative, is_dir=False):
                found.append(relative)
    return sorted(found)


def list_files(root: Path) -> list[str]:
    """Relative paths of the files to pack, sorted: git's view when root is in a repository.

    Symbolic links are left out either way: following one could pack a file from outside the project.
    """
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is None:
        return _walk(root)
    files = set()
    for relative in listed.split("\0"):
        path = root / relative
        if relative and not _always_excluded(relative) and not path.is_symlink() and path.is_file():
            files.add(relative)
    return sorted(files)


# -- packing ------------------------------------------------------------------------------------------


class _CappedReader:
    """A file read into the archive, stopping as soon as the compressed output passes the limit, so a
    multi-gigabyte file left in a project fails fast instead of being read to its end first."""

    def __init__(self, handle: IO[bytes], output: io.BytesIO, *, limit: int, error: ValidationError) -> None:
        self._handle, self._output, self._limit, self._error = handle, output, limit, error

    def read(self, size: int = -1) -> bytes:
        if self._output.tell() > self._limit:
            raise self._error
        return self._handle.read(size)


def _tar(root: Path, files: list[str], *, limit: int, what: str) -> bytes:
    """A gzipped tar of `files` (relative to root) with fixed metadata: same contents, same bytes."""
    buffer = io.BytesIO()
    megabytes = limit / (1024 * 1024)
    too_big = ValidationError(f"{what} is over the {megabytes:g} MiB limit", details={"limit_bytes": limit})
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative in files:
            path = root / relative
            info = tarfile.TarInfo(relative)
            try:
                with path.open("rb") as handle:
                    info.size = os.fstat(handle.fileno()).st_size
                    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    info.mtime = 0
                    tar.addfile(info, _CappedReader(handle, buffer, limit=limit, error=too_big))
            except OSError as exc:  # unreadable, or changed size while it was read
                raise ValidationError(f"cannot pack {path}: {exc}", details={"file": relative}) from exc
            if buffer.tell() > limit:
                raise too_big
    data = buffer.getvalue()
    if len(data) > limit:
        raise too_big
    return data


def pack(root: Path, *, limit: int = MAX_SNAPSHOT_BYTES) -> Snapshot:
    """The project's code, packed so that its digest depends on the files' contents only."""
    root = root.resolve()
    files = list_files(root)
    what = (
        f"the code snapshot of {root} ({len(files)} files)"
        + " (keep data and outputs out of it with .gitignore, and register data with `mlgate data register`)"
    )
    data = _tar(root, files, limit=limit, what=what)
    commit = _git(root, "rev-parse", "HEAD")
    return Snapshot(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=len(files),
        git_commit=commit.strip() if commit else None,
        git_dirty=_dirty(root) if commit else False,
    )


def _dirty(root: Path) -> bool:
    """Whether the packed files differ from the commit; changes in folders never packed (the home,
    caches) do not count."""
    status = _git(root, "status", "--porcelain", "-z", "--untracked-files=all", ".") or ""
    entries = iter(status.split("\0"))
    for entry in entries:
        if not entry:
            continue
        if entry[0] in "RC":  # a rename or copy: the next field is the path it came from
            next(entries, None)
        if not _always_excluded(entry[3:]):
            return True
    return False


def pack_data(path: Path, *, limit: int) -> bytes:
    """A data file, or every data file under a data folder, for `mlgate data register`.

    In a folder, names starting with '.' or '_' are left out, as Parquet readers do (`_SUCCESS`,
    `.part-0.crc`, `.DS_Store`).
    """
    if not path.exists():
        raise ValidationError(f"no such file or folder: {path}", details={"path": str(path)})
    if path.is_file():
        return _tar(path.parent, [path.name], limit=limit, what=f"the data at {path}")
    files = []
    for found in path.rglob("*"):
        relative = found.relative_to(path).as_posix()
        hidden = any(part.startswith((".", "_")) for part in PurePosixPath(relative).parts)
        if found.is_file() and not found.is_symlink() and not hidden:
            files.append(relative)
    files.sort()
    if not files:
        raise ValidationError(f"the folder {path} holds no data files", details={"path": str(path)})
    return _tar(path, files, limit=limit, what=f"the data at {path}")
