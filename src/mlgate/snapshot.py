"""Code snapshots: a project's files packed reproducibly (same files, same bytes, same sha256).

The CLI packs what git would commit (tracked and untracked files, minus what .gitignore excludes) and
records the commit; the server unpacks a snapshot into a job's folder, refusing unsafe paths.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from mlgate.errors import ValidationError

MAX_SNAPSHOT_BYTES = 50 * 1024 * 1024
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


def _ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    if any(part in ALWAYS_EXCLUDED for part in parts):
        return True
    for pattern in patterns:
        bare = pattern.strip("/")
        if any(fnmatch.fnmatch(part, bare) for part in parts) or fnmatch.fnmatch(relative, bare):
            return True
    return False


def list_files(root: Path) -> list[str]:
    """Relative paths of the files to pack, sorted: git's view when root is in a repository."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is not None:
        files = [f for f in listed.split("\0") if f and (root / f).is_file()]
        return sorted(f for f in files if not _ignored(f, []))
    patterns = []
    gitignore = root / ".gitignore"
    if gitignore.is_file():
        patterns = [
            line.strip()
            for line in gitignore.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "!"))
        ]
    found = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        dirs[:] = [d for d in dirs if not _ignored(f"{rel_folder}/{d}".lstrip("./"), patterns)]
        for name in names:
            relative = f"{rel_folder}/{name}" if rel_folder != "." else name
            if not _ignored(relative, patterns) and not (Path(folder) / name).is_symlink():
                found.append(relative)
    return sorted(found)


def _tar(root: Path, files: list[str], *, limit: int, what: str) -> bytes:
    """A gzipped tar of `files` (relative to root) with fixed metadata: same contents, same bytes."""
    buffer = io.BytesIO()
    megabytes = limit // (1024 * 1024)
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative in files:
            path = root / relative
            data = path.read_bytes()
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
            if buffer.tell() > limit:
                raise ValidationError(f"{what} is over the {megabytes} MiB limit", details={"limit_bytes": limit})
    data = buffer.getvalue()
    if len(data) > limit:
        raise ValidationError(f"{what} is over the {megabytes} MiB limit", details={"limit_bytes": limit})
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
    dirty = bool(_git(root, "status", "--porcelain", ".")) if commit else False
    return Snapshot(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=len(files),
        git_commit=commit.strip() if commit else None,
        git_dirty=dirty,
    )


def pack_data(path: Path, *, limit: int) -> bytes:
    """A data file, or every file under a data folder, for `mlgate data register`."""
    if not path.exists():
        raise ValidationError(f"no such file or folder: {path}", details={"path": str(path)})
    if path.is_file():
        return _tar(path.parent, [path.name], limit=limit, what=f"the data at {path}")
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise ValidationError(f"the folder {path} holds no files", details={"path": str(path)})
    return _tar(path, files, limit=limit, what=f"the data at {path}")


def extract(data: bytes, destination: Path) -> list[str]:
    """Unpack a snapshot; absolute paths, '..', links and devices are refused (the 'data' filter)."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            names = tar.getnames()
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValidationError(f"not a valid code snapshot (a gzipped tar): {exc}") from exc
    return names
