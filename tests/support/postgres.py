"""A private PostgreSQL 15 cluster for tests: one per test session (so one per xdist worker).

`initdb` refuses to run as root, so as root the cluster is created and run as the `postgres` user, in a
folder under /tmp that user owns. The cluster listens on a free loopback port with trust auth and is
stopped (`pg_ctl stop -m immediate`) and deleted at the end of the session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from mlgate.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
SUPERUSER = "postgres"


@dataclass(frozen=True)
class PostgresCluster:
    host: str
    port: int
    folder: Path

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of one database of this cluster."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database with a unique name; returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_cluster_owner(args: list[str]) -> list[str]:
    """The command, run as the `postgres` user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str], *, cwd: Path) -> None:
    result = subprocess.run(_as_cluster_owner(args), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _start(folder: Path, port: int) -> None:
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-p {port}",
            f"-k {folder}",
            # A throwaway cluster: durability is not needed, speed is.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
    )
    _run(
        [
            str(PG_BIN / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(folder / "data"),
            "-l",
            str(folder / "server.log"),
            "-o",
            options,
        ],
        cwd=folder,
    )


def _stop(folder: Path) -> None:
    subprocess.run(
        _as_cluster_owner([str(PG_BIN / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(folder / "data")]),
        cwd=folder,
        capture_output=True,
        timeout=60,
        check=False,
    )


def start_cluster() -> PostgresCluster:
    """initdb and start a cluster in a new folder under /tmp; `stop_cluster` stops and deletes it."""
    for tool in ("initdb", "pg_ctl"):
        if not (PG_BIN / tool).is_file():
            pytest.skip(f"PostgreSQL 15 is not installed: {PG_BIN / tool} is missing")
    folder = Path(tempfile.mkdtemp(prefix="mlgate-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(PG_USER)
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip(f"running as root and there is no '{PG_USER}' user to run initdb as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    os.chmod(folder, 0o700)
    try:
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=folder,
        )
        # A port picked free may be taken by the time the server binds it (another xdist worker): retry.
        for attempt in range(3):
            port = free_port()
            try:
                _start(folder, port)
                return PostgresCluster("127.0.0.1", port, folder)
            except RuntimeError:
                if attempt == 2:
                    log = folder / "server.log"
                    raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()[-3000:]}") from None
        raise AssertionError("unreachable")
    except BaseException:
        _stop(folder)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def stop_cluster(cluster: PostgresCluster) -> None:
    _stop(cluster.folder)
    shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running private PostgreSQL 15 cluster; skips the test if the binaries are not installed."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The SQLAlchemy URL of a fresh, empty database on the session's cluster."""
    return postgres_cluster.create_database()


__all__ = ["PG_BIN", "PostgresCluster", "postgres_cluster", "postgres_url", "start_cluster", "stop_cluster"]
