"""Where the internal services' Unix sockets live: a private (0700) folder of the home.

The tracking servers (`mlflow-<env>.sock`) and the serving hosts' admin API (`serving-<env>/admin.sock`)
listen there, so only processes of the server's user outside the sandbox can connect: a sandboxed job
shares the machine's network but never sees this folder, and a serving host sees only its own
`serving-<env>/` sub-folder (which it must, to listen in it).

A Unix socket's path is limited to 107 bytes (`sun_path`). Under a deep home the sockets go to a folder
from `tempfile.mkdtemp` instead, and the home's `run.path` names it, so every process of the home (the
server, a later server adopting its hosts, `mlgate stop`) finds the same folder.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from pathlib import Path

from mlgate.errors import ConfigError

MAX_SOCKET_PATH = 107  # bytes: sun_path is 108 with its terminating NUL
# The longest name under the folder: `serving-<env>/admin.sock` with a 31-character environment name.
LONGEST_NAME = len("/serving-") + 31 + len("/admin.sock")
RUN_DIR = "run"
POINTER_FILE = "run.path"  # names the mkdtemp folder when <home>/run would make socket paths too long


class UnsafeSocketFolder(ConfigError):
    """A socket folder that is not ours (or not a folder): nothing listens in it."""


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner reaches: created 0700, or checked to be ours and made 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UnsafeSocketFolder(
            f"{path} must be a folder owned by the server's user (uid {os.getuid()}); it is not, so the "
            "internal services' sockets cannot be put there. Remove it and start again.",
            details={"path": str(path)},
        )
    if stat.S_IMODE(info.st_mode) != 0o700:  # group or other could reach the sockets: not any more
        os.chmod(path, 0o700)
    return path


@functools.cache
def run_dir(home: Path) -> Path:
    """The home's socket folder, created if need be (once per process and home)."""
    preferred = home / RUN_DIR
    if len(os.fsencode(preferred)) + LONGEST_NAME <= MAX_SOCKET_PATH:
        return private_dir(preferred)
    pointer = home / POINTER_FILE
    try:
        recorded = Path(pointer.read_text().strip())
    except OSError:
        recorded = None
    if recorded is not None and recorded.is_absolute() and recorded.is_dir() and not recorded.is_symlink():
        return private_dir(recorded)
    home.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="mlgate-run-"))  # 0700, a fresh name nobody else chose
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(f"{folder}\n")
    os.replace(tmp, pointer)
    return folder


def tracking_socket(home: Path, env: str) -> Path:
    """Where the tracking server of `env` listens."""
    return run_dir(home) / f"mlflow-{env}.sock"


def host_socket_dir(home: Path, env: str) -> Path:
    """The private folder of `env`'s serving host's admin socket (mounted read-write into its sandbox)."""
    return private_dir(run_dir(home) / f"serving-{env}")


def host_socket(home: Path, env: str) -> Path:
    """Where the serving host of `env` answers its admin API."""
    return host_socket_dir(home, env) / "admin.sock"


def remove_stale(path: Path) -> None:
    """Remove a socket file left by a process that died (listening needs the name free)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UnsafeSocketFolder(f"{path} is not a socket; remove it by hand", details={"path": str(path)})
    path.unlink(missing_ok=True)
