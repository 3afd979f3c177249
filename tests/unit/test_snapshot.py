"""Code snapshots: reproducible bytes, .gitignore respected (with git and without), the size limit, and
what is packed unpacks to the same files (hostile archives: tests/unit/test_archives.py)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from mlgate.archives import extract
from mlgate.errors import ValidationError
from mlgate.snapshot import SNAPSHOT_CAPS, list_files, pack, pack_data

SNAPSHOT = {"what": "code snapshot", "caps": SNAPSHOT_CAPS}


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=dana", "-c", "user.email=dana@example.com", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


PROJECT = {
    "mlgate.yaml": "train:\n  command: python train.py\n",
    "train.py": "print('training')\n",
    "src/model/__init__.py": "",
    "src/model/core.py": "WEIGHTS = 1\n",
    ".gitignore": "*.log\ndata/\n/build\n!keep.log\n",
    "run.log": "noise\n",
    "keep.log": "wanted\n",
    "data/patients.csv": "a,b\n1,2\n",
    "build/out.bin": "artifact\n",
    "src/build/helper.py": "# a nested 'build' is not the top-level one\n",
    ".data/notes.md": "a dotted folder that no pattern names\n",
    ".mlgate/control.db": "state\n",
    "src/model/__pycache__/core.cpython-311.pyc": "bytecode\n",
}
EXPECTED = [
    ".data/notes.md",
    ".gitignore",
    "keep.log",
    "mlgate.yaml",
    "src/build/helper.py",
    "src/model/__init__.py",
    "src/model/core.py",
    "train.py",
]


def test_same_files_give_the_same_bytes_whatever_their_times_and_place(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "elsewhere" / "second"
    _write(first, PROJECT)
    _write(second, dict(reversed(PROJECT.items())))  # created in another order, too
    os.utime(first / "train.py", (1_000_000, 1_000_000))
    os.utime(second / "train.py", (2_000_000_000, 2_000_000_000))

    one, two = pack(first), pack(second)

    assert one.data == two.data
    assert one.sha256 == two.sha256
    assert _names(one.data) == EXPECTED
    assert one.git_commit is None and not one.git_dirty

    (second / "train.py").write_text("print('changed')\n")
    assert pack(second).sha256 != one.sha256


def test_gitignore_is_respected_without_git(tmp_path: Path) -> None:
    _write(tmp_path, PROJECT)
    # A nested .gitignore applies below its own folder only.
    _write(tmp_path, {"src/.gitignore": "core.py\n", "src/model/extra.py": "X = 2\n"})

    files = list_files(tmp_path)

    assert "src/model/core.py" not in files
    assert "src/model/extra.py" in files
    assert "src/.gitignore" in files
    assert "run.log" not in files and "data/patients.csv" not in files and "build/out.bin" not in files
    assert "keep.log" in files and ".data/notes.md" in files and "src/build/helper.py" in files


def test_gitignore_is_respected_with_git_and_the_commit_is_recorded(tmp_path: Path) -> None:
    _write(tmp_path, PROJECT)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "mlgate.yaml", "train.py", "src", ".gitignore", "keep.log")
    _git(tmp_path, "commit", "-qm", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")

    clean = pack(tmp_path)
    # Untracked but not ignored (.data/notes.md) is packed, as git would commit it; ignored files are not.
    assert _names(clean.data) == EXPECTED
    assert clean.git_commit == head
    assert clean.git_dirty  # .data/notes.md is untracked

    _git(tmp_path, "add", ".data")
    _git(tmp_path, "commit", "-qm", "notes")
    committed = pack(tmp_path)
    assert not committed.git_dirty
    assert committed.sha256 == clean.sha256  # the same files: the same snapshot, whatever git says


def test_symbolic_links_are_never_followed_out_of_the_project(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private key\n")
    project = tmp_path / "project"
    _write(project, {"mlgate.yaml": "train:\n  command: 'true'\n"})
    (project / "leak.txt").symlink_to(secret)
    (project / "linked-folder").symlink_to(tmp_path, target_is_directory=True)

    assert list_files(project) == ["mlgate.yaml"]
    _git(project, "init", "-q")
    assert list_files(project) == ["mlgate.yaml"]
    assert b"private key" not in pack(project).data


def test_a_snapshot_over_the_limit_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, {"mlgate.yaml": "train:\n  command: 'true'\n"})
    (tmp_path / "weights.bin").write_bytes(os.urandom(300_000))

    with pytest.raises(ValidationError) as refused:
        pack(tmp_path, limit=100_000)

    assert "is over the" in refused.value.message and "MiB limit" in refused.value.message
    assert "gitignore" in refused.value.message  # and says how to keep such files out
    assert pack(tmp_path, limit=1_000_000).files == 2


def test_extract_unpacks_a_packed_project_and_refuses_what_is_not_an_archive(tmp_path: Path) -> None:
    _write(tmp_path / "project", PROJECT)
    names = [f.name for f in extract(pack(tmp_path / "project").data, tmp_path / "out", **SNAPSHOT)]
    assert sorted(names) == EXPECTED
    assert (tmp_path / "out" / "src" / "model" / "core.py").read_text() == "WEIGHTS = 1\n"

    with pytest.raises(ValidationError, match="not a valid code snapshot"):
        extract(b"not a tarball", tmp_path / "other", **SNAPSHOT)
    assert not (tmp_path / "other").exists()


def test_pack_data_takes_a_file_or_the_data_files_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("a\n1\n")
    folder = tmp_path / "parts"
    _write(folder, {"part-0.parquet": "0", "sub/part-1.parquet": "1", "_SUCCESS": "", ".part-0.parquet.crc": "c"})

    assert _names(pack_data(tmp_path / "one.csv", limit=1 << 20)) == ["one.csv"]
    assert _names(pack_data(folder, limit=1 << 20)) == ["part-0.parquet", "sub/part-1.parquet"]
    with pytest.raises(ValidationError, match="no such file or folder"):
        pack_data(tmp_path / "missing.csv", limit=1 << 20)
