"""Gzipped tars built in memory, as `mlgate data register` and snapshot uploads send them."""

from __future__ import annotations

import io
import tarfile


def tgz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of `files` (name -> bytes), regular files only."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
