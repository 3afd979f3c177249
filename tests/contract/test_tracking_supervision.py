"""The server supervises its MLflow tracking servers, which listen on Unix sockets in a private folder:
each starts at its environment's first use, a killed one comes back, `stop` stops them all, and no local
process reaches them over TCP."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from mlgate.runtime import alive
from tests.support.project import LiveServer, Project, bearer, start_server, stop_server

ENVS = ("dev", "staging", "production")


def run_folder(home: Path) -> Path:
    """The home's socket folder, found as the docs say (not through mlgate.sockets, which would fix its
    mode): `<home>/run`, or, under a home too deep for socket paths (pytest's), the one `run.path` names."""
    pointer = home / "run.path"
    return Path(pointer.read_text().strip()) if pointer.exists() else home / "run"


def tracking_socket(home: Path, env: str) -> Path:
    return run_folder(home) / f"mlflow-{env}.sock"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _tracking_pids(home: Path) -> dict[str, int]:
    """Each environment's tracking server process, found by the socket its command line names."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if "mlgate.adapters.mlflow.tracking_host" not in argv:
            continue
        for env in ENVS:
            if any(str(tracking_socket(home, env)) in arg for arg in argv):
                found[env] = int(entry.name)
    return found


def _descendants(pid: int) -> set[int]:
    family, changed = {pid}, True
    while changed:
        changed = False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in family:
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if parent in family:
                    family.add(int(entry.name))
                    changed = True
    return family


def _listening_tcp_inodes() -> dict[int, int]:
    """Socket inode -> port of every listening TCP socket (IPv4 and IPv6) of this machine."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return listening


def _tcp_ports_of(pids: set[int]) -> set[int]:
    listening, ports = _listening_tcp_inodes(), set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and int(link[8:-1]) in listening:
                ports.add(listening[int(link[8:-1])])
    return ports


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


def _assert_own_homes(project: Project, pids: dict[str, int]) -> None:
    """Each tracking server's HOME (and XDG folders) is a private folder of its own environment's folder,
    so what one environment's MLflow writes under `~` no other environment's server reads."""
    homes = {}
    for env, pid in pids.items():
        environ = _environ(pid)
        home = Path(environ["HOME"])
        assert home.is_relative_to(project.settings.env_dir(env)), (env, home)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700, (env, oct(home.stat().st_mode))
        for xdg in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            assert Path(environ[xdg]).is_relative_to(home), (env, xdg, environ.get(xdg))
        mlflow_vars = {k for k in environ if k.startswith("MLFLOW_")}
        assert mlflow_vars <= {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "MLFLOW_DISABLE_TELEMETRY"}, (env, mlflow_vars)
        homes[env] = home
    assert len(set(homes.values())) == len(ENVS), homes


def _search(server: LiveServer, env: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/mlflow/{env}/api/2.0/mlflow/experiments/search",
        json={"max_results": 10},
        headers=bearer(token),
        timeout=120,
    )


def test_tracking_servers_start_at_first_use_a_killed_one_is_restarted_and_stop_ends_everything(
    project: Project, tmp_path: Path
) -> None:
    # an MLflow variable of the server's own shell, pointing elsewhere: no tracking server inherits it
    server = start_server(project, env={"MLFLOW_ENV_ROOT": str(tmp_path / "elsewhere")})
    home = project.settings.home
    try:
        assert _tracking_pids(home) == {}, "a tracking server started before anyone used it"
        assert httpx.get(f"{server.url}/api/v1/health").json()["status"] == "ok"
        for env in ENVS:  # the first use of each environment's store starts its server
            assert _search(server, env, project.tokens["vic"]).status_code == 200
        record = json.loads((home / "server.json").read_text())
        before = _tracking_pids(home)
        assert sorted(before) == sorted(ENVS)
        assert sorted(before.values()) == sorted(record["children"])  # recorded as they started
        _assert_own_homes(project, before)

        victim = before["dev"]
        os.killpg(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:
            # The door works again against the restarted server, on the same socket and store.
            search = _search(server, "dev", project.tokens["dana"])
            restarted = _tracking_pids(home).get("dev")
            if restarted not in (None, victim) and search.status_code == 200:
                break
            assert time.monotonic() < deadline, f"dev tracking server not restarted: {search.status_code}"
            time.sleep(0.5)
        assert "Default" in [e["name"] for e in search.json()["experiments"]]
        children = list(_tracking_pids(home).values())
    finally:
        stop_server(server)

    assert not alive(server.process.pid)
    assert not [pid for pid in children if alive(pid)], "tracking servers outlived `mlgate stop`"
    assert not (home / "server.json").exists()


# What a job's code could try (it shares the machine's network): every TCP port the server's processes
# listen on, asked for MLflow's API without an mlgate token, as reads and as a write to production.
ATTACK = textwrap.dedent(
    """
    import json, sys, urllib.error, urllib.request

    ports, answers = json.loads(sys.argv[1]), {}
    for port in ports:
        for method, path, body in (
            ("GET", "/api/2.0/mlflow/experiments/search?max_results=1", None),
            ("POST", "/api/2.0/mlflow/registered-models/create", b'{"name": "planted"}'),
            ("POST", "/mlflow/production/api/2.0/mlflow/registered-models/create", b'{"name": "planted"}'),
        ):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    answers[f"{method} :{port}{path}"] = answer.status
            except urllib.error.HTTPError as exc:
                answers[f"{method} :{port}{path}"] = exc.code
            except OSError as exc:
                answers[f"{method} :{port}{path}"] = type(exc).__name__
    print(json.dumps(answers))
    """
)


def test_no_local_process_reaches_a_tracking_server_over_tcp(live_server: LiveServer) -> None:
    home = live_server.project.settings.home
    # The anonymous health route tells nothing about the internal services.
    health = httpx.get(f"{live_server.url}/api/v1/health", timeout=30)
    assert health.json() == {"status": "ok"}, health.text

    # The tracking servers (started by their first use) listen on no TCP port at all...
    for env in ENVS:
        assert _search(live_server, env, live_server.project.tokens["vic"]).status_code == 200
    trackers = _tracking_pids(home)
    assert sorted(trackers) == sorted(ENVS)
    for env, pid in trackers.items():
        assert _tcp_ports_of(_descendants(pid)) == set(), f"the tracking server of {env} listens on TCP"
    # ... but on sockets in a folder only the server's user may enter.
    folder = run_folder(home)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
    for env in ENVS:
        assert stat.S_ISSOCK(tracking_socket(home, env).stat().st_mode)

    # A plain local process tries every TCP port of the server's whole process tree: none is MLflow's API,
    # and the door refuses a write to production without a token.
    ports = _tcp_ports_of(_descendants(live_server.process.pid))
    assert ports, "the server's own API port should be among them"
    done = subprocess.run(
        [sys.executable, "-c", ATTACK, json.dumps(sorted(ports))], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers and not [k for k, v in answers.items() if v == 200], answers
    with httpx.Client(base_url=live_server.url, timeout=30) as api:
        models = api.get("/mlflow/production/api/2.0/mlflow/registered-models/search", headers=_admin(live_server))
    assert models.status_code == 200, models.text
    assert "planted" not in [m["name"] for m in models.json().get("registered_models", [])]


def _admin(server: LiveServer) -> dict[str, str]:
    return bearer(server.project.tokens["admin"])
