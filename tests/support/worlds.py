"""World templates: a world built once per test session, its server stopped, and copied for each module.

A template is a folder: `project/` (mlgate.yaml and its home: control database, MLflow stores,
artifacts, data) and whatever its build left beside it (the scripts it ran, a code checkout), with
`template.json`: the people's tokens and what the build learnt (versions, digests). A module copies it
and starts its own `mlgate server` on the copy, so what one module does to its world no other module
sees.

A copy is the home of a stopped server moved to another folder. What a running home keeps about its
processes stays behind: sockets, `run.path` (a socket folder outside the home: a copy would share the
template's), `server.json`, the serving hosts' records (`host.json`: the pid, port and admin socket of
hosts long gone) and their saved specs (model folders under the template's home), and the logs of the
template's processes (`server.log`, the home's `logs/`). The copy's server starts fresh hosts and pushes
them the deployments its control database records. MLflow names artifacts `mlflow-artifacts:/...`,
relative to each environment's artifact root, so a copied store serves the copy's own files;
`Template.copy` checks that no database or record of the copy still names the template's home.

Under pytest-xdist every worker uses the same template: the first one to ask builds it, holding a lock
file in the session's common temporary folder; the others wait for it, then copy. A template is built
only when a module asks for it, so a worker (or a run of one module) that needs none never pays for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlgate.config import load_settings
from tests.support.project import Project, config_text

RECORD = "template.json"
PROJECT = "project"
# Files of a running home that describe its processes, not its state; left out of a copy.
HOME_RUNTIME = ("run", "run.path", "server.json")
HOST_RECORD = "host.json"
HOST_SPEC = "spec.json"  # a serving host's last applied spec, under envs/<env>/serving/state/
SERVER_LOG = "server.log"
LOGS = "logs"  # the home's process logs (tracking servers, serving hosts): a copy's are its own
SCANNED = (".db", ".json")  # where a copy could still name the template's home


@dataclass(frozen=True)
class Built:
    """What a template's build hands back once its servers are stopped: the tokens of the people of its
    project (if it has one, in `project/`) and what the build learnt, as JSON."""

    tokens: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """A built template, as `built_once` hands it to every caller: its folder and its record."""

    root: Path
    tokens: dict[str, str]
    facts: dict[str, Any]

    @classmethod
    def read(cls, root: Path) -> Template:
        record = json.loads((root / RECORD).read_text())
        return cls(root.resolve(), record["tokens"], record["facts"])

    def copy(self, root: Path, *, policy: str | None = None) -> Project:
        """The template's folder copied into `root` (new or empty); its project. With `policy`, the copy's
        mlgate.yaml is the defaults followed by `policy` instead of the template's (the server reads policy
        at start, so the copy's server runs with it)."""
        home = load_settings(self.root / PROJECT / "mlgate.yaml").home.resolve()
        shutil.copytree(self.root, root, ignore=_runtime_files(self.root, home), dirs_exist_ok=True)
        (root / RECORD).unlink()
        project = Project(root / PROJECT, dict(self.tokens))
        if policy is not None:
            project.config.write_text(config_text() + policy)
        _assert_self_contained(project.settings.home, home)
        return project


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Built]) -> Template:
    """The template `name`: built by `build(root)` into an empty `root` by the first worker of the session
    to ask for it, read from there by every later caller."""
    shared = _session_folder(factory)
    root = shared / f"template-{name}"
    with _exclusive(shared / f"template-{name}.lock"):
        if not (root / RECORD).is_file():
            shutil.rmtree(root, ignore_errors=True)  # what a build that failed left
            root.mkdir()
            built = build(root)
            record = {"tokens": built.tokens, "facts": built.facts}
            (root / RECORD).write_text(json.dumps(record))
    return Template.read(root)


def _session_folder(factory: pytest.TempPathFactory) -> Path:
    """The test session's temporary folder: under xdist, the one every worker's own folder is in."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _runtime_files(root: Path, home: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        left: set[str] = set()
        for name in names:
            path = here / name
            if (
                stat.S_ISSOCK(os.lstat(path).st_mode)
                or (here == home and name in HOME_RUNTIME)
                or here == home / LOGS
                or (here == root / PROJECT and name == SERVER_LOG)
                or name == HOST_RECORD
                or (name == HOST_SPEC and here.name == "state" and here.parent.name == "serving")
            ):
                left.add(name)
        return left

    return ignore


def _assert_self_contained(home: Path, template_home: Path) -> None:
    needle = os.fsencode(str(template_home))
    naming = [p for p in home.rglob("*") if p.suffix in SCANNED and p.is_file() and needle in p.read_bytes()]
    assert not naming, f"these files of a copy still name the template's home {template_home}: {naming}"
