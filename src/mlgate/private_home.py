"""The home is private: the umask that keeps what mlgate creates to its owner, and tightening an existing home.

The control database, the MLflow stores, model copies, job folders and logs are the owner's alone. The
server, `mlgate init` and `mlgate demo` set the process umask so that every file they and their children
(tracking servers, serving hosts, jobs) create is 0600 and every folder 0700; `mlgate init` also removes
group and other bits from anything already under the home (an older home, a copy, a loosened one).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_FOLDER_MODE = 0o700
SHARED_BITS = 0o077  # group and others: read, write, execute


def make_private() -> None:
    """From now on, this process and its children create files 0600 and folders 0700."""
    os.umask(PRIVATE_UMASK)


def _tighten_one(path: str) -> bool:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or not mode & SHARED_BITS:  # a symlink's own mode means nothing; never followed
        return False
    os.chmod(path, stat.S_IMODE(mode) & ~SHARED_BITS)
    return True


def tighten(root: Path) -> int:
    """Remove group and other bits from root and everything under it, not following symlinks; returns how
    many files and folders had them."""
    if not root.is_dir() or root.is_symlink():
        return 0
    count = int(_tighten_one(str(root)))
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            count += _tighten_one(os.path.join(top, name))
    return count
